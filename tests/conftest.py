import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The shared real data (../shared/data or $BIOSYN_DATA_DIR); tests using it skip without it."""
    path = Path(os.environ.get("BIOSYN_DATA_DIR") or REPO.parent / "shared" / "data")
    if not (path / "ncbi-disease" / "NCBItestset_corpus.txt").exists():
        pytest.skip(f"real data not found at {path}")
    return path
