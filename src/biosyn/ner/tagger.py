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
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from tqdm.auto import tqdm

from ..data.atomic import atomic_write
from ..data.records import Mention
from ..encoders.onnx import (
    ONNX_FILES,
    Backend,
    OnnxModel,
    choose_backend,
    export_folder,
    export_graph,
    remove_export,
    write_sidecar,
)
from ..preprocess.abbreviations import find_abbreviations
from .labels import ENTITY, ID2LABEL, LABEL2ID
from .lexicon import Lexicon
from .propagation import propagate
from .windows import TokenizedText, span_confidence, tag_spans, tokenize, viterbi_bio, windows, without_surrogates

if TYPE_CHECKING:  # torch and transformers are imported where the torch backend needs them, not on the ONNX path
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CONFIG_FILE = "biosyn_tagger.json"


@dataclass
class TaggerOptions:
    """How raw text is read and decoded; saved with the tagger."""

    max_length: int = 128  # tokens per window, [CLS] and [SEP] included
    overlap: int = 8  # tokens shared by neighbouring windows at inference (chosen on NCBI dev: docs/tagger.md)
    batch_size: int = 32  # windows per forward pass
    propagate: bool = False  # a string tagged once is tagged wherever it recurs in the document
    abbreviations: bool = True  # the Ab3P short forms of a tagged long form are tagged too (NCBI dev: +0.9 NER F1)
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

    def __init__(self, model: PreTrainedModel | None, tokenizer: PreTrainedTokenizerBase | Any,
                 options: TaggerOptions | None = None, metadata: dict | None = None, lexicon: Lexicon | None = None,
                 onnx: OnnxTokenClassifier | None = None):
        """`model` and its fast tokenizer run on torch; or `onnx` runs an export (`model` None, `tokenizer`
        the export's `tokenizers.Tokenizer`)."""
        if onnx is None and not getattr(tokenizer, "is_fast", False):
            raise ValueError("the tagger needs a fast tokenizer (character offsets); this folder has a slow one")
        # None on the ONNX backend; only torch's paths (training, saving, int8 on torch) read it.
        self.model = cast("PreTrainedModel", model)
        self.onnx = onnx
        self.tokenizer = tokenizer
        self.options = options or TaggerOptions()
        self.metadata = dict(metadata or {})  # training data, figures: what the model card states
        self.spec = ""  # what the user named it by (a folder, a hub id)
        self.lexicon = lexicon
        self._int8_model: PreTrainedModel | None = None  # built from `model` at the first int8 call
        positions = onnx.max_positions if onnx is not None else self.model.config.max_position_embeddings
        if self.options.max_length > positions:
            raise ValueError(f"max_length {self.options.max_length} is over the encoder's {positions} positions")

    @classmethod
    def from_base(cls, name_or_path: str | os.PathLike, options: TaggerOptions | None = None,
                  device: str | None = None, layers: int | None = None) -> "DiseaseTagger":
        """A fresh (untrained) tagger head on a base encoder; `layers` keeps only its first N layers."""
        import torch
        from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

        from ..encoders.dense import default_device

        config = AutoConfig.from_pretrained(str(name_or_path), num_labels=len(ID2LABEL), id2label=ID2LABEL, label2id=LABEL2ID)
        if layers is not None:
            if not 1 <= layers <= config.num_hidden_layers:
                raise ValueError(f"--layers {layers}: the base encoder has {config.num_hidden_layers} layers")
            config.num_hidden_layers = layers
        model = AutoModelForTokenClassification.from_pretrained(str(name_or_path), config=config, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        model.to(default_device(device))
        return cls(model, tokenizer, options)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | None = None, backend: str | None = "torch",
                        **overrides) -> "DiseaseTagger":
        """`backend` (`encoders.onnx.Backend`): None runs an ONNX export (`biosyn export FOLDER`) when the
        folder has a current one, else torch. On ONNX, the int8 option takes the export's int8 weights."""
        folder = Path(folder)
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"{folder} is not a tagger folder (no config.json)")
        saved = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")) if (folder / CONFIG_FILE).exists() else {}
        options = TaggerOptions.from_dict({**saved.get("options", {}), **overrides})
        label2id = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("label2id")
        if label2id != LABEL2ID:
            raise ValueError(f"{folder}: labels {label2id} are not biosyn's {LABEL2ID}")
        if options.int8 and backend == Backend.ONNX:
            backend = Backend.ONNX_INT8
        chosen, where = choose_backend(folder, backend)
        if where is not None:
            if options.int8 and chosen is Backend.ONNX:  # chosen by default: the int8 weights when exported, else fp32
                chosen = Backend.ONNX_INT8 if (where / ONNX_FILES[Backend.ONNX_INT8]).is_file() else chosen
            onnx = OnnxTokenClassifier(where, int8=chosen is Backend.ONNX_INT8)
            return cls(None, onnx.tokenizer, options, saved.get("metadata"), Lexicon.load(folder), onnx=onnx)
        import torch
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        from ..encoders.dense import default_device

        model = AutoModelForTokenClassification.from_pretrained(str(folder), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        model.to(default_device(device))
        return cls(model, tokenizer, options, saved.get("metadata"), Lexicon.load(folder))

    def export_onnx(self, source: str | os.PathLike, *, int8: bool = False, output: str | os.PathLike | None = None) -> Path:
        """Exports the tagger loaded from `source` (needs torch), checked against torch on a short text."""
        where = export_folder(source, output)
        sample = self.tokenizer(["Hereditary breast cancer.", "HNPCC"], padding=True, return_tensors="pt")
        files, names = export_graph(self.model, sample, where, "logits", int8=int8)
        special = {"cls": self.tokenizer.cls_token_id, "sep": self.tokenizer.sep_token_id, "pad": self.tokenizer.pad_token_id}
        write_sidecar(where, source, self.tokenizer, {"kind": "tagger", "files": files, "inputs": names, "special_ids": special,
                                                      "max_positions": self.model.config.max_position_embeddings})
        text = ["Hereditary nonpolyposis colorectal cancer (HNPCC) is also called Lynch syndrome."]
        runner = OnnxTokenClassifier(where)
        (got_tokens, got), (want_tokens, want) = (
            tagger.word_log_probs(text)[0] for tagger in (DiseaseTagger(None, runner.tokenizer, self.options, onnx=runner), self))
        if got_tokens != want_tokens or float(np.abs(got - want).max()) > 1e-3:
            remove_export(where)  # never found
            raise ValueError("the ONNX export reads text or scores it otherwise than torch does; not using it")
        return where

    def save_pretrained(self, folder: str | os.PathLike, card: str | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(folder)
        remove_export(folder)  # made from the weights just replaced
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

            import torch
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
        if self.onnx is not None:
            cls_id, sep_id, pad_id = self.onnx.special_ids
        else:
            cls_id, sep_id, pad_id = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.tokenizer.pad_token_id
        with tqdm(total=len(jobs), unit="windows", disable=not progress) as bar:
            for b in range(0, len(jobs), self.options.batch_size):
                batch = jobs[b:b + self.options.batch_size]
                width = max(e - s for _, s, e, _, _ in batch) + 2
                ids = np.full((len(batch), width), pad_id, dtype=np.int64)
                mask = np.zeros((len(batch), width), dtype=np.int64)
                for row, (d, s, e, _, _) in enumerate(batch):
                    ids[row, :e - s + 2] = [cls_id, *tokenized[d].input_ids[s:e], sep_id]
                    mask[row, :e - s + 2] = 1
                lp = self.onnx.log_probs(ids, mask) if self.onnx is not None else self._torch_log_probs(ids, mask)
                for row, (d, s, _, own_s, own_e) in enumerate(batch):
                    token_lp[d][own_s:own_e] = lp[row, 1 + own_s - s:1 + own_e - s]
                bar.update(len(batch))
        return [(t, lp[t.first_token]) for t, lp in zip(tokenized, token_lp)]

    def _torch_log_probs(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        import torch

        model = self.inference_model()
        model.eval()
        with torch.inference_mode():
            logits = model(input_ids=torch.from_numpy(ids).to(self.device), attention_mask=torch.from_numpy(mask).to(self.device)).logits
            return torch.log_softmax(logits.float(), -1).cpu().numpy()

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
        spans = [Mention(words[a][0], words[b - 1][1], text[words[a][0]:words[b - 1][1]], ENTITY,
                         confidence=span_confidence(word_lp, a, b))
                 for a, b in tag_spans(viterbi_bio(word_lp))]
        if self.options.lexicon and self.lexicon is not None:
            added = self.lexicon.find(text, [(m.start, m.end) for m in spans], ENTITY, self.options.lexicon_min_ratio)
            spans = sorted([*spans, *added], key=lambda m: m.start)
        if spans and (self.options.propagate or self.options.abbreviations):
            abbreviations = find_abbreviations(without_surrogates(text)) if self.options.abbreviations else None
            spans = propagate(text, spans, abbreviations, repeats=self.options.propagate)
        return spans


class OnnxTokenClassifier(OnnxModel):
    """An exported tagger's model on onnxruntime: log-probabilities of O/B/I for padded windows."""

    def __init__(self, where: str | os.PathLike, *, int8: bool = False):
        super().__init__(where, "tagger", int8=int8)
        info = self.exported
        self.special_ids = (info["special_ids"]["cls"], info["special_ids"]["sep"], info["special_ids"]["pad"])
        self.max_positions = int(info["max_positions"])

    def log_probs(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        logits = self.run({"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}).astype(np.float32)
        # log-softmax in NumPy: scipy.special's import is a tenth of a second of the tagger's start-up.
        logits -= logits.max(axis=-1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
