"""Shards of a batch job: what they are, when one is done, and annotating one into its output and manifest.

Nothing here imports Ray: `biosyn.scale.batch` runs `annotate_shard` on Ray actors, and the same function
runs in one process (the benchmark's single-process path, and any caller without Ray).

An input shard is a file (JSONL, PubTator, PubMed XML, plain text; `biosyn.data.sources` reads it) or a
folder of `.txt` files (one document each). Its output, in the output folder, is `NAME.mentions.jsonl` or
`NAME.mentions.parquet` with one row per mention, plus one row for each document without mentions and for
each bad document, so that every input document has at least one row: its `position` (0, 1, … in the
shard) counts documents in = documents out even where IDs repeat. Then `NAME.manifest.json` is written:
the input's and the output's SHA-256, the counts, every bad document with its reason, and the job's
settings and fingerprints. Both files are written atomically and the manifest last, so a shard is done
exactly when its manifest matches the job and the input and its output's checksum holds
(`shard_status`); anything else is redone.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .._version import __version__
from ..annotation.sources import BATCH, annotate_sources, mention_json
from ..data.atomic import atomic_write, write_json
from ..data.sources import Source, read_file, read_sources

FORMAT = "biosyn.batch-shard"
VERSION = 1
OUTPUT_FORMATS = ("jsonl", "parquet")
CHECKSUM_FILES = (".md5", ".sha256")  # beside NLM's baseline files; never shards
# The row of each mention; a document without mentions has start/end/text/type None, a bad one its `error`.


@dataclass(frozen=True)
class Shard:
    """One unit of work: an input file, or a folder of `.txt` files, and the name its outputs take."""

    name: str
    path: str  # absolute
    folder: bool = False

    def manifest_path(self, output_dir: str | Path) -> Path:
        return Path(output_dir) / f"{self.name}.manifest.json"

    def output_path(self, output_dir: str | Path, fmt: str) -> Path:
        return Path(output_dir) / f"{self.name}.mentions.{fmt}"


def plan_shards(inputs: Sequence[str]) -> list[Shard]:
    """The shards that `inputs` name: files; folders (a folder holding `.txt` files is one shard of
    them, any other folder gives each of its files as a shard, but hidden and `.md5` files); or globs of either. Two inputs
    whose outputs would have the same name are an error, since one would overwrite the other."""
    import glob

    paths: list[Path] = []
    for spec in inputs:
        path = Path(spec)
        if path.is_dir() and not any(path.glob("*.txt")):
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix not in CHECKSUM_FILES)
        elif path.exists():
            found = [path]
        else:
            found = sorted(Path(p) for p in glob.glob(spec))
        if not found:
            raise FileNotFoundError(f"{spec}: no such file or folder, an empty folder, or nothing matches that glob")
        paths += found
    shards: dict[str, Shard] = {}
    for path in dict.fromkeys(p.resolve() for p in paths):
        shard = Shard(_shard_name(path), str(path), path.is_dir())
        if shard.name in shards:
            raise ValueError(f"{shards[shard.name].path} and {path} would both write shard {shard.name!r}; "
                             f"rename one or run them into separate output folders")
        shards[shard.name] = shard
    return list(shards.values())


def _shard_name(path: Path) -> str:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    return name if path.is_dir() else Path(name).stem or name


def input_checksum(shard: Shard) -> str:
    """SHA-256 of the input file, or of the folder's `.txt` files (their names and checksums)."""
    if not shard.folder:
        return _file_sha256(Path(shard.path))
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(shard.path).glob("*.txt") if p.is_file()):
        digest.update(f"{path.name}\t{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_shard(shard: Shard, input_format: str | None = None) -> list[Source]:
    return read_sources(shard.path) if shard.folder else read_file(Path(shard.path), input_format)


def read_manifest(shard: Shard, output_dir: str | Path) -> dict | None:
    try:
        manifest = json.loads(shard.manifest_path(output_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def shard_status(shard: Shard, output_dir: str | Path, job_fingerprint: str, output_format: str) -> str | None:
    """None when the shard is done and valid for this job; else why it must be (re)done."""
    manifest = read_manifest(shard, output_dir)
    if manifest is None:
        return "not done" if not shard.manifest_path(output_dir).exists() else "damaged manifest"
    if manifest.get("version") != VERSION or manifest.get("job_fingerprint") != job_fingerprint:
        return "stale: done with another model, index, tagger or settings"
    output = shard.output_path(output_dir, output_format)
    if manifest.get("output") != output.name or not output.is_file():
        return f"output {output.name} missing"
    if manifest.get("input_sha256") != input_checksum(shard):
        return "stale: the input changed"
    if _file_sha256(output) != manifest.get("output_sha256"):
        return f"output {output.name} damaged (checksum differs from the manifest's)"
    return None


def annotate_shard(annotator, shard: Shard, output_dir: str | Path, job: dict, *, job_fingerprint: str,
                   input_format: str | None = None, output_format: str = "jsonl", batch: int = BATCH) -> dict:
    """Reads, annotates and writes one shard (output, then manifest, each atomically); returns its manifest."""
    started = time.perf_counter()
    checksum = input_checksum(shard)  # before reading: a file changed meanwhile makes the manifest stale, not wrong
    sources = read_shard(shard, input_format)
    annotate_sources(annotator, sources, batch=batch, progress=False)
    rows = shard_rows(sources)
    data = _encode(rows, output_format)
    output = shard.output_path(output_dir, output_format)
    with atomic_write(output, "wb") as out:
        out.write(data)
    bad = [{"id": s.id, "error": s.error} for s in sources if s.doc is None]
    manifest = {
        "format": FORMAT, "version": VERSION, "shard": shard.name, "input": shard.path, "input_sha256": checksum,
        "output": output.name, "output_sha256": hashlib.sha256(data).hexdigest(), "output_rows": len(rows),
        "counts": {"documents": len(sources), "annotated": len(sources) - len(bad), "bad": len(bad),
                   "mentions": sum(len(s.linked) for s in sources if s.doc is not None)},
        "bad": bad, "job": job, "job_fingerprint": job_fingerprint, "biosyn": __version__,
        "seconds": round(time.perf_counter() - started, 3),
    }
    write_json(shard.manifest_path(output_dir), manifest)
    return manifest


def shard_rows(sources: list[Source]) -> list[dict]:
    rows = []
    for position, s in enumerate(sources):
        if s.doc is None or not s.linked:
            rows.append({"document": s.id, "position": position, "start": None, "end": None, "text": None, "type": None,
                         "ids": [], "names": [], "scores": [], "error": s.error if s.doc is None else None})
            continue
        rows += [{"document": s.id, "position": position, **mention_json(m), "error": None} for m in s.linked]
    return rows


def _encode(rows: list[dict], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema()), buffer)
        return buffer.getvalue()
    raise ValueError(f"unknown output format {fmt!r}; choose one of {', '.join(OUTPUT_FORMATS)}")


def parquet_schema():
    import pyarrow as pa

    strings = pa.list_(pa.string())
    return pa.schema([("document", pa.string()), ("position", pa.int64()), ("start", pa.int64()), ("end", pa.int64()),
                      ("text", pa.string()), ("type", pa.string()), ("ids", strings), ("names", strings),
                      ("scores", pa.list_(pa.float64())), ("confidence", pa.float64()), ("error", pa.string())])


def read_rows(path: str | Path) -> list[dict]:
    """The rows of an output shard, JSONL or Parquet (by its suffix)."""
    path = Path(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    from ..data.lines import json_lines

    return json_lines(path)


def shard_to_json(shard: Shard) -> str:
    return json.dumps(asdict(shard))


def shard_from_json(text: str) -> Shard:
    return Shard(**json.loads(text))
