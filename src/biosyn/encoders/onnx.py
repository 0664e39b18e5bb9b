"""ONNX Runtime inference for the dense encoder: no torch and no transformers when serving.

`export` (needs torch) writes `model.onnx`, optionally `model.int8.onnx` (dynamic int8 quantisation
of the linear layers), and `biosyn_onnx.json`, which binds them to the weights they came from: the
model fingerprint (the one indexes hold), the pooling, length and similarity it stands for, and
the SHA-256, size and modification time of every weight file. `OnnxEncoder` runs them through
onnxruntime, tokenises with the `tokenizers` library (`tokenizer.json`) and pools as `DenseEncoder`
does (cls or mean, the same max_length, length-sorted batches padded to their longest member).

An export sits beside the weights; a folder that cannot be written (the packaged MiniLM) gets it
under `$BIOSYN_CACHE/onnx/<key>`, the key naming the weights by path, size and modification time.
An export whose weights no longer match the folder's is stale and refused (`StaleExportError`):
size and time are compared first (no read), the checksum only when they differ.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import threading
import types
import warnings
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from ..data.atomic import atomic_write
from ..data.locate import cache_root

log = logging.getLogger(__name__)
_SESSIONS = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="biosyn-onnx-session")


class Backend(StrEnum):
    """What runs the dense encoder (and the tagger). Unset means: ONNX when a valid export exists, else torch."""

    TORCH = "torch"
    ONNX = "onnx"
    ONNX_INT8 = "onnx-int8"  # int8 weights: faster, a little less accurate (docs/results.md)

    @classmethod
    def _missing_(cls, value):
        raise ValueError(f"backend must be one of {BACKENDS}, got {value!r}")


BACKENDS: tuple[str, ...] = tuple(b.value for b in Backend)
ONNX_FILES = {Backend.ONNX: "model.onnx", Backend.ONNX_INT8: "model.int8.onnx"}
SIDECAR = "biosyn_onnx.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT = "biosyn.onnx"
VERSION = 1
# How int8 weights are made: dynamic quantisation with a scale per output channel. One scale per tensor (exports
# before this was recorded) cost the tagger 1.6 NER F1 on NCBI dev; per channel costs none (docs/results.md).
INT8_SCHEME = "qint8-per-channel"
INT8_SCHEME_BEFORE = "qint8-per-tensor"  # what an export without the record holds
INT8_SCHEMES = {INT8_SCHEME_BEFORE: {"per_channel": False}, INT8_SCHEME: {"per_channel": True}}  # quantize_dynamic's
OPSET = 17
BACKEND_HELP = ("what runs the encoder: torch, onnx or onnx-int8 (an export made by `biosyn export`); "
                "default: onnx when the model has a valid export, else torch")


class StaleExportError(ValueError):
    """An ONNX export made from other weights than the folder's."""


class NoExportError(FileNotFoundError):
    """The ONNX backend was asked for, but the model has no export."""


# -- where an export is, and whether it is current ---------------------------------------------

def weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))


def weights_stat(folder: Path) -> list[list]:
    return [[f.name, f.stat().st_size, f.stat().st_mtime_ns] for f in weight_files(folder)]


def weights_sha256(folder: Path) -> str:
    digest = hashlib.sha256()
    for file in weight_files(folder):
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def cache_folder(folder: Path) -> Path:
    """Where an export of a folder that cannot hold it goes."""
    return cache_root() / "onnx" / _digest([str(folder.resolve()), weights_stat(folder)])


def _digest(value) -> str:
    """A short key for a JSON-able value (cache folder and file names)."""
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:16]


def read_sidecar(where: Path) -> dict | None:
    path = where / SIDECAR
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        info = None
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("version") != VERSION:
        raise StaleExportError(f"{path}: not a {FORMAT} v{VERSION} file; export again with `biosyn export`")
    return info


