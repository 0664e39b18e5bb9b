"""Abbreviation detection (Ab3P via ``pyab3p``) and expansion, as BioSyn's query preprocessing.

BioSyn runs the Ab3P binary on each document's title and abstract (``Abbr_resolver``),
keeps ``short form -> long form`` (stripped, later pairs win), and then, before
composite splitting and text normalisation, rewrites each mention
(``query_preprocess.apply_abbr_dict``): split on whitespace, replace every token that is
exactly a short form (case-sensitive, so "(HNPCC)" is not replaced), and for a token with
``/`` replace each half first and then look up the re-joined token; a token with a
trailing comma is looked up without it and gets the comma back.  Passes repeat until
the mention stops changing.

Deliberate deviations:
* BioSyn loops forever when expansions cycle or grow (``{"AD": "AD disease"}``); here at
  most ``len(abbreviations) + 1`` passes are made (enough for any acyclic chain), and if
  the mention is still changing the result of a single pass is returned.
* BioSyn drops every comma in a comma-ending token (``"a,b,"`` becomes ``"ab,"``) and
  checks slash halves before removing the trailing comma; here only the trailing comma
  is set aside, before the slash halves are looked up (so "HNPCC/APC," expands too).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Mapping

import pyab3p

_lock = threading.Lock()
_ab3p: pyab3p.Ab3p | None = None


@contextlib.contextmanager
def _quiet_native_stderr():
    """Ab3P's C++ code prints "Failed to find sentence" plus the whole text for most abstracts."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def find_abbreviations(text: str) -> dict[str, str]:
    """Short form -> long form pairs that Ab3P finds in ``text`` (later pairs win)."""
    global _ab3p
    # pybind11 cannot hand a lone surrogate to C++; a "?" in its place changes no pair around it.
    text = text.encode("utf-8", "replace").decode("utf-8")
    with _lock:
        if _ab3p is None:
            _ab3p = pyab3p.Ab3p()
        with _quiet_native_stderr():
            found = _ab3p.get_abbrs(text)
    return {a.short_form.strip(): a.long_form.strip() for a in found}


def _expand_token(token: str, abbreviations: Mapping[str, str]) -> str:
    comma = "," if token.endswith(",") else ""
    core = token[:-1] if comma else token
    if "/" in core:
        core = "/".join(abbreviations.get(half, half) for half in core.split("/"))
    return abbreviations.get(core, core) + comma


def _expand_once(mention: str, abbreviations: Mapping[str, str]) -> str:
    return " ".join(_expand_token(token, abbreviations) for token in mention.split())


def expand_abbreviations(mention: str, abbreviations: Mapping[str, str]) -> str:
    """Replace short-form tokens of ``mention`` by their long forms until nothing changes.

    Tokens are re-joined with single spaces, as in BioSyn.
    """
    current = _expand_once(mention, abbreviations)
    for _ in range(len(abbreviations)):
        expanded = _expand_once(current, abbreviations)
        if expanded == current:
            return current
        current = expanded
    return _expand_once(mention, abbreviations)


# "Myotonic dystrophy (DM)": a parenthesised short form right after the words whose initials it reorders.
_PARENTHESISED = re.compile(r"\(\s*([A-Za-z][A-Za-z0-9]{1,9})\s*\)")
_WORD_BEFORE = re.compile(r"[A-Za-z][\w'-]*")
_LOOK_BACK = 200  # characters before "(" searched for the long form's words: ample for ten words


def reordered_abbreviations(text: str, known: Mapping[str, str]) -> dict[str, str]:
    """Short form -> long form pairs that Ab3P misses because the short form lists the long form's
    initials in another order (Latin "dystrophia myotonica" gives DM for "myotonic dystrophy"):
    "<w1 ... wn> (S)" where S has n letters (and at least one capital) and the initials of the n words
    before it, taken as a multiset, are S's letters, case-insensitive. Short forms in `known` are kept."""
    found: dict[str, str] = {}
    for match in _PARENTHESISED.finditer(text):
        short = match.group(1)
        letters = sorted(c.lower() for c in short if c.isalpha())
        if short in known or short in found or not any(c.isupper() for c in short) or len(letters) < 2:
            continue
        words = _WORD_BEFORE.findall(text[max(0, match.start() - _LOOK_BACK) : match.start()])[-len(letters):]
        if len(words) == len(letters) and sorted(w[0].lower() for w in words) == letters:
            found[short] = " ".join(words)
    return found
