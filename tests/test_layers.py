"""The layer order of pyproject.toml's import-linter contract holds (interfaces down to data)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_contract_is_kept(monkeypatch, capsys):
    from importlinter import cli
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT / "src"))  # this checkout's package, not an installed one
    for name in [m for m in sys.modules if m == "biosyn" or m.startswith("biosyn.")]:
        monkeypatch.delitem(sys.modules, name)
    code = cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    assert code == 0, capsys.readouterr().out
