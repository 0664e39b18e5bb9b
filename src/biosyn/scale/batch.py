"""`biosyn batch` on Ray Data: every input shard annotated into its output shard and manifest, restartably.

The unit of work is a **whole shard per Ray task**: a Ray Data dataset of shard descriptions, one per
block, is mapped (`map_batches`, batch size 1) over a pool of actors (`ShardWorker`). Each actor loads
the linker, with the index the driver built or found in the cache memory-mapped (`NameIndex.load`),
and the tagger (on its first shard that needs one) once, then takes shard after shard, streaming each
shard's documents through the `Annotator` in batches, and writes the shard's output and manifest
atomically itself (`biosyn.scale.shards`). Whole shards keep the output of one input in one file,
written once and checked by one manifest, with no regrouping of documents after the fact: simple, and
correct under retries, since a retried shard rewrites the same file. The cost is granularity: no more
actors are busy than there are shards left, and a worker that dies redoes its current shard from the
start; PubMed's baseline comes in ~1,300 files of ~30,000 abstracts, plenty of shards for a cluster.

Faults: an actor that dies is restarted and its shard retried (`max_restarts`, `max_task_retries`,
given through `ray_remote_args_fn`, which Ray 2.64 will remove; hence `ray[data]<2.64`); a shard that
fails every retry is left out (Ray Data's `max_errored_blocks`) while the others go on.
At the end every shard's manifest is checked again (`shard_status`), so the report names exactly the
shards that are missing, whatever happened on the way. Mentions are not cached across batches: every
document is linked as if it were the only copy (BioSyn's `rank` only embeds a text once per call).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..annotation.sources import BATCH
from ..model.presets import SURE_SPAN_CONFIDENCE
from ..search.index import file_checksums, sparse_fingerprint
from .cluster import ray_session
from .shards import Shard, annotate_shard, read_manifest, shard_from_json, shard_status, shard_to_json

RETRIES = 3  # restarts of a dead actor, and retries of its shard


@dataclass(frozen=True)
class BatchJob:
    """What each actor loads and how it annotates; `settings` is what the output depends on."""

    model: str  # a spec `load_model` takes; paths absolute, since actors may run elsewhere
    index: str  # a saved index folder, absolute
    tagger: str | None  # a tagger folder, absolute; None: documents without spans are bad ("no tagger")
    settings: dict = field(default_factory=dict)
    input_format: str | None = None
    output_format: str = "jsonl"
    batch_size: int = BATCH
    trust_pickle: bool = False
    bf16: bool = False
    backend: str | None = None  # what runs the linker's encoder and the tagger (None: ONNX where a current export exists)

    @classmethod
    def create(cls, linker, index: str | Path, tagger: str | Path | None, *, mode: str | None = None,
               min_score: float | None = None, min_confidence: float | None = SURE_SPAN_CONFIDENCE,
               input_format: str | None = None, output_format: str = "jsonl",
               batch_size: int = BATCH, trust_pickle: bool = False, bf16: bool = False, backend: str | None = None) -> BatchJob:
        """A job for a loaded `linker` whose index is saved at `index`; fingerprints its model, index and tagger."""
        index_manifest = json.loads((Path(index) / "manifest.json").read_text(encoding="utf-8"))
        settings = {
            "model": linker.spec, "model_fingerprint": linker.fingerprint, "sparse_weight": linker.sparse_weight,
            "sparse_fingerprint": sparse_fingerprint(linker.sparse_encoder) if linker.sparse_encoder else None,
            "index_fingerprint": _digest(index_manifest.get("checksums")),
            "tagger_fingerprint": None if tagger is None else _digest(file_checksums(Path(tagger))),
            "mode": mode or linker.default_mode, "min_score": min_score, "min_confidence": min_confidence,
            "input_format": input_format, "output_format": output_format,
        }
        return cls(_absolute(linker.spec), str(Path(index).resolve()), None if tagger is None else str(Path(tagger).resolve()),
                   settings, input_format, output_format, batch_size, trust_pickle, bf16, backend)

    @property
    def fingerprint(self) -> str:
        return _digest(self.settings)


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:20]


def _absolute(spec: str) -> str:
    return str(Path(spec).resolve()) if Path(spec).exists() else spec


class _LazyTagger:
    """Loads the tagger at its first use, so that actors that see only annotated input never pay for it."""

    def __init__(self, folder: str, backend: str | None):
        self.folder, self.backend = folder, backend
        self._tagger: Any = None

    def tag(self, texts):
        if self._tagger is None:
            from ..ner.tagger import DiseaseTagger

            self._tagger = DiseaseTagger.from_pretrained(self.folder, backend=self.backend)
        return self._tagger.tag(texts)


class ShardWorker:
    """A Ray Data actor: loads the models once, then annotates each shard it is given (a batch of descriptions)."""

    def __init__(self, job: BatchJob, output_dir: str):
        from ..annotation.annotator import Annotator
        from ..model.specs import load_model
        from ..search.index import NameIndex

        linker = load_model(job.model, trust_pickle=job.trust_pickle, bf16=job.bf16, backend=job.backend)
        linker.use_index(NameIndex.load(job.index, verify=False))  # memory-mapped; the driver checked it
        tagger: Any = _LazyTagger(job.tagger, job.backend) if job.tagger else None
        self.annotator = Annotator(tagger, linker, mode=job.settings.get("mode"), min_score=job.settings.get("min_score"),
                                   min_confidence=job.settings.get("min_confidence"))
        self.job, self.output_dir = job, output_dir

    def __call__(self, batch: dict) -> dict:
        out = []
        for text in batch["shard"]:
            manifest = annotate_shard(self.annotator, shard_from_json(str(text)), self.output_dir, self.job.settings,
                                      job_fingerprint=self.job.fingerprint, input_format=self.job.input_format,
                                      output_format=self.job.output_format, batch=self.job.batch_size)
            out.append(json.dumps({"shard": manifest["shard"], "counts": manifest["counts"]}))
        return {"summary": out}


@dataclass
class BatchReport:
    shards: list[Shard]
    manifests: dict[str, dict] = field(default_factory=dict)  # done shards: name -> manifest
    skipped: list[str] = field(default_factory=list)  # found done and valid at the start
    redone: dict[str, str] = field(default_factory=dict)  # name -> why it was (re)done
    missing: dict[str, str] = field(default_factory=dict)  # name -> why it is not done
    errors: list[str] = field(default_factory=list)  # what Ray reported

    def total(self, count: str) -> int:
        return sum(m["counts"][count] for m in self.manifests.values())

    @property
    def bad(self) -> list[tuple[str, str, str]]:
        """(shard, document ID, reason) of every bad document of the done shards."""
        return [(name, b["id"], b["error"]) for name, m in sorted(self.manifests.items()) for b in m["bad"]]

    def as_json(self) -> dict:
        return {"shards": len(self.shards), "done": len(self.manifests), "skipped": self.skipped, "redone": self.redone,
                "missing": self.missing, "errors": self.errors,
                "counts": {c: self.total(c) for c in ("documents", "annotated", "bad", "mentions")},
                "bad": [{"shard": s, "id": i, "error": e} for s, i, e in self.bad]}


def run_batch(shards: Sequence[Shard], output_dir: str | Path, job: BatchJob, *, workers: int | None = None,
              address: str | None = None, worker_class: type = ShardWorker, retries: int = RETRIES,
              progress: bool = False, on_done: Callable[[dict], None] | None = None) -> BatchReport:
    """Annotates the shards not yet done and valid on Ray; starts a local Ray (or joins `address`) unless
    one is running, and stops only one it started. `worker_class` is the actor (a `ShardWorker`);
    `on_done` is called with each shard's `{"shard", "counts"}` as it finishes."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    report = BatchReport(list(shards))
    todo = []
    for shard in shards:
        reason = shard_status(shard, output_dir, job.fingerprint, job.output_format)
        if reason is None:
            report.skipped.append(shard.name)
        else:
            report.redone[shard.name] = reason
            todo.append(shard)
    if todo:
        with ray_session(address, workers) as ray:
            _run_shards(ray, todo, output_dir, job, workers, worker_class, retries, progress, on_done, report)
    for shard in shards:
        reason = None if shard.name in report.skipped else shard_status(shard, output_dir, job.fingerprint, job.output_format)
        manifest = read_manifest(shard, output_dir) if reason is None else None
        if manifest is None:
            report.missing[shard.name] = reason or "manifest unreadable"
        else:
            report.manifests[shard.name] = manifest
    return report


