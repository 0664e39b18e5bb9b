"""The layer order of pyproject.toml's import-linter contract holds (interfaces down to data)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_contract_is_kept():
    # A child process: import-linter's CLI reconfigures logging (it disables existing loggers),
    # which would silence the log records later tests check; and it sees this checkout's src/.
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "biosyn layers KEPT" in result.stdout
