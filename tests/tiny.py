"""Tiny random BERTs for tests: a letter-level WordPiece vocabulary, so any lowercase text tokenizes."""

import string
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizer

from biosyn.data.records import Concept, Vocabulary

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_bert(folder: Path, seed: int = 0, hidden: int = 32) -> tuple[BertModel, BertTokenizer]:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    letters = list(string.ascii_lowercase + string.digits)
    vocab.write_text("\n".join(SPECIAL + letters + [f"##{c}" for c in letters]) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab))  # transformers 5: vocab_file= is ignored
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    return BertModel(config).eval(), tokenizer


def tiny_vocabulary() -> Vocabulary:
    return Vocabulary([
        Concept("D001943", "Breast Neoplasms", ("114480",), ("Breast Cancer", "Breast Tumor")),
        Concept("D010051", "Ovarian Neoplasms", (), ("Ovarian Cancer",)),
        Concept("D006527", "Hepatolenticular Degeneration", ("277900",), ("Wilson Disease",)),
        Concept("D003123", "Colorectal Neoplasms, Hereditary Nonpolyposis", (), ("Lynch Syndrome", "HNPCC")),
        Concept("D009369", "Neoplasms", (), ("Cancer", "Tumor")),
    ])


def tiny_tagger(folder: Path, seed: int = 0, hidden: int = 32, **options):
    """An untrained DiseaseTagger (random BIO head) over a tiny BERT with a fast tokenizer, saved to `folder`."""
    from transformers import BertForTokenClassification, BertTokenizerFast

    from biosyn.ner.labels import ID2LABEL, LABEL2ID
    from biosyn.ner.tagger import DiseaseTagger, TaggerOptions

    _, slow = tiny_bert(folder, seed=seed, hidden=hidden)
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"))  # transformers 5 ignores vocab_file=
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64, num_labels=len(ID2LABEL),
                        id2label=ID2LABEL, label2id=LABEL2ID)
    tagger = DiseaseTagger(BertForTokenClassification(config).eval(), tokenizer,
                           TaggerOptions(**{"max_length": 32, "overlap": 8, **options}))
    tagger.save_pretrained(folder)
    return tagger


class FakeTagger:
    """A deterministic stand-in for DiseaseTagger: every case-insensitive, whole-word occurrence of
    one of `names` is a Disease mention (the longest name first where two overlap), with the tagger
    confidence that `confidence` gives its lower-cased text (None where it gives none)."""

    def __init__(self, names=("Lynch syndrome", "HNPCC", "colorectal cancer", "breast cancer", "ovarian cancer",
                              "Wilson disease", "WD", "cancer"), confidence: dict[str, float] | None = None):
        import re

        self.pattern = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) + r")\b",
                                  re.IGNORECASE)
        self.calls: list[list[str]] = []
        self.confidence = confidence or {}

    def tag(self, texts):
        from biosyn.data.records import Mention

        self.calls.append(list(texts))
        return [[Mention(m.start(), m.end(), m.group(), "Disease", confidence=self.confidence.get(m.group().lower()))
                 for m in self.pattern.finditer(t)] for t in texts]
