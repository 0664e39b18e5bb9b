"""Lowercasing, punctuation removal and spelling fixes, as BioSyn's ``TextPreprocess``.

BioSyn (``src/biosyn/preprocesser.py``, ``TextPreprocess.run``) does, in order:
lowercase, then replace whole whitespace-separated tokens found in the typo file
(so a fix only applies to lowercase tokens without attached punctuation, e.g.
``tumours`` but not ``tumours,``), then split on runs of whitespace and
``string.punctuation`` and re-join with single spaces.  ``normalize_text`` runs the same
steps in the same order.

Deliberate deviations:
* BioSyn's query pass keeps ``|`` (it joins split composite parts with it); here
  composite parts stay a list, so ``|`` is removed like any other punctuation.
* BioSyn reads a typo line without ``||`` as "delete this token" and blank lines as an
  empty typo; ``load_spelling_fixes`` skips blank lines and rejects anything else that
  is not ``typo||fix`` with a single-token typo and a non-empty fix.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping

from biosyn.data.errors import FormatError
from biosyn.data.lines import text_lines

_PUNCT_OR_SPACE = re.compile(rf"[\s{re.escape(string.punctuation)}]+")


def remove_punctuation(s: str) -> str:
    """Replace every run of whitespace/ASCII punctuation by one space and strip."""
    return _PUNCT_OR_SPACE.sub(" ", s).strip()


def apply_spelling_fixes(s: str, fixes: Mapping[str, str]) -> str:
    """Replace whole whitespace tokens that are keys of ``fixes``; re-join with single spaces.

    Case-sensitive, as in BioSyn, where it runs after lowercasing.
    """
    return " ".join(fixes.get(token, token) for token in s.split())


def normalize_text(s: str, fixes: Mapping[str, str] | None = None) -> str:
    """Lowercase, apply ``fixes`` (if given), remove punctuation: BioSyn's ``TextPreprocess.run``."""
    s = s.lower()
    if fixes:
        s = apply_spelling_fixes(s, fixes)
    return remove_punctuation(s)


def load_spelling_fixes(path: str | os.PathLike) -> dict[str, str]:
    """Read ``typo||fix`` lines (e.g. BioSyn's ``ncbi-spell-check.txt``); later lines win."""
    fixes: dict[str, str] = {}
    for line_no, raw in text_lines(path):
        line = raw.strip()
        if not line:
            continue
        parts = line.split("||")
        if len(parts) != 2:
            raise FormatError(path, line_no, "line", f"expected 'typo||fix', got {line!r}")
        typo, fix = parts[0].strip(), parts[1].strip()
        if not typo or len(typo.split()) != 1:
            raise FormatError(path, line_no, "typo", f"must be a single token, got {typo!r}")
        if not fix:
            raise FormatError(path, line_no, "fix", "is empty")
        fixes[typo] = fix
    return fixes
