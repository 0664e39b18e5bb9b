"""The disease tagger: a transformers token-classification model read through overlapping windows.

A tagger folder is a standard transformers folder (config with BIO labels, safetensors weights,
tokenizer files, a README model card), so `AutoModelForTokenClassification.from_pretrained(folder)`
and `pipeline("token-classification", folder)` load it; `biosyn_tagger.json` beside them holds how
biosyn reads it (window, overlap, decoding and propagation) and what it was trained on.

Labels are predicted for each word's first sub-token; a word is the tokenizer's pre-tokenisation
unit, so a span always covers whole words. Decoding is BIO-constrained Viterbi over the words'
log-probabilities, then (optionally) document-level propagation (`propagation.py`).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForTokenClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ..data.atomic import atomic_write
from ..data.records import Mention
from ..encoders.dense import default_device
from ..preprocess.abbreviations import find_abbreviations
from .labels import ENTITY, ID2LABEL, LABEL2ID
from .lexicon import Lexicon
from .propagation import propagate
from .windows import TokenizedText, tag_spans, tokenize, viterbi_bio, windows, without_surrogates

CONFIG_FILE = "biosyn_tagger.json"


@dataclass
class TaggerOptions:
    """How raw text is read and decoded; saved with the tagger."""

    max_length: int = 128  # tokens per window, [CLS] and [SEP] included
    overlap: int = 32  # tokens shared by neighbouring windows
    batch_size: int = 32  # windows per forward pass
    propagate: bool = False  # a string tagged once is tagged wherever it recurs in the document
    abbreviations: bool = False  # Ab3P pairs agree: tagged long form -> short forms tagged, untagged -> untagged
    int8: bool = False  # dynamic int8 quantisation of the linear layers for CPU inference
    lexicon: bool = False  # add the training lexicon's strings where the model found nothing (lexicon.py)
    lexicon_min_ratio: float = 0.5  # ... those annotated at least this often in the training text

    @property
    def body(self) -> int:
        return self.max_length - 2

    @classmethod
    def from_dict(cls, data: dict) -> "TaggerOptions":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class DiseaseTagger:
    """Finds disease mentions in raw text. Not thread-safe: one call at a time."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 options: TaggerOptions | None = None, metadata: dict | None = None, lexicon: Lexicon | None = None):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("the tagger needs a fast tokenizer (character offsets); this folder has a slow one")
        self.model = model
        self.tokenizer = tokenizer
        self.options = options or TaggerOptions()
        self.metadata = dict(metadata or {})  # training data, figures: what the model card states
        self.spec = ""  # what the user named it by (a folder, a hub id)
        self.lexicon = lexicon
        self._int8_model: PreTrainedModel | None = None  # built from `model` at the first int8 call
        if self.options.max_length > model.config.max_position_embeddings:
            raise ValueError(f"max_length {self.options.max_length} is over the encoder's "
                             f"{model.config.max_position_embeddings} positions")

    @classmethod
    def from_base(cls, name_or_path: str | os.PathLike, options: TaggerOptions | None = None,
                  device: str | None = None) -> "DiseaseTagger":
        """A fresh (untrained) tagger head on a base encoder."""
        model = AutoModelForTokenClassification.from_pretrained(
            str(name_or_path), num_labels=len(ID2LABEL), id2label=ID2LABEL, label2id=LABEL2ID, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        model.to(default_device(device))
        return cls(model, tokenizer, options)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | None = None, **overrides) -> "DiseaseTagger":
        folder = Path(folder)
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"{folder} is not a tagger folder (no config.json)")
        saved = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")) if (folder / CONFIG_FILE).exists() else {}
        model = AutoModelForTokenClassification.from_pretrained(str(folder), dtype=torch.float32)
        if model.config.label2id != LABEL2ID:
            raise ValueError(f"{folder}: labels {model.config.label2id} are not biosyn's {LABEL2ID}")
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model.to(default_device(device))
        options = TaggerOptions.from_dict({**saved.get("options", {}), **overrides})
        return cls(model, tokenizer, options, saved.get("metadata"), Lexicon.load(folder))

    def save_pretrained(self, folder: str | os.PathLike, card: str | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)
        if self.lexicon is not None:
            self.lexicon.save(folder)
        with atomic_write(folder / CONFIG_FILE) as out:
            json.dump({"format": "biosyn.tagger", "version": 1, "options": asdict(self.options),
                       "metadata": self.metadata}, out, indent=2)
        if card is not None:
            with atomic_write(folder / "README.md") as out:
                out.write(card)
        return folder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def inference_model(self) -> PreTrainedModel:
        """The model that tags: `model`, or its int8 copy on CPU when the options ask for one. The copy is
        made once, so train before switching int8 on."""
        if not (self.options.int8 and self.device.type == "cpu"):
            return self.model
        if self._int8_model is None:
            import warnings

            from torch.ao.quantization import quantize_dynamic

            with warnings.catch_warnings():  # torch announces the API's move to torchao; it still works
                warnings.simplefilter("ignore")
                self._int8_model = quantize_dynamic(copy.deepcopy(self.model).eval(), {torch.nn.Linear}, dtype=torch.qint8)
        return self._int8_model

    # -- tagging ---------------------------------------------------------------------------

    def word_log_probs(self, texts: Sequence[str], *, progress: bool = False) -> list[tuple[TokenizedText, np.ndarray]]:
        """Each text tokenized, with the log-probabilities of O/B/I for each of its words."""
        tokenized = [tokenize(self.tokenizer, t) for t in texts]
        token_lp = [np.zeros((len(t), len(ID2LABEL)), dtype=np.float32) for t in tokenized]
        jobs = [(d, *w) for d, t in enumerate(tokenized) if len(t) for w in windows(len(t), self.options.body, self.options.overlap)]
        jobs.sort(key=lambda j: j[2] - j[1])  # similar lengths share a batch: little padding
        cls_id, sep_id, pad_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id
        model = self.inference_model()
        model.eval()
        with torch.inference_mode(), tqdm(total=len(jobs), unit="windows", disable=not progress) as bar:
            for b in range(0, len(jobs), self.options.batch_size):
                batch = jobs[b:b + self.options.batch_size]
                width = max(e - s for _, s, e, _, _ in batch) + 2
                ids = np.full((len(batch), width), pad_id, dtype=np.int64)
                mask = np.zeros((len(batch), width), dtype=np.int64)
                for row, (d, s, e, _, _) in enumerate(batch):
                    ids[row, :e - s + 2] = [cls_id, *tokenized[d].input_ids[s:e], sep_id]
                    mask[row, :e - s + 2] = 1
                logits = model(input_ids=torch.from_numpy(ids).to(self.device),
                                    attention_mask=torch.from_numpy(mask).to(self.device)).logits
                lp = torch.log_softmax(logits.float(), -1).cpu().numpy()
                for row, (d, s, _, own_s, own_e) in enumerate(batch):
                    token_lp[d][own_s:own_e] = lp[row, 1 + own_s - s:1 + own_e - s]
                bar.update(len(batch))
        return [(t, lp[t.first_token]) for t, lp in zip(tokenized, token_lp)]

    def tag(self, texts: Sequence[str], *, progress: bool = False) -> list[list[Mention]]:
        """Disease mentions of each text, as character spans into it, in order."""
        if isinstance(texts, str):
            raise TypeError("tag takes a list of texts; wrap a single text in a list")
        out = []
        for tokenized, word_lp in self.word_log_probs(texts, progress=progress):
            out.append(self.decode(tokenized, word_lp))
        return out

    def decode(self, tokenized: TokenizedText, word_lp: np.ndarray) -> list[Mention]:
        text, words = tokenized.text, tokenized.words
        spans = [Mention(words[a][0], words[b - 1][1], text[words[a][0]:words[b - 1][1]], ENTITY)
                 for a, b in tag_spans(viterbi_bio(word_lp))]
        if self.options.lexicon and self.lexicon is not None:
            added = self.lexicon.find(text, [(m.start, m.end) for m in spans], ENTITY, self.options.lexicon_min_ratio)
            spans = sorted([*spans, *added], key=lambda m: m.start)
        if spans and (self.options.propagate or self.options.abbreviations):
            abbreviations = find_abbreviations(without_surrogates(text)) if self.options.abbreviations else None
            spans = propagate(text, spans, abbreviations, repeats=self.options.propagate)
        return spans
