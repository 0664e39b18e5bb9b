"""`biosyn tagger train` and `biosyn tagger evaluate`: the disease tagger's training and its scores,
alone (NER) and joined to the linker (text to concept IDs)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..data.locate import CORPORA
from ..data.records import Document
from ..encoders.onnx import BACKEND_HELP, BACKENDS
from ..model.presets import SURE_SPAN_CONFIDENCE
from ..search.scoring import MODES
from ..training.config import TaggerTrainingConfig
from .loading import MIN_CONFIDENCE_HELP, MIN_SCORE_HELP, TAGGER_DEFAULT as DEFAULT_TAGGER


def add_parsers(sub) -> None:
    tagger = sub.add_parser("tagger", help="train and evaluate the disease tagger (NER) and text-to-IDs annotation")
    actions = tagger.add_subparsers(dest="tagger_command", required=True, metavar="ACTION")

    train = actions.add_parser("train", help="fine-tune a token-classification tagger on a corpus's training split",
                               description="BIO tags on whole documents (every mention type is one Disease type), read "
                                           "through overlapping windows; the epoch with the best dev F1 is kept.")
    train.add_argument("--output", default=str(DEFAULT_TAGGER), help=f"tagger folder to write (default {DEFAULT_TAGGER})")
    train.add_argument("--corpus", default="ncbi-disease", choices=sorted(CORPORA), help="training corpus; its dev split chooses the epoch")
    train.add_argument("--add-corpus", action="append", default=[], metavar="CORPUS",
                       help="also train on this corpus's training split (repeatable), e.g. bc5cdr-disease")
    train.add_argument("--train-splits", default="train", help="splits of --corpus to train on, comma-separated (default train)")
    train.add_argument("--base", default="minilm", help="base encoder: 'minilm' (the packaged all-MiniLM-L6-v2) or a transformers folder")
    # The defaults are the shipped tagger's recipe (e2 in docs/tagger.md), so `make run` trains that tagger.
    train.add_argument("--epochs", type=int, default=TaggerTrainingConfig.epochs)
    train.add_argument("--lr", type=float, default=TaggerTrainingConfig.lr)
    train.add_argument("--batch-size", type=int, default=TaggerTrainingConfig.batch_size)
    train.add_argument("--layers", type=int, help="keep only the base encoder's first N layers (faster to train and run, "
                                                  "less accurate; default: all)")
    train.add_argument("--teacher", help="a trained tagger folder with the same tokenizer whose tag distributions are "
                                         "distilled into the new tagger (e.g. a 6-layer one into --layers 3)")
    train.add_argument("--distill", type=float, default=TaggerTrainingConfig.distill,
                       help=f"with --teacher: weight of its soft labels (default {TaggerTrainingConfig.distill})")
    train.add_argument("--warmup", type=float, default=TaggerTrainingConfig.warmup, help="share of steps spent warming up (then linear decay)")
    train.add_argument("--max-length", type=int, default=128, help="tokens per window (default 128)")
    train.add_argument("--overlap", type=int, default=16, help="tokens shared by neighbouring training windows (default 16)")
    train.add_argument("--propagate", action="store_true", help="save the tagger with document-level propagation on")
    train.add_argument("--seed", type=int, default=TaggerTrainingConfig.seed)
    train.add_argument("--device", help="torch device (default: cuda when there is one, else cpu)")
    train.add_argument("--no-dev", action="store_true", help="train every epoch without choosing on dev")
    _common(train)

    ev = actions.add_parser("evaluate", help="NER and joint NER+normalisation scores on a corpus split",
                            description="Tags the split's raw text and links every found span. Prints exact-span NER "
                                        "P/R/F1, joint mention-level P/R/F1 (span and concepts right), document-level "
                                        "concept P/R/F1 (DNorm/TaggerOne's normalisation score), and, for comparison, "
                                        "mention-level scores of linking the gold spans.")
    ev.add_argument("--tagger", help=f"tagger folder (default: $BIOSYN_TAGGER, else {DEFAULT_TAGGER})")
    ev.add_argument("--corpus", default="ncbi-disease", choices=sorted(CORPORA))
    ev.add_argument("--split", default="test", choices=("train", "dev", "test"))
    ev.add_argument("--propagate", action=argparse.BooleanOptionalAction,
                    help="document-level propagation of tagged strings (default: as the tagger was saved)")
    ev.add_argument("--abbreviations", action=argparse.BooleanOptionalAction,
                    help="tag the Ab3P short forms of tagged long forms (default: as saved)")
    ev.add_argument("--window", type=int, help="tokens per window (default: as saved)")
    ev.add_argument("--overlap", type=int, help="tokens shared by neighbouring windows (default: as saved)")
    ev.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the tagger (CPU)")
    ev.add_argument("--lexicon", action=argparse.BooleanOptionalAction,
                    help="add the training lexicon's strings where the tagger found nothing (default: as saved)")
    ev.add_argument("--lexicon-min-ratio", type=float, help="keep lexicon strings annotated at least this often in training")
    ev.add_argument("--ner-only", action="store_true", help="score the tagger alone (no linker)")
    ev.add_argument("--predictions", help="write the annotated documents here (PubTator)")
    ev.add_argument("--from-predictions", help="score this PubTator file of annotated documents instead of running the models")
    ev.add_argument("--output", help="write the figures here (JSON)")
    ev.add_argument("--model", help="linker (as for `biosyn evaluate`; default: the trained model, else minilm)")
    ev.add_argument("--min-score", type=float, help=MIN_SCORE_HELP)
    ev.add_argument("--min-confidence", type=float, default=SURE_SPAN_CONFIDENCE, help=MIN_CONFIDENCE_HELP)
    ev.add_argument("--min-score-sweep", type=_scores, metavar="T1,T2,...",
                    help="also score the found spans at each of these link-score thresholds, from the same tagging and "
                         "linking (to choose --min-score for a linker on dev)")
    ev.add_argument("--mode", choices=MODES, help="the linker's scoring (default: hybrid when it has an encoder)")
    ev.add_argument("--bf16", action="store_true", help="bf16 autocast for the linker's embedding (torch backend)")
    ev.add_argument("--backend", choices=BACKENDS, help=BACKEND_HELP)
    _common(ev)


def _scores(text: str) -> list[float]:
    try:
        return sorted({float(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="data folder (default: $BIOSYN_DATA_DIR, else the `biosyn data fetch` cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def tagger_overrides(args) -> dict:
    """The TaggerOptions that command-line flags set (unset flags keep the saved options)."""
    given = {"max_length": args.window, "overlap": args.overlap, "propagate": args.propagate,
             "abbreviations": args.abbreviations, "int8": args.int8 or None,
             "lexicon": args.lexicon, "lexicon_min_ratio": args.lexicon_min_ratio}
    return {k: v for k, v in given.items() if v is not None}


def read_split(corpus: str, split: str, data_dir=None):
    """A corpus split's documents with its entity types only; a repeated PMID is read once."""
    from ..data.locate import corpus as corpus_files, data_file
    from ..data.pubtator import read_pubtator

    files = corpus_files(corpus)
    docs = read_pubtator(data_file(files.splits[split], data_dir), types=files.entity_types)
    first: dict[str, Document] = {}
    for d in docs:
        first.setdefault(d.pmid, d)
    return list(first.values())