def int8_scheme(info: dict) -> str:
    """How an export's int8 weights were made (`info`: its sidecar)."""
    return info.get("int8_scheme", INT8_SCHEME_BEFORE)


def find_export(folder: str | os.PathLike, backend: Backend = Backend.ONNX) -> Path | None:
    """The folder holding a current export of `folder`'s weights for `backend`, or None.
    A stale export is a `StaleExportError`, never silently used."""
    folder = Path(folder)
    if not weight_files(folder):
        return None
    for where in (folder, cache_folder(folder)):
        info = read_sidecar(where)
        # A file the sidecar does not list is left over from an earlier export (an int8 file after a plain one).
        if info is None or not (where / ONNX_FILES[backend]).is_file() or ONNX_FILES[backend] not in info.get("files", ()):
            continue
        if info.get("weights_stat") != weights_stat(folder) and info.get("weights_sha256") != weights_sha256(folder):
            raise StaleExportError(f"{where / ONNX_FILES[backend]} was exported from other weights than those in {folder} "
                                   f"(fingerprint {info.get('fingerprint')}); export again with `biosyn export {folder}`, "
                                   "or use --backend torch")
        return where
    return None


def choose_backend(folder: str | os.PathLike | None, requested: str | None) -> tuple[Backend, Path | None]:
    """The backend to use and, for ONNX, the export folder. Unset: ONNX when a current export exists
    (a stale one is passed over with a warning), else torch. Asked for ONNX without one: `NoExportError`."""
    if requested is not None and Backend(requested) is Backend.TORCH:
        return Backend.TORCH, None
    if importlib.util.find_spec("onnxruntime") is None:  # the extra is not installed
        if requested is not None:
            raise NoExportError(f"--backend {requested} needs onnxruntime: pip install 'biosyn[onnx]'")
        return Backend.TORCH, None
    if folder is None:  # a hub id not downloaded yet, or no encoder at all
        if requested is not None:
            raise NoExportError(f"--backend {requested}: only a model folder with an export (`biosyn export`) runs on ONNX")
        return Backend.TORCH, None
    if requested is None:
        try:
            where = find_export(folder, Backend.ONNX)
        except StaleExportError as error:
            log.warning("%s; using torch", error)
            where = None
        return (Backend.ONNX, where) if where else (Backend.TORCH, None)
    backend = Backend(requested)
    where = find_export(folder, backend)
    if where is None:
        raise NoExportError(f"--backend {backend}: {folder} has no ONNX export"
                            f"{' with int8 weights' if backend is Backend.ONNX_INT8 else ''}; "
                            f"make one with `biosyn export {folder}{' --int8' if backend is Backend.ONNX_INT8 else ''}`")
    return backend, where


def remove_export(folder: str | os.PathLike) -> None:
    """Deletes the export in `folder` (its weights are being replaced)."""
    for name in (SIDECAR, *ONNX_FILES.values()):
        Path(folder, name).unlink(missing_ok=True)
    for optimised in Path(folder).glob("*.ort-*.onnx"):
        optimised.unlink()


# -- inference ---------------------------------------------------------------------------------

class OnnxModel:
    """An export's graph on onnxruntime, what the encoder and the tagger share: its sidecar, its tokenizer,
    and a session that is built in a thread. onnxruntime builds it without the GIL, so it overlaps with
    what the caller loads next (a CLI call's index: 0.1-0.2 s of its start-up); its errors come with the
    first use."""

    def __init__(self, where: str | os.PathLike, kind: str, *, int8: bool = False, threads: int | None = None):
        where = Path(where)
        info = read_sidecar(where)
        if info is None or info.get("kind", "encoder") != kind:
            raise NoExportError(f"{where}: no {kind} export ({SIDECAR}); make one with `biosyn export`")
        self.exported = info
        self.backend = Backend.ONNX_INT8 if int8 else Backend.ONNX
        self.int8_scheme = int8_scheme(info) if int8 else None
        self._session = _SESSIONS.submit(inference_session, where / ONNX_FILES[self.backend], threads)
        self.tokenizer = load_tokenizer(where, info)

    @property
    def session(self) -> Any:
        return self._session.result()

    @functools.cached_property
    def inputs(self) -> set[str]:
        return {i.name for i in self.session.get_inputs()}

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        """The graph's first output for the inputs it takes among `feed`'s."""
        return self.session.run(None, {k: v for k, v in feed.items() if k in self.inputs})[0]


