"""The top-level API: every exported name resolves, and `import biosyn` stays light."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import biosyn

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_every_exported_name_resolves_to_its_definition():
    from biosyn.model.biosyn import BioSyn

    assert biosyn.BioSyn is BioSyn
    for name in biosyn.__all__:
        value = getattr(biosyn, name)
        assert name == "__version__" or value.__name__ == name
    assert "BioSyn" in dir(biosyn)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = biosyn.NoSuchThing


def test_import_biosyn_does_not_import_torch():
    code = "import sys, json, biosyn; print(json.dumps(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}).stdout
    assert json.loads(out) == []


def test_package_ships_py_typed():
    assert (Path(biosyn.__file__).parent / "py.typed").is_file()
