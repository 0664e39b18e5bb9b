"""The preprocessor a named corpus is read with: its spelling fixes, when it ships some."""

from __future__ import annotations

import os

from ..data.locate import corpus as corpus_files, data_file
from .pipeline import Preprocessor
from .text import load_spelling_fixes


def corpus_preprocessor(corpus: str, data_dir: str | os.PathLike | None = None, **options) -> Preprocessor:
    files = corpus_files(corpus)
    fixes = load_spelling_fixes(data_file(files.spelling_fixes, data_dir)) if files.spelling_fixes else {}
    return Preprocessor(spelling_fixes=fixes, **options)