class OnnxEncoder(OnnxModel):
    """`DenseEncoder`'s inference half on onnxruntime: `embed` gives the same vectors (to float error)."""

    def __init__(self, where: str | os.PathLike, *, int8: bool = False, threads: int | None = None):
        super().__init__(where, "encoder", int8=int8, threads=threads)
        info = self.exported
        self.pooling: str = info["pooling"]
        self.max_length: int = int(info["max_length"])
        self.hidden_size: int = int(info["hidden_size"])
        self.name_or_path: str = info.get("source", str(where))

    def fingerprint(self, similarity: str) -> str:
        """The model fingerprint of the weights it was exported from, for the configuration it was exported with."""
        mine = {"pooling": self.pooling, "max_length": self.max_length, "similarity": str(similarity)}
        theirs = {key: self.exported.get(key) for key in mine}
        if mine != theirs:
            raise ValueError(f"the ONNX export stands for {theirs}, not {mine}; export again, or use --backend torch")
        return self.exported["fingerprint"]

    def embed(self, texts: Sequence[str], *, batch_size: int = 64, bf16: bool = False, progress: bool = False) -> np.ndarray:
        """Float32 embeddings [n, hidden] in the order of `texts` (`bf16` is torch's; ignored here)."""
        texts = list(texts)
        out = np.empty((len(texts), self.hidden_size), dtype=np.float32)
        if not texts:
            return out
        self.tokenizer.enable_truncation(self.max_length)
        encodings = self.tokenizer.encode_batch(texts)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        # Length-sorted batches need little padding; writing rows back by index restores the order.
        order = np.argsort(lengths, kind="stable")
        with _progress_bar(len(texts), progress) as bar:
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                feed = _pad([encodings[i] for i in idx], int(lengths[idx].max()))
                hidden = self.run(feed)
                out[idx] = pool(hidden, feed["attention_mask"], self.pooling)
                bar.update(len(idx))
        return out


