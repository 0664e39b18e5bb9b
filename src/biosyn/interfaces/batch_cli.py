"""`biosyn batch`: corpus-scale annotation on Ray (`biosyn[scale]`), one output shard per input shard.

The driver resolves and checks everything once (the shards, the tagger folder, the linker with its
index, built or taken from the cache), then `biosyn.scale.batch.run_batch` runs the actors. A re-run
skips the shards already done and valid. Exit status: 0 when every shard is done (bad documents are
counted and listed, as `biosyn annotate` does); 1 when a shard is missing or every document was bad;
2 for a usage error.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from ..annotation.sources import BATCH
from ..data.atomic import write_json
from ..data.sources import INPUT_FORMATS
from ..scale.shards import OUTPUT_FORMATS  # Ray and pyarrow are imported only when a job runs

SUMMARY = "batch-summary.json"


def add_parsers(sub) -> None:
    from .cli import _data_options, _linking_options, _model_options

    p = sub.add_parser("batch", help="annotate a corpus of input shards on Ray, restartably (biosyn[scale])",
                       description="Links the mentions of every document of every input shard (JSONL, PubTator, "
                                   "PubMed XML .xml.gz, a folder of .txt files), finding them with the tagger where a "
                                   "document has none, on Ray actors; writes one output shard with a manifest per input "
                                   "shard. A re-run skips the shards already done and valid.")
    p.add_argument("inputs", nargs="+", help="files, folders (of shards, or of .txt documents) or globs (quoted)")
    p.add_argument("--output", required=True, help="folder for the output shards, their manifests and batch-summary.json")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default="jsonl", help="output shards (default jsonl)")
    p.add_argument("--input-format", choices=INPUT_FORMATS,
                   help="default: .jsonl is JSONL, .xml or .xml.gz PubMed XML, a file starting 'PMID|t|' is PubTator, else text")
    p.add_argument("--address", help="join this Ray cluster (e.g. ray://head:10001 or auto); default: start a local Ray")
    p.add_argument("--workers", type=int, help="actors, one CPU each (default: this machine's CPUs; a cluster's CPUs)")
    p.add_argument("--batch-size", type=int, default=BATCH, help=f"documents per model call (default {BATCH})")
    p.add_argument("--retries", type=int, default=3, help="restarts of a dead worker and retries of its shard (default 3)")
    _linking_options(p, without_tagger="; without one, documents without mention spans are counted bad")
    _model_options(p, index=False, rerank=False)
    _data_options(p)


def cmd_batch(args) -> int:
    if importlib.util.find_spec("ray") is None:
        raise ValueError("biosyn batch runs on Ray: pip install 'biosyn[scale]'")
    from ..scale.batch import BatchJob, run_batch
    from ..scale.shards import plan_shards
    from .loading import default_min_score, default_tagger_spec, load_linker, tagger_folder

    shards = plan_shards(args.inputs)
    try:
        tagger = tagger_folder(args.tagger or default_tagger_spec())
    except FileNotFoundError:
        if args.tagger:
            raise
        tagger = None
        print("biosyn batch: no tagger; documents without mention spans will be counted bad", file=sys.stderr)
    linker = load_linker(args.model, index=args.index, vocabulary=args.vocabulary, add_mentions=args.add_mentions,
                         data_dir=args.data_dir, trust_pickle=args.trust_pickle, bf16=args.bf16, backend=args.backend)
    assert linker.index is not None
    index = linker.index.path or linker.index.save(Path(args.output) / ".batch-index")  # the cache could not be written
    job = BatchJob.create(linker, index, tagger, mode=args.mode, min_score=default_min_score(linker, args.min_score, args.mode),
                          min_confidence=args.min_confidence,
                          input_format=args.input_format, output_format=args.format, batch_size=args.batch_size,
                          trust_pickle=args.trust_pickle, bf16=args.bf16, backend=args.backend)
    def done(shard: dict) -> None:
        counts = shard["counts"]
        print(f"done: {shard['shard']}: {counts['documents']} documents, {counts['mentions']} mentions, {counts['bad']} bad",
              file=sys.stderr)

    report = run_batch(shards, args.output, job, workers=args.workers, address=args.address, retries=args.retries, on_done=done)
    summary = report.as_json()
    write_json(Path(args.output) / SUMMARY, summary)
    for name, reason in report.redone.items():
        if reason != "not done":
            print(f"redone: {name}: {reason}", file=sys.stderr)
    for shard, doc_id, error in report.bad:
        print(f"bad: {shard}: {doc_id}: {error}", file=sys.stderr)
    for error in report.errors:
        print(f"ray: {error}", file=sys.stderr)
    for name, reason in report.missing.items():
        print(f"missing: {name}: {reason} (the same command again redoes just the missing shards)", file=sys.stderr)
    counts = summary["counts"]
    print(f"biosyn batch: {len(shards)} shards: {len(report.manifests) - len(report.skipped)} done now, "
          f"{len(report.skipped)} already done, {len(report.missing)} missing; {counts['documents']} documents, "
          f"{counts['annotated']} annotated, {counts['mentions']} mentions, {counts['bad']} bad; wrote {args.output}",
          file=sys.stderr)
    return 1 if report.missing or (counts["documents"] and not counts["annotated"]) else 0


COMMANDS = {"batch": cmd_batch}