def _run_shards(ray, todo: list[Shard], output_dir: Path, job: BatchJob, workers: int | None, worker_class: type, retries: int,
                progress: bool, on_done: Callable[[dict], None] | None, report: BatchReport) -> None:
    from ray.data import DataContext

    context = DataContext.get_current()
    saved = (context.max_errored_blocks, context.enable_progress_bars)
    context.max_errored_blocks, context.enable_progress_bars = len(todo), progress
    try:
        actors = max(1, min(workers or int(ray.cluster_resources().get("CPU", 1)), len(todo)))
        # A shard is retried `retries` times; the actor is restarted as often as all shards' tries could
        # kill it, so that a shard that always kills its worker costs that shard only, not the ones after it.
        remote_args = {"max_task_retries": retries, "max_restarts": (retries + 1) * len(todo)}
        dataset = ray.data.from_items([{"shard": shard_to_json(s)} for s in todo], override_num_blocks=len(todo))
        with warnings.catch_warnings():  # ray_remote_args_fn's deprecation: see the module's docstring
            warnings.simplefilter("ignore", DeprecationWarning)
            results = dataset.map_batches(worker_class, fn_constructor_kwargs={"job": job, "output_dir": str(output_dir)},
                                          batch_size=1, num_cpus=1,
                                          # One shard in flight an actor: a shard queued behind one that kills its
                                          # worker would otherwise die with it and spend its own retries.
                                          compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
                                          ray_remote_args_fn=lambda: remote_args)
        for row in results.iter_rows():
            if on_done is not None:
                on_done(json.loads(row["summary"]))
    except Exception as error:  # Ray's own failure; which shards it cost is found below
        report.errors.append(f"{type(error).__name__}: {error}")
    finally:
        context.max_errored_blocks, context.enable_progress_bars = saved