def tagged_documents(tagger, docs, *, progress: bool = False) -> list[Document]:
    """Copies of `docs` whose mentions are the ones the tagger finds in their text."""
    found = tagger.tag([d.text for d in docs], progress=progress)
    return [Document(d.pmid, d.title, d.abstract, spans) for d, spans in zip(docs, found)]


def cmd_tagger(args) -> int:
    return {"train": cmd_train, "evaluate": cmd_evaluate}[args.tagger_command](args)


def cmd_train(args) -> int:
    from ..data.atomic import atomic_dir
    from ..evaluation.annotation import span_scores
    from ..model.presets import base_encoder_folder
    from ..ner.lexicon import Lexicon
    from ..ner.tagger import DiseaseTagger, TaggerOptions
    from ..training.tagger import train_tagger
    from ..training.tagger_card import render_tagger_card

    train_docs = [d for split in args.train_splits.split(",") for d in read_split(args.corpus, split.strip(), args.data_dir)]
    sources = {f"{args.corpus}:{args.train_splits}": len(train_docs)}
    for extra in args.add_corpus:
        docs = read_split(extra, "train", args.data_dir)
        sources[f"{extra}:train"] = len(docs)
        train_docs += docs
    dev = None if args.no_dev else read_split(args.corpus, "dev", args.data_dir)
    base = base_encoder_folder(args.base)
    tagger = DiseaseTagger.from_base(base, TaggerOptions(max_length=args.max_length, overlap=args.overlap,
                                                         propagate=args.propagate), device=args.device, layers=args.layers)
    inference_overlap = TaggerOptions().overlap

    def dev_f1(t: DiseaseTagger) -> float:
        assert dev is not None  # only called with a dev split
        return span_scores(dev, tagged_documents(t, dev)).f1

    config = TaggerTrainingConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, warmup=args.warmup, seed=args.seed,
                                  distill=args.distill)
    teacher = None
    if args.teacher:
        teacher = DiseaseTagger.from_pretrained(args.teacher, device=args.device)
        if teacher.tokenizer.get_vocab() != tagger.tokenizer.get_vocab():
            raise ValueError(f"--teacher {args.teacher}: its tokenizer differs from the base encoder's; distilling needs the same")
        teacher.spec = args.teacher
    print(f"training on {len(train_docs)} documents ({', '.join(f'{k} {v}' for k, v in sources.items())})", file=sys.stderr)
    record = train_tagger(tagger, train_docs, config, evaluate=None if dev is None else dev_f1, progress=not args.quiet,
                          teacher=teacher)
    tagger.options.overlap = inference_overlap
    tagger.lexicon = Lexicon.learn(train_docs)
    results = {}
    if dev is not None:
        results[f"{args.corpus}/dev"] = span_scores(dev, tagged_documents(tagger, dev)).as_dict()
    tagger.metadata = {"base_model": str(args.base), "training_data": sources, "training": record, "results": results,
                       "command": "biosyn " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("biosyn") else None}
    with atomic_dir(args.output) as folder:
        tagger.save_pretrained(folder, card=render_tagger_card(tagger.metadata, tagger.options))
    print(json.dumps({"output": args.output, "seconds": record["seconds"], "epochs": record["epochs"], "results": results}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from ..data.atomic import write_json
    from ..data.pubtator import read_pubtator, write_pubtator
    from ..evaluation.annotation import mention_concept_scores, span_scores
    from ..evaluation.protocol import load_benchmark

    gold = read_split(args.corpus, args.split, args.data_dir)
    report: dict = {"benchmark": f"{args.corpus}/{args.split}", "documents": len(gold),
                    "gold_mentions": sum(len(d.mentions) for d in gold), "seconds": {}}
    benchmark = None if args.ner_only else load_benchmark(args.corpus, args.split, data_dir=args.data_dir)
    resolve = None if benchmark is None else (lambda i: benchmark.vocabulary.resolve(i) or i)
    if args.from_predictions:
        found = read_pubtator(args.from_predictions)
        report["predictions"] = str(args.from_predictions)
    else:
        from ..annotation.annotator import Annotator, confident, linked_document
        from .loading import attach_index, default_min_score, load_model, load_tagger

        tagger = load_tagger(args.tagger, tagger_overrides(args), backend=args.backend)
        blank = [Document(d.pmid, d.title, d.abstract) for d in gold]
        if args.ner_only:
            started = time.perf_counter()
            found = tagged_documents(tagger, blank, progress=not args.quiet)
            report["seconds"]["tagger"] = round(time.perf_counter() - started, 2)
        else:
            assert benchmark is not None  # read unless --ner-only
            linker = load_model(args.model, bf16=args.bf16, backend=args.backend)
            attach_index(linker, benchmark.dictionary, benchmark.vocabulary, progress=not args.quiet)
            min_score = default_min_score(linker, args.min_score, args.mode)
            annotator = Annotator(tagger, linker, mode=args.mode)  # every found span; thresholds below
            linked = annotator.annotate_spans([d.text for d in blank], [None] * len(blank))
            at = lambda threshold: [linked_document(d, confident(ms, threshold, args.min_confidence))  # noqa: E731
                                    for d, ms in zip(blank, linked)]
            report["min_score"], report["min_confidence"] = min_score, args.min_confidence
            found = at(min_score)
            if args.min_score_sweep:
                report["min_score_sweep"] = {str(t): _joint_scores(gold, at(t), resolve) for t in [None, *args.min_score_sweep]}
            report["seconds"].update(tagger=round(annotator.timings.tagger, 2), linker=round(annotator.timings.linker, 2))
            gold_linked = Annotator(None, linker, mode=args.mode).annotate_documents(gold, find=False)
            report["gold_spans"] = {"mention": mention_concept_scores(gold, gold_linked, resolve).as_dict()}
            report["model"] = linker.spec
        report["tagger"] = {"spec": tagger.spec, "options": vars(tagger.options)}
    if args.ner_only:
        report["ner"] = span_scores(gold, found).as_dict()
    else:
        report["joint"] = _joint_scores(gold, found, resolve)
        report["ner"] = report["joint"].pop("ner")
    report["ner_recall_by_type"] = _recall_by_type(gold, found)
    _print(report)
    if args.predictions:
        write_pubtator(found, args.predictions)
        print(f"predictions: {args.predictions}")
    if args.output:
        write_json(args.output, report)
        print(f"figures: {args.output}")
    return 0


def _joint_scores(gold, found, resolve) -> dict:
    from ..evaluation.annotation import document_concept_scores, mention_concept_scores, span_scores

    return {"ner": span_scores(gold, found).as_dict(), "mention": mention_concept_scores(gold, found, resolve).as_dict(),
            "document": document_concept_scores(gold, found, resolve).as_dict()}


def _recall_by_type(gold, found) -> dict:
    by_type: dict[str, list[int]] = {}
    for g, f in zip(gold, found):
        spans = {(m.start, m.end) for m in f.mentions}
        for m in g.mentions:
            hit = by_type.setdefault(m.type, [0, 0])
            hit[0] += (m.start, m.end) in spans
            hit[1] += 1
    return {t: {"recall": round(100 * h / n, 2), "mentions": n} for t, (h, n) in sorted(by_type.items())}


def _print(report: dict) -> None:
    def row(name: str, s: dict) -> str:
        return f"  {name:<28} P={s['precision']:.2f}  R={s['recall']:.2f}  F1={s['f1']:.2f}  (tp {s['tp']}, fp {s['fp']}, fn {s['fn']})"

    print(f"{report['benchmark']}: {report['documents']} documents, {report['gold_mentions']} gold mentions")
    print(row("NER, exact span", report["ner"]))
    if "joint" in report:
        print(row("NER+NEN, mention", report["joint"]["mention"]))
        print(row("NER+NEN, document concepts", report["joint"]["document"]))
    if "gold_spans" in report:
        print(row("NEN on gold spans, mention", report["gold_spans"]["mention"]))
    for threshold, scores in report.get("min_score_sweep", {}).items():
        print(f"  min score {threshold:>5}: NER F1 {scores['ner']['f1']:.2f}, mention F1 {scores['mention']['f1']:.2f}, "
              f"document P/R/F1 {scores['document']['precision']:.2f} / {scores['document']['recall']:.2f} / {scores['document']['f1']:.2f}")
    print("  NER recall by type: " + ", ".join(f"{t} {v['recall']:.2f} (n={v['mentions']})" for t, v in report["ner_recall_by_type"].items()))
    if report["seconds"]:
        print("  seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()))


COMMANDS = {"tagger": cmd_tagger}
