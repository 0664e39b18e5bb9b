"""The tag set: BIO over one entity type, as NCBI disease's four mention types are one type for NER."""

from __future__ import annotations

ENTITY = "Disease"
OUTSIDE, BEGIN, INSIDE = 0, 1, 2
LABELS = ("O", f"B-{ENTITY}", f"I-{ENTITY}")
ID2LABEL = dict(enumerate(LABELS))
LABEL2ID = {label: i for i, label in ID2LABEL.items()}
IGNORE = -100  # continuation sub-tokens and special tokens carry no label (torch's ignore_index)
