"""Document-level consistency after tagging, as curated corpora annotate: a string tagged once is a
mention wherever it recurs in the same document, and so is the short form (Ab3P) of a tagged
long form. Only whole-word occurrences that overlap no found span are added."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..data.records import Mention


def occurrences(text: str, needle: str) -> Iterable[tuple[int, int]]:
    """Whole-word, case-sensitive occurrences of `needle` in `text`."""
    for match in re.finditer(rf"(?<!\w){re.escape(needle)}(?!\w)", text):
        yield match.start(), match.end()


def propagate(text: str, spans: list[Mention], abbreviations: Mapping[str, str] | None = None, *,
              min_chars: int = 2) -> list[Mention]:
    """`spans` plus the other occurrences of their strings and of the short forms of tagged long forms,
    sorted by offset. Strings shorter than `min_chars` are not spread."""
    tagged = {m.text for m in spans}
    needles = set(tagged)
    for short, long in (abbreviations or {}).items():
        if long in tagged or short in tagged:
            needles.update((short, long))
    taken = sorted((m.start, m.end) for m in spans)
    added: list[Mention] = []
    type_of = {m.text: m.type for m in spans}
    default_type = spans[0].type if spans else "Disease"
    # Longer strings first, so "ovarian cancer" wins over a tagged "cancer" inside it.
    for needle in sorted(needles, key=len, reverse=True):
        if len(needle) < min_chars:
            continue
        for start, end in occurrences(text, needle):
            if any(s < end and start < e for s, e in taken):
                continue
            taken.append((start, end))
            added.append(Mention(start, end, text[start:end], type_of.get(needle, default_type)))
    return sorted([*spans, *added], key=lambda m: (m.start, m.end))
