"""The `biosyn` command.

Exit status: 0 on success; 2 when the command or its input is wrong (bad arguments, a malformed
or unreadable input file, a path that is missing, of the wrong kind or not permitted, an index
that is damaged or does not fit); 1 when the system fails under a correct command (a full or
read-only disk, an I/O error, out of memory). Either way one line on standard error says why
and names the file, without a traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
import time
from pathlib import Path

from ..data.locate import CORPORA, VOCABULARIES, data_dir
from ..data.vocabularies import FORMATS as VOCABULARY_FORMATS
from ..encoders.onnx import BACKEND_HELP, BACKENDS
from ..scale.index_parts import PART_SIZE
from ..search.index import APPROXIMATE_KINDS, DENSE_DTYPES, IVF_NPROBE, IVFPQ_CANDIDATES, IVFPQ_CODES_SCANNED
from ..search.scoring import MODES
from . import batch_cli, export_cli, tagger_cli, training_cli
from .annotate_files import add_annotate_parser, cmd_annotate
from .normalize_files import FORMATS as FILE_FORMATS
from .server.cli import add_serve_parser, cmd_serve

log = logging.getLogger("biosyn")

MODEL_HELP = ("model: 'minilm' (the packaged all-MiniLM-L6-v2, zero-shot), 'sparse' (TF-IDF only), a biosyn model "
              "folder, a released BioSyn checkpoint folder, or a hub id such as dmis-lab/biosyn-sapbert-ncbi-disease "
              "(needs network). Default: $BIOSYN_MODEL, else runs/ncbi-disease/model when trained, else minilm")


def _data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data folder (default: $BIOSYN_DATA_DIR, else the `biosyn data fetch` cache)")


def _model_options(p: argparse.ArgumentParser, *, index: bool = True, rerank: bool = True) -> None:
    from .loading import RERANK_HELP

    p.add_argument("--model", help=MODEL_HELP)
    if rerank:
        p.add_argument("--rerank", metavar="FOLDER", help=RERANK_HELP)
    p.add_argument("--mode", choices=MODES, help="scoring (default: hybrid when the model has an encoder)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle a released checkpoint's sparse_encoder.pk instead of refitting it (runs code from the file)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for embedding on CPU (torch backend)")
    p.add_argument("--backend", choices=BACKENDS, help=BACKEND_HELP)
    if index:
        p.add_argument("--index", help="a saved index (`biosyn index build`); default: build or reuse a cached one")
        p.add_argument("--approximate", action="store_true", help="search the index's FAISS part and postings (built with `biosyn index build --approximate-kind ... --postings`)")


def _linking_options(p: argparse.ArgumentParser, *, without_tagger: str = "") -> None:
    """What `annotate` and `batch` share: the tagger, the link threshold and the vocabulary or index."""
    from ..model.presets import SURE_SPAN_CONFIDENCE
    from .loading import MIN_CONFIDENCE_HELP, MIN_SCORE_HELP, TAGGER_DEFAULT

    p.add_argument("--tagger", help=f"tagger folder or hub id (default: $BIOSYN_TAGGER, else {TAGGER_DEFAULT}{without_tagger})")
    p.add_argument("--min-score", type=float, help=MIN_SCORE_HELP)
    p.add_argument("--min-confidence", type=float, default=SURE_SPAN_CONFIDENCE, help=MIN_CONFIDENCE_HELP)
    p.add_argument("--vocabulary", default="medic-2012", help="vocabulary name or file, when no --index is given")
    p.add_argument("--add-mentions", metavar="CORPUS:SPLITS", default=None,
                   help="also match a corpus's annotated mentions (default for MEDIC: ncbi-disease:train,dev when present)")
    p.add_argument("--index", help="a saved index (`biosyn index build`); default: build or reuse a cached one")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biosyn", description="Biomedical entity normalisation with BioSyn.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="get and inspect the corpora and vocabularies")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    fetch = data_sub.add_parser("fetch", help="download the NCBI disease and BC5CDR corpora, MEDIC 2012 and CTD's current vocabulary (needs network)")
    fetch.add_argument("names", nargs="*", default=["ncbi-disease", "medic-2012", "ctd", "bc5cdr"], help="data sets (default: all)")
    fetch.add_argument("--force", action="store_true", help="download again even when a verified copy exists")
    _data_options(fetch)
    info = data_sub.add_parser("info", help="count documents, mentions, concepts and names in the data folder")
    _data_options(info)

    ev = sub.add_parser("evaluate", help="Acc@1..k of a model under BioSyn's protocol",
                        description="Ranks every query against the protocol's dictionary and prints Acc@1..k (lenient, "
                                    "as BioSyn, and strict), per mention type.")
    ev.add_argument("--corpus", default="ncbi-disease", choices=sorted(CORPORA))
    ev.add_argument("--split", default="test", choices=("train", "dev", "test"))
    ev.add_argument("--vocabulary", help=f"vocabulary name ({', '.join(VOCABULARIES)}) or file; default: the corpus's")
    ev.add_argument("--queries", help="your own queries instead of a corpus split: a PubTator file, or BioSyn's "
                    "preprocessed .concept file or folder (used as they are)")
    ev.add_argument("--dictionary", help="with --queries: a BioSyn `CUI||name` dictionary to search instead of the vocabulary's names")
    ev.add_argument("-k", type=int, default=5, help="report Acc@1..k (default 5)")
    ev.add_argument("--drop-unknown", action=argparse.BooleanOptionalAction,
                    help="leave out queries whose gold IDs are not in the vocabulary (default: the corpus's protocol, "
                         "as BioSyn: yes for bc5cdr-disease, no for ncbi-disease, no for --queries)")
    ev.add_argument("--no-abbreviations", action="store_true", help="skip Ab3P abbreviation resolution")
    ev.add_argument("--no-composites", action="store_true", help="do not split composite mentions")
    ev.add_argument("--predictions", help="write each query's candidates and ranks here (JSONL)")
    ev.add_argument("--output", help="write the figures here (JSON)")
    _model_options(ev)
    _data_options(ev)

    idx = sub.add_parser("index", help="embed a vocabulary once into a reusable index")
    idx_sub = idx.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    build = idx_sub.add_parser("build", help="build an index for a model and a vocabulary")
    build.add_argument("output", help="index folder to write")
    build.add_argument("--force", action="store_true",
                       help="write into OUTPUT even when it is a non-empty folder that is not an index (its content is deleted)")
    build.add_argument("--vocabulary", default="medic-2012", help="vocabulary name or file (MEDIC, CTD TSV, TSV, JSONL, BioSyn dictionary)")
    build.add_argument("--vocabulary-format", choices=VOCABULARY_FORMATS)
    build.add_argument("--add-mentions", metavar="CORPUS:SPLITS", help="also index a corpus's annotated mentions, e.g. ncbi-disease:train,dev")
    build.add_argument("--approximate-kind", choices=APPROXIMATE_KINDS,
                       help="add an approximate FAISS index (ivfpq: compact codes, re-scored exactly; for millions of names)")
    build.add_argument("--nprobe", type=int, help=f"ivf/ivfpq: lists searched a query (default {IVF_NPROBE} for ivf; for ivfpq enough "
                       f"to scan about {IVFPQ_CODES_SCANNED:,} names, at most a quarter of the lists)")
    build.add_argument("--candidates", type=int, help="approximate search: names fetched from FAISS and re-scored exactly "
                                                      f"(default {IVFPQ_CANDIDATES} for ivfpq, else 4k and at least 64)")
    build.add_argument("--dense-dtype", choices=DENSE_DTYPES, default="float32",
                       help="how dense rows are stored (float16: half the disk and page cache; default float32)")
    build.add_argument("--postings", action="store_true",
                       help="add sparse postings, so that approximate search scores only the names sharing a query's rarest n-grams")
    build.add_argument("--workers", type=int, default=0,
                       help="embed the names in parts on this many Ray workers (biosyn[scale]); default 0: in this process")
    build.add_argument("--address", help="with --workers: a running Ray cluster to join ('auto', ray://HOST:10001); default: a local Ray")
    build.add_argument("--part-size", type=int, default=PART_SIZE, help=f"with --workers: names a part (default {PART_SIZE})")
    _model_options(build, index=False, rerank=False)
    _data_options(build)

    norm = sub.add_parser("normalize", help="normalise mentions given as arguments or in a file",
                          description="Prints the top candidates of each mention, or fills in concept IDs in a TSV, "
                                      "JSONL or PubTator file.")
    norm.add_argument("mentions", nargs="*", help="mentions to normalise")
    norm.add_argument("-k", type=int, default=5, help="candidates per mention (default 5)")
    norm.add_argument("--input", help="a file of mentions: .tsv (mention[, document text]), .jsonl ({\"mention\", \"text\"}) or PubTator")
    norm.add_argument("--output", help="where to write the file with IDs filled in (same format as --input)")
    norm.add_argument("--format", choices=FILE_FORMATS,
                      help="format of --input (default: by the name's .tsv or .jsonl, else by the first line's content)")
    norm.add_argument("--vocabulary", default="medic-2012", help="vocabulary name or file")
    norm.add_argument("--add-mentions", metavar="CORPUS:SPLITS", default=None,
                      help="also match a corpus's annotated mentions (default for MEDIC: ncbi-disease:train,dev when present)")
    norm.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _model_options(norm)
    _data_options(norm)

    add_annotate_parser(sub)
    add_serve_parser(sub)
    training_cli.add_parsers(sub)
    tagger_cli.add_parsers(sub)
    batch_cli.add_parsers(sub)
    export_cli.add_export_parser(sub)
    return parser


# OS errors that mean the command named a wrong path, not that the system failed.
_USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "port", None) is not None and not 0 <= args.port <= 65535:
            raise ValueError(f"--port {args.port}: a port is a number from 0 to 65535")
        return COMMANDS[args.command](args)
    except (ValueError, RecursionError) + _USER_OS_ERRORS as error:
        print(f"biosyn: error: {_describe(error)}", file=sys.stderr)
        return 2
    except (OSError, MemoryError) as error:
        print(f"biosyn: error: {_describe(error)}", file=sys.stderr)
        return 1


def _describe(error: BaseException) -> str:
    """One line that names the file an OS error is about."""
    if isinstance(error, RecursionError):
        return f"input nested too deeply to read ({error})"
    if isinstance(error, OSError) and error.filename is not None:
        where = str(error.filename) + (f" -> {error.filename2}" if error.filename2 is not None else "")
        return f"{where}: {error.strerror or errno.errorcode.get(error.errno or 0, str(error))}"
    return str(error) or type(error).__name__


def cmd_data(args) -> int:
    root = data_dir(args.data_dir)
    if args.data_command == "fetch":
        from ..data.fetch import fetch

        for path in fetch(args.names, root, force=args.force):
            print(f"wrote {path}")
        print(f"data folder: {root}")
        return 0
    from ..data.locate import data_file
    from ..data.pubtator import read_pubtator
    from ..data.vocabularies import load_vocabulary

    print(f"data folder: {root}")
    for name, files in CORPORA.items():
        for split, rel in files.splits.items():
            try:
                docs = read_pubtator(data_file(rel, root))
                print(f"  {name}/{split}: {len(docs)} documents, {sum(len(d.mentions) for d in docs)} mentions")
            except FileNotFoundError:
                print(f"  {name}/{split}: missing ({rel})")
    for name in VOCABULARIES:
        try:
            vocab = load_vocabulary(name, data_dir=root)
            print(f"  {name}: {len(vocab)} concepts, {vocab.n_names} names")
        except FileNotFoundError:
            print(f"  {name}: missing ({VOCABULARIES[name]})")
    return 0


def cmd_evaluate(args) -> int:
    from ..evaluation.evaluate import run_evaluation, write_predictions
    from ..evaluation.protocol import load_benchmark
    from ..preprocess.corpus import corpus_preprocessor
    from .loading import attach_index, load_model, with_reranker

    started = time.perf_counter()
    preprocessor = corpus_preprocessor(args.corpus, args.data_dir, resolve_abbreviations=not args.no_abbreviations,
                                       split_composites=not args.no_composites)
    if args.queries:
        from ..data.biosyn_files import read_dictionary
        from ..data.locate import corpus as corpus_files
        from ..data.vocabularies import load_vocabulary
        from ..evaluation.protocol import custom_benchmark, read_queries

        vocabulary = load_vocabulary(args.vocabulary or corpus_files(args.corpus).vocabulary, data_dir=args.data_dir)
        benchmark = custom_benchmark(read_queries(args.queries, preprocessor), vocabulary, preprocessor=preprocessor,
                                     dictionary=read_dictionary(args.dictionary) if args.dictionary else None,
                                     name=str(args.queries), drop_unknown=bool(args.drop_unknown))
    else:
        benchmark = load_benchmark(args.corpus, args.split, data_dir=args.data_dir, vocabulary=args.vocabulary,
                                   drop_unknown=args.drop_unknown, preprocessor=preprocessor)
    prepared = time.perf_counter()
    model = load_model(args.model, trust_pickle=args.trust_pickle, bf16=args.bf16, backend=args.backend)
    attach_index(model, benchmark.dictionary, benchmark.vocabulary, index_dir=args.index)
    with_reranker(model, args.rerank)
    indexed = time.perf_counter()
    evaluation = run_evaluation(model, benchmark, k=args.k, mode=args.mode, approximate=args.approximate)
    mode = args.mode or model.default_mode
    report = evaluation.report(benchmark, model=model.spec, mode=mode, sparse_weight=model.sparse_weight,
                               similarity=model.similarity)
    report["seconds"] = {"prepare": round(prepared - started, 2), "model_and_index": round(indexed - prepared, 2),
                         **evaluation.seconds, "total": round(time.perf_counter() - started, 2)}
    _print_report(report)
    if args.predictions:
        write_predictions(args.predictions, benchmark.queries, evaluation)
        print(f"predictions: {args.predictions}")
    if args.output:
        from ..data.atomic import write_json

        write_json(args.output, report)
        print(f"figures: {args.output}")
    return 0


def _print_report(report: dict) -> None:
    print(f"{report['benchmark']}: {report['queries']} queries, dictionary of {report['dictionary_names']} names, "
          f"model {report['model']} ({report['mode']})")
    if report["dropped_without_gold"] or report["dropped_unknown_ids"] or report["kept_unknown_ids"]:
        print(f"  left out: {report['dropped_without_gold']} without gold IDs, {report['dropped_unknown_ids']} with unknown IDs; "
              f"kept {report['kept_unknown_ids']} with unknown IDs")
    print("  lenient (BioSyn): " + "  ".join(f"{k}={v:.2f}" for k, v in report["acc"].items()))
    print("  strict:           " + "  ".join(f"{k}={v:.2f}" for k, v in report["strict"].items()))
    for mtype, row in report["by_type"].items():
        figures = "  ".join(f"{k}={v:.2f}" for k, v in row.items() if k.startswith("acc@"))
        print(f"  {mtype:<17} n={row['queries']:<4} {figures}")
    print("  seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))


def cmd_index(args) -> int:
    from .loading import load_model
    from .vocabulary_setup import dictionary_for

    check_index_target(args.output, force=args.force)
    if args.workers < 0:
        raise ValueError(f"--workers {args.workers}: give 0 (in this process) or more")
    model = load_model(args.model, trust_pickle=args.trust_pickle, bf16=args.bf16, backend=args.backend)
    vocabulary, dictionary = dictionary_for(args.vocabulary, args.vocabulary_format, args.add_mentions, args.data_dir)
    started = time.perf_counter()
    manifest = {"model": model.spec, "vocabulary": str(args.vocabulary), "mentions": args.add_mentions}
    if args.workers:
        from ..scale.index_parts import build_index_in_parts

        index = build_index_in_parts(model, dictionary, vocabulary, workers=args.workers, address=args.address,
                                     part_size=args.part_size, dense_dtype=args.dense_dtype, manifest=manifest)
    else:
        index = model.build_index(dictionary, vocabulary, dense=model.encoder is not None, progress=True, manifest=manifest,
                                  dense_dtype=args.dense_dtype)
    if args.approximate_kind:
        index.add_faiss(args.approximate_kind, nprobe=args.nprobe, candidates=args.candidates)
    if args.postings:
        index.add_postings()
    index.save(args.output)
    print(f"index of {len(index)} names ({'dense + sparse' if index.has_dense else 'sparse only'}) written to {args.output} "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def check_index_target(output: str, *, force: bool) -> None:
    """`index build` replaces OUTPUT whole: refuse a file, or a non-empty folder that is not an
    index (its content would be deleted), unless forced."""
    from ..search.index import MANIFEST

    path = Path(output)
    if path.exists() and not path.is_dir():
        raise FileExistsError(errno.EEXIST, "exists and is not a folder; an index is a folder", str(path))
    if path.is_dir() and not (path / MANIFEST).is_file() and any(path.iterdir()) and not force:
        raise FileExistsError(errno.EEXIST, "is a non-empty folder that is not a biosyn index; building would delete "
                                            "its content (pass --force to do so, or choose another folder)", str(path))


def cmd_normalize(args) -> int:
    from .loading import load_linker, with_reranker
    from .normalize_files import normalize_file, print_results

    if not args.mentions and not args.input:
        raise ValueError("give mentions as arguments or a file with --input")
    model = load_linker(args.model, index=args.index, vocabulary=args.vocabulary, add_mentions=args.add_mentions,
                        data_dir=args.data_dir, trust_pickle=args.trust_pickle, bf16=args.bf16, backend=args.backend)
    with_reranker(model, args.rerank)
    if args.input:
        written, skipped = normalize_file(model, args.input, args.output, k=args.k, mode=args.mode, approximate=args.approximate,
                                          format=args.format)
        print(f"normalised {written} mentions into {args.output or 'standard output'}" + (f"; skipped {skipped} bad records" if skipped else ""),
              file=sys.stderr)
    if args.mentions:
        results = model.normalize(args.mentions, k=args.k, mode=args.mode, approximate=args.approximate)
        print_results(results, as_json=args.json)
    return 0


COMMANDS = {"data": cmd_data, "evaluate": cmd_evaluate, "index": cmd_index, "normalize": cmd_normalize, "annotate": cmd_annotate,
            "serve": cmd_serve,
            **training_cli.COMMANDS, **tagger_cli.COMMANDS, **batch_cli.COMMANDS, **export_cli.COMMANDS}


if __name__ == "__main__":
    sys.exit(main())
