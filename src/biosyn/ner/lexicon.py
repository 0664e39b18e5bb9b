"""A lexicon of disease strings learnt from the training documents, as a second opinion after the tagger.

Each annotated string of the training split is kept with its annotation ratio: how many of its
occurrences in the training text were annotated, out of those not inside a longer mention. At
tagging time a string whose ratio is at least the reader's `min_ratio` and that occurs where the
tagger found nothing is added, longest first. Strings are compared as sequences of words and punctuation;
short ones (up to 4 characters, mostly abbreviations) case-sensitively, longer ones ignoring case.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..data.atomic import atomic_write
from ..data.records import Document, Mention

LEXICON_FILE = "lexicon.json"
_CASE_SENSITIVE_UP_TO = 4
_TOKEN = re.compile(r"\w+|[^\w\s]")


def _key(s: str) -> str:
    return s if len(s) <= _CASE_SENSITIVE_UP_TO else s.lower()


def _tokens(text: str) -> list[re.Match]:
    return list(_TOKEN.finditer(text))


class Lexicon:
    def __init__(self, ratios: dict[str, list[int]]):
        self.ratios = ratios  # key -> [annotated occurrences, occurrences]
        self._index = _index(ratios)

    def kept(self, key: str, min_ratio: float) -> bool:
        annotated, seen = self.ratios.get(key, (0, 0))
        return seen > 0 and annotated / seen >= min_ratio

    @classmethod
    def learn(cls, docs: Sequence[Document]) -> "Lexicon":
        counts: dict[str, list[int]] = {}
        for doc in docs:
            for m in doc.mentions:
                counts.setdefault(_key(m.text), [0, 0])[0] += 1
        index = _index(counts)
        for doc in docs:
            gold = [(m.start, m.end) for m in doc.mentions]
            for start, end, key in _occurrences(doc.text, index):
                if not any(s <= start and end <= e and (s, e) != (start, end) for s, e in gold):
                    counts[key][1] += 1
        return cls(counts)

    def find(self, text: str, taken: Iterable[tuple[int, int]], entity: str, min_ratio: float = 0.5) -> list[Mention]:
        """Occurrences of strings annotated at least `min_ratio` of the time that overlap nothing in
        `taken` (nor each other), longest first."""
        spans = sorted(taken)
        found = []
        for start, end, key in sorted(_occurrences(text, self._index), key=lambda o: o[0] - o[1]):
            if not self.kept(key, min_ratio) or any(s < end and start < e for s, e in spans):
                continue
            spans.append((start, end))
            found.append(Mention(start, end, text[start:end], entity))
        return sorted(found, key=lambda m: m.start)

    def save(self, folder: str | os.PathLike) -> None:
        with atomic_write(Path(folder) / LEXICON_FILE) as out:
            json.dump({"ratios": self.ratios}, out, ensure_ascii=False)

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "Lexicon | None":
        path = Path(folder) / LEXICON_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls({k: list(v) for k, v in data["ratios"].items()})


def _index(keys: Iterable[str]) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """Keys by their first token (lower case), each with its token sequence."""
    index: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for key in keys:
        words = tuple(t.group() for t in _tokens(key))
        if words:
            index.setdefault(words[0].lower(), []).append((key, words))
    return index


def _occurrences(text: str, index) -> Iterator[tuple[int, int, str]]:
    """(start, end, key) of every occurrence of every key, overlapping ones included."""
    tokens = _tokens(text)
    for i, first in enumerate(tokens):
        for key, words in index.get(first.group().lower(), ()):
            piece = tokens[i:i + len(words)]
            if len(piece) < len(words):
                continue
            start, end = piece[0].start(), piece[-1].end()
            sensitive = len(key) <= _CASE_SENSITIVE_UP_TO
            if all((t.group() if sensitive else t.group().lower()) == (w if sensitive else w.lower())
                   for t, w in zip(piece, words)):
                yield start, end, key
