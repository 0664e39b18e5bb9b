"""Texts as words and sub-word tokens with exact character offsets, cut into overlapping windows.

The tokenizer (a fast transformers tokenizer, or its `tokenizers.Tokenizer` on ONNX) runs once over the whole text, without special
tokens or truncation, so every offset indexes the original string. A text longer than the
encoder's window is cut into windows that overlap by `overlap` tokens; each token takes its
prediction from the one window in which it lies farthest from an edge, so no token is judged
at a window's edge when another window sees it with context on both sides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class TokenizedText:
    """`words[i]` is the character span of word i (the tokenizer's pre-tokenisation: whitespace and
    punctuation split); `first_token[i]` the index of its first sub-token in `input_ids`."""

    text: str
    input_ids: list[int]
    words: list[tuple[int, int]]
    first_token: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def without_surrogates(text: str) -> str:
    """A lone surrogate cannot be encoded for native code (tokenizer, Ab3P); U+FFFD keeps every offset in place."""
    return _SURROGATE.sub("\ufffd", text)


def tokenize(tokenizer, text: str) -> TokenizedText:
    """`tokenizer`: a fast transformers tokenizer, or the `tokenizers.Tokenizer` it wraps (ONNX backend)."""
    if callable(tokenizer):
        enc = tokenizer(without_surrogates(text), add_special_tokens=False, return_offsets_mapping=True, truncation=False, verbose=False)
        input_ids, word_ids, offsets = enc["input_ids"], enc.word_ids(), enc["offset_mapping"]
    else:
        enc = tokenizer.encode(without_surrogates(text), add_special_tokens=False)
        input_ids, word_ids, offsets = enc.ids, enc.word_ids, enc.offsets
    words: list[tuple[int, int]] = []
    first_token: list[int] = []
    previous = None
    for i, (word, (start, end)) in enumerate(zip(word_ids, offsets)):
        if word is None:
            continue
        if word != previous:
            words.append((start, end))
            first_token.append(i)
            previous = word
        else:
            words[-1] = (words[-1][0], max(words[-1][1], end))
    return TokenizedText(text, list(input_ids), words, first_token)


def windows(n_tokens: int, size: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """Windows over `n_tokens` tokens: (start, end, own_start, own_end). The windows cover every
    token; the `own` ranges partition them, each token owned by the window where it is most central."""
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"a window of {size} tokens needs an overlap in [0, {size}), got {overlap}")
    if n_tokens <= size:
        return [(0, n_tokens, 0, n_tokens)]
    step = size - overlap
    starts = list(range(0, n_tokens - size, step)) + [n_tokens - size]
    spans = [(s, s + size) for s in starts]
    # Ownership changes hands in the middle of each overlap.
    cuts = [0] + [(nxt[0] + cur[1]) // 2 for cur, nxt in zip(spans, spans[1:])] + [n_tokens]
    return [(s, e, cuts[i], cuts[i + 1]) for i, (s, e) in enumerate(spans)]


def viterbi_bio(log_probs: np.ndarray) -> np.ndarray:
    """The best tag sequence (0 = O, 1 = B, 2 = I) under BIO's constraint: I only after B or I."""
    n = len(log_probs)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    allowed = np.array([[0, 0, -np.inf], [0, 0, 0], [0, 0, 0]])  # from (row) -> to (column)
    score = log_probs[0] + np.array([0, 0, -np.inf])
    back = np.zeros((n, 3), dtype=np.int64)
    for i in range(1, n):
        total = score[:, None] + allowed
        back[i] = total.argmax(0)
        score = total.max(0) + log_probs[i]
    tags = np.empty(n, dtype=np.int64)
    tags[-1] = int(score.argmax())
    for i in range(n - 1, 0, -1):
        tags[i - 1] = back[i, tags[i]]
    return tags


def span_confidence(log_probs: np.ndarray, first: int, end: int) -> float:
    """The probability of the least sure of the tags B, I, ... that make words [first, end) one span."""
    return float(np.exp(min(log_probs[first, 1], log_probs[first + 1:end, 2].min(initial=0.0))))


def tag_spans(tags: np.ndarray) -> list[tuple[int, int]]:
    """Word ranges [first, last + 1) of the entities in a BIO tag sequence."""
    spans, start = [], None
    for i, tag in enumerate(tags):
        if tag == 1 or (tag == 2 and start is None):
            if start is not None:
                spans.append((start, i))
            start = i
        elif tag == 0 and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(tags)))
    return spans
