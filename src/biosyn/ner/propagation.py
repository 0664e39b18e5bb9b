"""Document-level consistency after tagging, as curated corpora annotate.

- Repeats: a string tagged once is a mention wherever it recurs in the same document.
- Abbreviations (Ab3P pairs of the document): when the long form is tagged, every occurrence of
  its short form is a mention; when the long form occurs but is never tagged, the short form is
  not a disease there either ("von Hippel-Lindau (VHL) protein"), and its tagged occurrences go.
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
    untrusted = set()
    for short, long in (abbreviations or {}).items():
        if long in tagged:
            needles.add(short)
        elif short in tagged and any(True for _ in occurrences(text, long)):
            untrusted.add(short)
    kept = [m for m in spans if m.text not in untrusted]
    taken = sorted((m.start, m.end) for m in kept)
    added: list[Mention] = []
    default_type = spans[0].type if spans else "Disease"
    # Longer strings first, so "ovarian cancer" wins over a tagged "cancer" inside it.
    for needle in sorted(needles - untrusted, key=len, reverse=True):
        if len(needle) < min_chars:
            continue
        for start, end in occurrences(text, needle):
            if any(s < end and start < e for s, e in taken):
                continue
            taken.append((start, end))
            added.append(Mention(start, end, text[start:end], default_type))
    return sorted([*kept, *added], key=lambda m: (m.start, m.end))
