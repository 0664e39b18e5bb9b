"""Dense (BERT-style) name encoder: BioSyn's dense half, as a thin wrapper over transformers.

BioSyn embeds names with the [CLS] vector of BioBERT, padding every batch to
``max_length=25``. Here batches are sorted by token count and padded only to their
longest member, which gives the same vectors (padding is masked out) for much less
work; ``mean`` pooling is offered for sentence-transformers checkpoints such as
all-MiniLM-L6-v2, which were trained with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils.hub import cached_file

CONFIG_FILE = "biosyn_encoder.json"
POOLINGS = ("cls", "mean")
# The subset of from_pretrained keyword arguments that also apply to fetching our config files.
_HUB_KEYS = ("cache_dir", "force_download", "proxies", "token", "revision", "local_files_only", "subfolder")


def default_device(device: str | torch.device | None = None) -> str | torch.device:
    """`device`, else the GPU when there is one, else the CPU."""
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def native_bf16(device: str | torch.device) -> bool:
    """Whether `device` computes in bf16 natively, so that bf16 autocast saves time: a GPU that has it,
    or a CPU with AVX512-BF16 or AMX (oneDNN's check). Elsewhere it is emulated: on the 2-core AVX2
    development CPU a pre-training step took 60 s in bf16 against 1.8 s in fp32 (docs/training.md)."""
    device = torch.device(device)
    if device.type == "cuda":
        with torch.cuda.device(device):  # that GPU, not the current one
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a torch build without oneDNN
            return False
    return False


class DenseEncoder:
    """Embeds names with a transformer encoder, pooling its last hidden state."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pooling: str = "cls",
        max_length: int = 25,
    ):
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if max_length < 2:
            raise ValueError(f"max_length must leave room for special tokens, got {max_length}")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = int(max_length)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        pooling: str | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        **hub_kwargs,
    ) -> DenseEncoder:
        """Load a local folder or hub id (onto the GPU when there is one, unless ``device`` says otherwise);
        unset options come from its ``biosyn_encoder.json``."""
        name_or_path = str(name_or_path)
        hub = {k: v for k, v in hub_kwargs.items() if k in _HUB_KEYS}
        saved = _read_json(name_or_path, CONFIG_FILE, hub) or {}
        if pooling is None:
            pooling = saved.get("pooling") or _sentence_transformers_pooling(name_or_path, hub) or "cls"
        if max_length is None:
            max_length = saved.get("max_length", 25)
        # transformers 5 loads in the checkpoint's dtype by default ("auto"); fp16 hub
        # checkpoints would then run in fp16, which is slow and lossy on CPU. bf16 is opt-in
        # through embed(bf16=True) instead.
        model = AutoModel.from_pretrained(name_or_path, **{"dtype": torch.float32, **hub_kwargs})
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, **hub)
        model.to(default_device(device))
        return cls(model, tokenizer, pooling=pooling, max_length=max_length)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write a folder that both ``from_pretrained`` and plain ``AutoModel.from_pretrained`` load."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory)  # safetensors is the only format in transformers 5
        self.tokenizer.save_pretrained(directory)
        config = {"pooling": self.pooling, "max_length": self.max_length}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def name_or_path(self) -> str:
        return str(getattr(self.model, "name_or_path", "") or "")

    def fingerprint(self, similarity: str) -> str:
        """Identifies what the dense rows of an index depend on: weights, pooling, length, similarity."""
        digest = hashlib.sha256(json.dumps([self.pooling, self.max_length, similarity]).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def pool(self, last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return last_hidden_state[:, 0]
        mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
        return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)

    def encode(self, texts: Sequence[str], *, bucket_size: int | None = None) -> torch.Tensor:
        """Pooled embeddings [n, hidden] with gradients, for training (caller sets train/eval mode).

        With `bucket_size`, texts are sorted by token count and run in chunks of that many, each
        padded to its own longest text: far less padding, the same vectors, original order.
        """
        texts = list(texts)
        if bucket_size is None:
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt").to(self.device)
            return self.pool(self.model(**batch).last_hidden_state, batch["attention_mask"])
        tokens = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        order = np.argsort([len(ids) for ids in tokens["input_ids"]], kind="stable")
        pooled = []
        for start in range(0, len(texts), bucket_size):
            idx = order[start:start + bucket_size]
            batch = self.tokenizer.pad({k: [v[i] for i in idx] for k, v in tokens.items()}, return_tensors="pt").to(self.device)
            pooled.append(self.pool(self.model(**batch).last_hidden_state, batch["attention_mask"]))
        return torch.cat(pooled)[torch.from_numpy(np.argsort(order, kind="stable"))]

    @torch.inference_mode()
    def embed(
        self, texts: Sequence[str], *, batch_size: int = 256, bf16: bool = False, progress: bool = False
    ) -> np.ndarray:
        """Float32 embeddings [n, hidden] in the order of ``texts``."""
        texts = list(texts)
        out = np.empty((len(texts), self.hidden_size), dtype=np.float32)
        if not texts:
            return out
        self.model.eval()
        device = self.device
        enc = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        # Length-sorted batches need little padding; writing rows back by index restores the order.
        order = np.argsort([len(ids) for ids in enc["input_ids"]], kind="stable")
        autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        )
        with tqdm(total=len(texts), unit="names", disable=not progress) as bar, autocast:
            for start in range(0, len(texts), batch_size):
                idx = order[start : start + batch_size]
                batch = self.tokenizer.pad(
                    {key: [values[i] for i in idx] for key, values in enc.items()}, return_tensors="pt"
                ).to(device)
                pooled = self.pool(self.model(**batch).last_hidden_state, batch["attention_mask"])
                out[idx] = pooled.float().cpu().numpy()
                bar.update(len(idx))
        return out


def _read_json(name_or_path: str, filename: str, hub: dict) -> dict | None:
    path = cached_file(
        name_or_path,
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub,
    )
    return json.loads(Path(path).read_text(encoding="utf-8")) if path else None


def _sentence_transformers_pooling(name_or_path: str, hub: dict) -> str | None:
    """``"mean"`` for a sentence-transformers folder whose pooling module averages tokens."""
    config = _read_json(name_or_path, "1_Pooling/config.json", hub)
    return "mean" if config and config.get("pooling_mode_mean_tokens") else None
