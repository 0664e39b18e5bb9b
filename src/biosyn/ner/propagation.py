"""Document-level consistency after tagging, as curated corpora annotate.

- Repeats: a string tagged once is a mention wherever it recurs in the same document.
- Abbreviations (Ab3P pairs of the document): when the long form is tagged, every occurrence of
  its short form is a mention. Nothing is taken away: removing a tagged short form whose long form
  occurs untagged ("von Hippel-Lindau (VHL) protein") cost more than it gained on NCBI dev.
Only whole-word occurrences that overlap no found span are added.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ..data.records import Mention


def occurrences(text: str, needle: str) -> Iterable[tuple[int, int]]:
    """Whole-word, case-sensitive occurrences of `needle` in `text`."""
    for match in re.finditer(rf"(?<!\w){re.escape(needle)}(?!\w)", text):
        yield match.start(), match.end()


def propagate(text: str, spans: list[Mention], abbreviations: Mapping[str, str] | None = None, *,
              repeats: bool = True, min_chars: int = 2) -> list[Mention]:
    """`spans` made consistent within the document (see the module's rules), sorted by offset.
    Strings shorter than `min_chars` are not spread."""
    tagged = {m.text for m in spans}
    needles = set(tagged) if repeats else set()
    needles |= {short for short, long in (abbreviations or {}).items() if long in tagged}
    taken = sorted((m.start, m.end) for m in spans)
    added: list[Mention] = []
    default_type = spans[0].type if spans else "Disease"
    # Longer strings first, so "ovarian cancer" wins over a tagged "cancer" inside it.
    for needle in sorted(needles, key=len, reverse=True):
        if len(needle) < min_chars:
            continue
        for start, end in occurrences(text, needle):
            if any(s < end and start < e for s, e in taken):
                continue
            taken.append((start, end))
            added.append(Mention(start, end, text[start:end], default_type))
    return sorted([*spans, *added], key=lambda m: (m.start, m.end))