def inference_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime session on `path`. Optimising a graph (fusing attention, layer norms, GELU) is most
    of a session's start-up, so the optimised graph is kept (`optimised_graph_path`) and the next session
    loads it as it is (MiniLM: 0.15-0.17 s instead of 0.29-0.46 s, docs/results.md)."""
    import onnxruntime as ort

    def session(model: Path, level, save_to: Path | None = None):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        if threads:
            options.intra_op_num_threads = threads
        if save_to is not None:
            options.optimized_model_filepath = str(save_to)
        return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])

    optimised = optimised_graph_path(path, ort.__version__)
    if optimised.is_file():
        try:
            return session(optimised, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        except Exception as error:  # onnxruntime's own error types; a damaged copy is only made again
            log.warning("optimised graph %s not used (%s); optimising %s again", optimised, error, path)
            optimised.unlink(missing_ok=True)
    # Extended, not all: the "all" level adds layout changes for this very CPU, wrong in a copy shared
    # between machines, and nothing a transformer uses.
    extended = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    tmp = optimised.with_name(f"{optimised.stem}.{os.getpid()}-{threading.get_ident()}.tmp")  # sessions load in threads
    try:
        optimised.parent.mkdir(parents=True, exist_ok=True)
        built = session(path, extended, save_to=tmp)
    except Exception as error:  # a folder or disk that takes no copy costs the next start-up the optimising
        log.warning("could not keep the optimised graph at %s (%s)", optimised, error)
        tmp.unlink(missing_ok=True)
        return session(path, extended)
    try:
        for older in optimised.parent.glob(f"{path.stem}.ort-*.onnx"):  # of an earlier export or runtime
            older.unlink(missing_ok=True)
        os.replace(tmp, optimised)
    except OSError as error:
        log.warning("could not keep the optimised graph at %s (%s)", optimised, error.strerror or error)
        tmp.unlink(missing_ok=True)
    return built


def optimised_graph_path(path: Path, runtime_version: str) -> Path:
    """Where `path`'s optimised graph is kept: beside it (`model.ort-<key>.onnx`), else, in a folder that
    cannot be written, in the cache. The key names the file (size, modification time) and the onnxruntime
    version, whose fused operators the graph holds."""
    stat = path.stat()
    key = _digest([str(path.resolve()), stat.st_size, stat.st_mtime_ns, runtime_version])
    if os.access(path.parent, os.W_OK):
        return path.parent / f"{path.stem}.ort-{key}.onnx"
    # One cache folder per export folder: the clean-up of older copies (`inference_session`) stays within it.
    return cache_root() / "onnx-optimised" / _digest(str(path.parent.resolve())) / f"{path.stem}.ort-{key}.onnx"


def load_tokenizer(where: Path, info: dict) -> Any:
    """The export's `tokenizers.Tokenizer`, without the padding or truncation its file may set."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(where / info.get("tokenizer", TOKENIZER_FILE)))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def _progress_bar(total: int, shown: bool) -> Any:
    if not shown:  # tqdm.auto imports asyncio: a tenth of a second of a one-query start-up
        return contextlib.nullcontext(types.SimpleNamespace(update=lambda n: None))
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="names")


def _pad(encodings: list, width: int) -> dict[str, np.ndarray]:
    feed = {key: np.zeros((len(encodings), width), dtype=np.int64) for key in ("input_ids", "attention_mask", "token_type_ids")}
    for row, e in enumerate(encodings):
        n = len(e.ids)
        feed["input_ids"][row, :n] = e.ids
        feed["attention_mask"][row, :n] = 1
        feed["token_type_ids"][row, :n] = e.type_ids
    return feed


