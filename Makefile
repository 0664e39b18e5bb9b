# One command sets everything up and runs the main job (`make run`), one runs the tests (`make test`).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
DATA_DIR ?= ../shared/data
export BIOSYN_DATA_DIR ?= $(abspath $(DATA_DIR))

.PHONY: setup run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of PyTorch, pinned: a looser requirement can pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,offline-encoder]'
	touch $@

setup: $(VENV)/.installed

TAGGER := runs/ncbi-disease/tagger

# The disease tagger, trained once (about 25 min on 2 cores) when there is none yet.
$(TAGGER)/config.json: | setup
	$(VENV)/bin/biosyn tagger train --output $(TAGGER)

# The main job: the best model available offline (a trained one under runs/, else the packaged
# MiniLM) exported to ONNX (seconds) and evaluated on the NCBI disease test set; the tagger and the model together on the test
# set's raw text (NER, joint and document-level scores); then a sentence annotated and a few
# mentions normalised.
run: setup $(TAGGER)/config.json
	$(VENV)/bin/biosyn export --int8   # the model's encoder to ONNX: the commands below and after run without torch
	$(VENV)/bin/biosyn export $(TAGGER)
	$(VENV)/bin/biosyn evaluate --corpus ncbi-disease --split test
	$(VENV)/bin/biosyn tagger evaluate --corpus ncbi-disease --split test
	$(VENV)/bin/biosyn annotate "Hereditary nonpolyposis colorectal cancer (HNPCC) and breast and ovarian cancer run in families; HNPCC is also called Lynch syndrome."
	$(VENV)/bin/biosyn normalize -k 3 "hereditary breast and ovarian cancer" "Wilson disease" "colon cancers"

# Lint and types first (fast, and they name the line), then the tests; the import-layer
# contract runs inside pytest (tests/test_layers.py).
test: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
