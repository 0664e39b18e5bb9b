"""Splitting composite mentions into single-concept parts, following BioSyn.

BioSyn (``preprocess/query_preprocess.py``: ``composite_resolve``, ``apply_composite_resolve``)
runs on the abbreviation-expanded, not yet lowercased mention.  With one gold ID it keeps
the mention.  Otherwise the first rule that matches the start of the mention decides:

1. "<head> of [both] [the] <A...> and|or [the] <B...>" -> "<head> of A", "<head> of B"
   ("cancer of the breast and ovaries"; anything after B's words is dropped);
2. "<p1>[,] <p2>[,] ... and|or|and/or <X and Y> <stem>" -> "p1 stem", ..., "X and Y stem";
3. "<p1>[,] <p2>[,] ... and|or|and/or [the] <pn> <stem>" -> "p1 stem", ..., "pn stem"
   (words not separated by commas stay together: "hereditary breast and ovarian cancer"
   -> "hereditary breast cancer", "ovarian cancer");
4. a slash, unless the mention contains "and/or";
5. as many whitespace tokens as gold IDs -> the tokens.

Parts are only kept when their number equals the number of gold IDs; otherwise BioSyn
keeps the whole mention.  Words in rules 1-3 are ASCII letters and hyphens only.

Deliberate deviation: BioSyn's slash regex lets the second half run to the end of the
mention, so "type I/II collagenopathies" gives ["type I", "type II collagenopathies"].
Here the slash token is split into all its halves and each keeps the words around it:
["type I collagenopathies", "type II collagenopathies"].
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_WORD = r"[a-zA-Z-]+"

_OF_RULE = re.compile(
    rf"""(?P<head>{_WORD})\ of\ (?:both\ )?(?:the\ )?
         (?P<first>(?:{_WORD}\ )+)(?:and|or)\ (?:the\ )?
         (?P<second>{_WORD}(?:\ {_WORD})*)""",
    re.VERBOSE,
)
_SERIES = rf"(?P<heads>(?:{_WORD},?\ )+)(?:and|or|and/or)\ "
_NESTED_AND_RULE = re.compile(
    rf"{_SERIES}(?P<last>{_WORD}\ and\ {_WORD})\ (?P<stem>.*)", re.VERBOSE
)
_SERIES_RULE = re.compile(rf"{_SERIES}(?P<last>(?:the\ )?{_WORD})\ (?P<stem>.*)", re.VERBOSE)


def _series_parts(match: re.Match[str]) -> list[str]:
    heads = [h.strip() for h in match["heads"].split(",")] + [match["last"]]
    return [f"{head} {match['stem']}" for head in heads if head]


def _slash_parts(mention: str) -> list[str] | None:
    tokens = mention.split()
    for i in range(len(tokens) - 1, -1, -1):
        halves = [h for h in tokens[i].split("/") if h]
        if "/" in tokens[i] and len(halves) > 1:
            return [" ".join(tokens[:i] + [half] + tokens[i + 1 :]) for half in halves]
    return None


def _split(mention: str, n_ids: int | None) -> list[str]:
    if match := _OF_RULE.match(mention):
        return [f"{match['head']} of {match[group].strip()}" for group in ("first", "second")]
    if match := _NESTED_AND_RULE.match(mention) or _SERIES_RULE.match(mention):
        return _series_parts(match)
    if "and/or" not in mention and (parts := _slash_parts(mention)):
        return parts
    tokens = mention.split()
    if n_ids is not None and len(tokens) == n_ids:
        return tokens
    return [mention]


def split_composite(mention: str, n_ids: int | None = None) -> list[str]:
    """Single-concept parts of ``mention``.

    ``n_ids`` is the number of gold IDs (after ``count_concepts``).  With ``n_ids`` given,
    the mention is returned whole unless the parts number exactly ``n_ids``; without it,
    whatever the rules produce is returned.
    """
    mention = mention.strip()
    if n_ids is not None and n_ids <= 1:
        return [mention]
    parts = _split(mention, n_ids)
    if n_ids is not None and len(parts) != n_ids:
        return [mention]
    return parts


def count_concepts(ids: Sequence[str]) -> int:
    """How many concepts a composite's normalised gold IDs stand for, as BioSyn counts them:
    when OMIM IDs (bare numbers) are mixed with MeSH IDs, the OMIM ones are not counted."""
    omim = [i.isdigit() for i in ids]
    return len(ids) - sum(omim) if any(omim) and not all(omim) else len(ids)