def pool(hidden: np.ndarray, mask: np.ndarray, pooling: str) -> np.ndarray:
    """`DenseEncoder.pool` in NumPy: the [CLS] vector, or the mean over real tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


# -- export (needs torch) ----------------------------------------------------------------------

def export(encoder: Any, source: str | os.PathLike, *, fingerprint: str, similarity: str, int8: bool = False,
           output: str | os.PathLike | None = None, check_texts: Sequence[str] = ("wilson disease", "x", "hereditary breast and ovarian cancer")) -> Path:
    """Exports a `DenseEncoder` loaded from `source` into `output` (default: `source` when it can be
    written, else the cache). Checks the tokenizer and the vectors against the torch encoder on `check_texts`."""
    where = export_folder(source, output)
    sample = encoder.tokenizer(list(check_texts), padding=True, truncation=True, max_length=encoder.max_length, return_tensors="pt")
    files, names = export_graph(encoder.model, sample, where, "last_hidden_state", int8=int8)
    info = {"kind": "encoder", "fingerprint": fingerprint, "pooling": encoder.pooling, "max_length": encoder.max_length,
            "similarity": str(similarity), "hidden_size": encoder.hidden_size, "files": files, "inputs": names}
    write_sidecar(where, source, encoder.tokenizer, info)
    try:
        _check(encoder, where, list(check_texts))
    except ValueError:
        (where / SIDECAR).unlink()  # an export that fails its check is never found
        raise
    return where


def export_folder(source: str | os.PathLike, output: str | os.PathLike | None) -> Path:
    """Where an export of `source` goes: `output`, else beside the weights when they can be written, else the cache."""
    source = Path(source)
    if not weight_files(source):
        raise NoExportError(f"{source}: no weight files (*.safetensors, pytorch_model*.bin) to bind an export to")
    where = Path(output) if output else (source if os.access(source, os.W_OK) else cache_folder(source))
    where.mkdir(parents=True, exist_ok=True)
    return where


def export_graph(model: Any, sample: Any, where: Path, output: str, *, int8: bool = False) -> tuple[list[str], list[str]]:
    """Traces `model(**inputs).<output>` to `where/model.onnx` (and its int8 copy) with dynamic batch and
    length; returns the files written and the input names."""
    import torch

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class Output(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return getattr(self.model(**dict(zip(names, inputs))), output)

    model = model.eval().to("cpu")
    tmp = where / (ONNX_FILES[Backend.ONNX] + ".tmp")
    with torch.inference_mode(), warnings.catch_warnings():
        # The TorchScript exporter: it works offline with torch 2.13 and transformers 5 (the dynamo one wants
        # onnxscript). Its tracer warnings are about shapes fixed at trace time that an encoder never changes.
        warnings.simplefilter("ignore")
        torch.onnx.export(Output(model), tuple(sample[n].cpu() for n in names), str(tmp), input_names=names,
                          output_names=[output], opset_version=OPSET, dynamo=False,
                          dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, output]})
    os.replace(tmp, where / ONNX_FILES[Backend.ONNX])
    files = [ONNX_FILES[Backend.ONNX]]
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = where / (ONNX_FILES[Backend.ONNX_INT8] + ".tmp")
        root = logging.getLogger()
        root.addFilter(_quantiser_advice)  # it advises shape pre-processing on the root logger; measured without it
        try:
            quantize_dynamic(where / ONNX_FILES[Backend.ONNX], tmp, weight_type=QuantType.QInt8, **INT8_SCHEMES[INT8_SCHEME])
        finally:
            root.removeFilter(_quantiser_advice)
        os.replace(tmp, where / ONNX_FILES[Backend.ONNX_INT8])
        files.append(ONNX_FILES[Backend.ONNX_INT8])
    return files, names


def _quantiser_advice(record: logging.LogRecord) -> bool:
    return "pre-processing before quantization" not in record.getMessage()


def write_sidecar(where: Path, source: str | os.PathLike, tokenizer: Any, info: dict) -> None:
    """The tokenizer (unless `where` has one) and `biosyn_onnx.json`, written last: it makes the export findable."""
    import torch

    if not (where / TOKENIZER_FILE).is_file():
        tokenizer.backend_tokenizer.save(str(where / TOKENIZER_FILE))
    if ONNX_FILES[Backend.ONNX_INT8] in info.get("files", ()):
        info = {**info, "int8_scheme": INT8_SCHEME}
    info = {"format": FORMAT, "version": VERSION, **info, "source": str(source), "tokenizer": TOKENIZER_FILE,
            "weights_stat": weights_stat(Path(source)), "weights_sha256": weights_sha256(Path(source)),
            "torch": torch.__version__, "opset": OPSET}
    with atomic_write(where / SIDECAR) as out:
        json.dump(info, out, indent=1)


def _check(encoder: Any, where: Path, texts: list[str]) -> None:
    """The export reads text as transformers does and gives the torch encoder's vectors."""
    onnx = OnnxEncoder(where)
    onnx.tokenizer.enable_truncation(onnx.max_length)
    want_ids = encoder.tokenizer(texts, truncation=True, max_length=encoder.max_length)["input_ids"]
    got_ids = [e.ids for e in onnx.tokenizer.encode_batch(texts)]
    if got_ids != want_ids:
        raise ValueError(f"{where / TOKENIZER_FILE} tokenises differently from the model's tokenizer; remove it and export again")
    diff = float(np.abs(onnx.embed(texts) - encoder.embed(texts)).max())
    if diff > 1e-3:
        raise ValueError(f"the ONNX export's vectors differ from torch's by {diff:.2g}; not using it")
