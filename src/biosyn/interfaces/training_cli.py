"""`biosyn train`, `biosyn pretrain` and `biosyn reproduce`: parsers and commands for the main CLI.

The main CLI adds these with `add_parsers(subparsers)` and dispatches `COMMANDS[args.command](args)`.
`python -m biosyn.interfaces.training_cli ...` runs them on their own. Parsing ends here: the
training layer gets config objects (`TrainConfig`, `PretrainConfig`, `ReproduceConfig`).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from ..data.locate import CORPORA
from ..model.rerank import CandidateText, RerankerOptions
from ..search.scoring import SIMILARITIES
from ..training.config import PretrainConfig, RerankTrainingConfig, TrainConfig

DEVICE_HELP = "torch device for the encoder, e.g. cpu, cuda, cuda:1 (default: cuda when there is one, else cpu)"
NO_BF16_HELP = ("fp32 throughout (default: bf16 autocast where the device computes bf16 natively: a GPU, or a CPU with "
                "AVX512-BF16 or AMX; elsewhere fp32, as emulated bf16 is many times slower)")
BASE_HELP = "base encoder: 'minilm' (the packaged all-MiniLM-L6-v2), a biosyn model folder (e.g. `biosyn pretrain` output) or a transformers folder"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", default="ncbi-disease", choices=sorted(CORPORA))
    p.add_argument("--vocabulary", help="vocabulary name or file (default: the corpus's)")
    p.add_argument("--data-dir", help="data folder (default: $BIOSYN_DATA_DIR, else the `biosyn data fetch` cache)")
    p.add_argument("--model", default="minilm", help=BASE_HELP)
    p.add_argument("--pooling", choices=("cls", "mean"), help="default: mean for MiniLM, else the encoder's")
    p.add_argument("--max-length", type=int, default=TrainConfig.max_length)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--no-bf16", action="store_true", help=NO_BF16_HELP)
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--similarity", choices=SIMILARITIES, default="cosine",
                   help="dense score: BioSyn's inner product, or cosine × --scale (default cosine)")
    p.add_argument("--scale", type=float, default=20.0, help="cosine scale (default 20)")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--schedule", choices=("constant", "linear"), default=TrainConfig.schedule,
                   help="learning rate: constant (BioSyn) or linear warm-up then decay to 0 over all epochs")
    p.add_argument("--warmup", type=float, default=TrainConfig.warmup, help="fraction of all steps spent warming up (linear schedule)")
    p.add_argument("--sparse-lr", type=float, default=TrainConfig.sparse_lr)
    p.add_argument("--sparse-weight-init", type=float, default=TrainConfig.sparse_weight_init)
    p.add_argument("--topk", type=int, default=TrainConfig.topk)
    p.add_argument("--dense-ratio", type=float, default=TrainConfig.dense_ratio)
    p.add_argument("--add-gold", action="store_true",
                   help="beyond BioSyn: a query whose candidates hold no positive gets its best gold name in place of the last one")
    p.add_argument("--slow", action="store_true", help="BioSyn's encoding (every sequence, padded to max length), for timing")
    p.add_argument("--max-steps", type=int, help="steps per epoch (probes)")
    p.add_argument("--add-corpus", action="append", default=[], metavar="CORPUS", choices=sorted(CORPORA),
                   help="also train on this corpus's training split (repeatable), e.g. bc5cdr-disease; beyond BioSyn's "
                        "protocol, whose published models train on one corpus, so report such figures apart")


def _pretrain_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    steps = PretrainConfig.steps
    p.add_argument(f"--{prefix}steps", type=int, default=steps, help=f"pre-training steps (default {steps})")
    p.add_argument(f"--{prefix}batch-size", type=int, default=PretrainConfig.batch_size, help="concepts per pre-training step (2 names each)")
    p.add_argument(f"--{prefix}lr", type=float, default=PretrainConfig.lr)
    p.add_argument(f"--{prefix}mention-share", type=float, default=PretrainConfig.mention_share,
                   help="with training mentions: share of each batch pairing a mention with a name of its concept")
    p.add_argument(f"--{prefix}neighbours", type=int, default=PretrainConfig.neighbours, metavar="G",
                   help="build batches of groups of G nearby concepts, G >= 2 (hard negatives; default 0: random concepts)")


def add_parsers(subparsers) -> None:
    train = subparsers.add_parser("train", help="train a BioSyn model (synonym marginalisation) on a corpus",
                                  description="Trains on the corpus's training queries against the vocabulary; saves "
                                              "<output>/model after every epoch, a JSONL log and a PNG plot.")
    train.add_argument("--splits", default="train", help="training splits, comma-separated (default train; train,dev for the final model)")
    train.add_argument("--dev", choices=("auto", "yes", "no"), default="auto",
                       help="evaluate on dev after each epoch (auto: when dev is not a training split)")
    train.add_argument("--output", default="runs/ncbi-disease", help="output folder (model/, trainer_state/, log, plot)")
    train.add_argument("--resume", action="store_true", help="continue from <output>/model and <output>/trainer_state")
    _common(train)
    _train_options(train)
    pre = subparsers.add_parser("pretrain", help="SapBERT-style synonym pre-training on the vocabulary",
                                description="Self-alignment on the vocabulary's synonym sets (multi-similarity loss, "
                                            "in-batch hard mining); writes a model folder to use as `train --model`.")
    pre.add_argument("--output", default="runs/pretrain/model")
    pre.add_argument("--mentions", metavar="SPLITS",
                     help="also pair the training mentions of these corpus splits (e.g. train) with their concepts' names")
    _common(pre)
    _pretrain_options(pre)
    rep = subparsers.add_parser("reproduce", help="pretrain, train on train+dev, evaluate once on test",
                                description="One command: synonym pre-training, BioSyn training on train+dev, one "
                                            "evaluation on the test split; writes results.json and the plot. Where the "
                                            "test split is absent (BC5CDR's is not shipped with the data), the model is "
                                            "trained and saved, and the command that gives its test figure is printed.")
    rep.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                     help="train once per seed from one pre-trained start and average the weights (model soup); "
                          "default: one run with --seed")
    rep.add_argument("corpus_name", nargs="?", default="ncbi-disease", choices=sorted(CORPORA), metavar="CORPUS")
    rep.add_argument("--output", help="output folder (default runs/<corpus>, where `make run` and `--model` default look for a trained model)")
    rep.add_argument("--no-pretrain", action="store_true", help="skip synonym pre-training")
    rep.add_argument("--pretrain-mentions", action="store_true",
                     help="pre-training also pairs the train+dev mentions with their concepts' names")
    rep.add_argument("--vocabulary", help="vocabulary name or file (default: the corpus's)")
    rep.add_argument("--data-dir")
    rep.add_argument("--model", default="minilm", help=BASE_HELP)
    rep.add_argument("--pooling", choices=("cls", "mean"))
    rep.add_argument("--max-length", type=int, default=TrainConfig.max_length)
    rep.add_argument("--seed", type=int, default=TrainConfig.seed)
    rep.add_argument("--no-bf16", action="store_true", help=NO_BF16_HELP)
    rep.add_argument("--device", help=DEVICE_HELP)
    rep.add_argument("--quiet", action="store_true")
    rep.add_argument("--rerank", action="store_true",
                     help="then train a cross-encoder reranker on the trained model's candidates (<output>/reranker) and "
                          "report the test figure with it beside the one without (docs/rerank.md)")
    rep.add_argument("--rerank-depth", type=int, default=RerankerOptions.depth, help=f"candidates the reranker re-scores (default {RerankerOptions.depth})")
    rep.add_argument("--rerank-epochs", type=int, default=RerankTrainingConfig.epochs)
    rep.add_argument("--rerank-lr", type=float, default=RerankTrainingConfig.lr)
    rep.add_argument("--rerank-base", default="minilm", help="the reranker's base encoder: 'minilm' or a transformers folder")
    _train_options(rep)
    _pretrain_options(rep, "pretrain-")
    _add_soup_parser(subparsers)
    _add_rerank_parser(subparsers)


def _add_rerank_parser(subparsers) -> None:
    defaults = RerankerOptions()
    rerank = subparsers.add_parser("rerank", help="the cross-encoder reranker: train it on a model's own candidates")
    actions = rerank.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train a reranker over a BioSyn model's top candidates",
                               description="Ranks the corpus's training queries with --model, then trains a cross-encoder "
                                           "from --base to re-score the top --depth (the model's wrong answers are the hard "
                                           "negatives); with a dev split left out of training, reports dev Acc@1..5 with and "
                                           "without it. Use the folder with --rerank on evaluate, normalize, annotate, serve.")
    train.add_argument("--output", required=True, help="reranker folder to write")
    train.add_argument("--model", help="the BioSyn model whose candidates are re-ranked (default: as for evaluate)")
    train.add_argument("--base", default="minilm", help="the cross-encoder's base encoder: 'minilm' or a transformers folder")
    train.add_argument("--corpus", default="ncbi-disease", choices=sorted(CORPORA))
    train.add_argument("--splits", default="train", help="training splits, comma-separated (default train)")
    train.add_argument("--add-corpus", action="append", default=[], metavar="CORPUS", choices=sorted(CORPORA),
                       help="also train on this corpus's training split (repeatable)")
    train.add_argument("--vocabulary", help="vocabulary name or file (default: the corpus's)")
    train.add_argument("--data-dir")
    train.add_argument("--depth", type=int, default=defaults.depth, help=f"candidates re-scored per query (default {defaults.depth})")
    train.add_argument("--candidate-text", choices=[c.value for c in CandidateText], default=defaults.candidate_text,
                       help="what the cross-encoder reads for a candidate")
    train.add_argument("--max-length", type=int, default=defaults.max_length, help="tokens per (mention, candidate) pair")
    train.add_argument("--gate", type=float, help="re-score only where the model's top two scores are closer than this "
                                                  "(default: everywhere); saved with the reranker")
    train.add_argument("--epochs", type=int, default=RerankTrainingConfig.epochs)
    train.add_argument("--lr", type=float, default=RerankTrainingConfig.lr)
    train.add_argument("--batch-size", type=int, default=RerankTrainingConfig.batch_size, help="queries per step, each with its --depth candidates")
    train.add_argument("--max-steps", type=int, help="steps per epoch (probes)")
    train.add_argument("--seed", type=int, default=RerankTrainingConfig.seed)
    train.add_argument("--quiet", action="store_true")


def _add_soup_parser(subparsers) -> None:
    soup = subparsers.add_parser("soup", help="average the weights of models trained from one start (model soup)",
                                 description="Weight average of biosyn model folders that share architecture, similarity "
                                             "and sparse encoder: uniform over `biosyn train` runs with other seeds (a soup), "
                                             "or weighted between a trained model and its start (WiSE-FT).")
    soup.add_argument("models", nargs="+", help="biosyn model folders")
    soup.add_argument("--weights", type=float, nargs="+", metavar="W",
                      help="one weight per model, normalised to sum to 1 (default: uniform), e.g. 0.7 0.3 for a trained model and its start")
    soup.add_argument("--encoder-only", action="store_true",
                      help="average the encoders only and keep the first model's similarity, scale and sparse weight "
                           "(WiSE-FT toward a `biosyn pretrain` folder saved with other scoring)")
    soup.add_argument("--output", required=True, help="folder for the averaged model")


def _load_base(args):
    from ..model.specs import load_model

    return load_model(args.model, pooling=args.pooling, max_length=args.max_length, similarity=getattr(args, "similarity", None),
                      scale=getattr(args, "scale", None), device=args.device)


def _train_config(args):
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, sparse_lr=args.sparse_lr,
                       schedule=args.schedule, warmup=args.warmup,
                       sparse_weight_init=args.sparse_weight_init, topk=args.topk, dense_ratio=args.dense_ratio, add_gold=args.add_gold,
                       max_length=args.max_length, seed=args.seed, bf16=False if args.no_bf16 else None, fast=not args.slow,
                       max_steps=args.max_steps)


def _command_line() -> str:
    return "biosyn " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def cmd_train(args) -> int:
    from ..evaluation.protocol import load_benchmark
    from ..model.biosyn import BioSyn
    from ..training.plot import PLOT_FILE
    from ..training.progress import LOG_FILE
    from ..training.queries import corpus_training_queries
    from ..training.trainer import MODEL_DIR, Trainer

    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    output = Path(args.output)
    selection, vocab, dictionary, preprocessor = corpus_training_queries(args.corpus, splits, data_dir=args.data_dir,
                                                                         vocabulary=args.vocabulary, add_corpora=args.add_corpus)
    print(f"training queries: {json.dumps(selection.counts)}")
    dev = None
    if args.dev == "yes" or (args.dev == "auto" and "dev" not in splits):
        dev = load_benchmark(args.corpus, "dev", data_dir=args.data_dir, vocabulary=args.vocabulary, preprocessor=preprocessor)
    if args.resume:
        if not (output / MODEL_DIR / "biosyn.json").exists():
            raise FileNotFoundError(f"{output / MODEL_DIR}: nothing to resume")
        model = BioSyn.from_pretrained(output / MODEL_DIR, device=args.device)
        model.base_model = model.base_model or args.model
    else:
        model = _load_base(args)
    card = {"base_model": model.base_model, "corpus": args.corpus, "splits": splits, "similarity": f"{model.similarity} (scale {model.scale})",
            "command": _command_line(), **({"added_corpora": args.add_corpus} if args.add_corpus else {})}
    trainer = Trainer(model, selection.queries, dictionary, vocab, _train_config(args), output, dev=dev,
                      progress=not args.quiet, card=card)
    if args.resume:
        trainer.load_state()
        print(f"resuming after epoch {trainer.state.epoch}")
    state = trainer.train(card["command"])
    print(f"model: {output / MODEL_DIR}  (epochs {state.epoch}, log {output / LOG_FILE}, plot {output / PLOT_FILE})")
    return 0


def cmd_pretrain(args) -> int:
    from ..data.locate import corpus as corpus_files
    from ..data.vocabularies import load_vocabulary
    from ..preprocess.corpus import corpus_preprocessor
    from ..training.pretrain import pretrain
    from ..training.queries import corpus_training_queries

    mentions = ()
    if args.mentions:
        selection, vocab, _, preprocessor = corpus_training_queries(args.corpus, args.mentions.split(","), data_dir=args.data_dir,
                                                                    vocabulary=args.vocabulary)
        mentions = selection.queries
    else:
        vocab = load_vocabulary(args.vocabulary or corpus_files(args.corpus).vocabulary, data_dir=args.data_dir)
        preprocessor = corpus_preprocessor(args.corpus, args.data_dir)
    model = _load_base(args)
    config = PretrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, max_length=args.max_length,
                            bf16=False if args.no_bf16 else None, seed=args.seed, mention_share=args.mention_share,
                            neighbours=args.neighbours)
    summary = pretrain(model, vocab, config, preprocessor=preprocessor, mentions=mentions,
                       output_dir=args.output, progress=not args.quiet)
    print(json.dumps(summary))
    print(f"model: {args.output}")
    return 0


def reproduce_config(args):
    from ..training.reproduce import ReproduceConfig

    pretrain = None if args.no_pretrain else PretrainConfig(
        steps=args.pretrain_steps, batch_size=args.pretrain_batch_size, lr=args.pretrain_lr,
        mention_share=args.pretrain_mention_share, neighbours=args.pretrain_neighbours)
    return ReproduceConfig(corpus=args.corpus_name, output=args.output, data_dir=args.data_dir, vocabulary=args.vocabulary,
                           model=args.model, pooling=args.pooling, similarity=args.similarity, scale=args.scale,
                           device=args.device, seeds=args.seeds, pretrain=pretrain, pretrain_mentions=args.pretrain_mentions,
                           add_corpora=args.add_corpus, train=_train_config(args), progress=not args.quiet,
                           rerank=RerankTrainingConfig(epochs=args.rerank_epochs, lr=args.rerank_lr, seed=args.seed,
                                                       max_steps=args.max_steps) if args.rerank else None,
                           rerank_options=RerankerOptions(depth=args.rerank_depth), rerank_base=args.rerank_base)


def cmd_reproduce(args) -> int:
    from ..training.reproduce import reproduce

    result = reproduce(reproduce_config(args), command=_command_line())
    print(json.dumps({k: result[k] for k in ("test", "seconds")}, indent=2))
    if result["rerank"]:
        print(f"with the reranker ({result['rerank']['lists']['lists']} training lists): {json.dumps(result['rerank']['test'])}")
    return 0


def cmd_soup(args) -> int:
    from ..training.model_card import write_model_card
    from ..training.soup import soup

    if len(args.models) < 2:
        raise SystemExit("soup: give at least two model folders")
    soup(args.models, args.output, weights=args.weights, encoder_only=args.encoder_only)
    how = "uniform" if args.weights is None else f"weighted ({', '.join(f'{w:g}' for w in args.weights)})"
    write_model_card(Path(args.output), {"stage": f"{how} weight average (model soup) of {', '.join(args.models)}",
                                         "command": _command_line()})
    print(f"model: {args.output}")
    return 0


def cmd_rerank(args) -> int:
    from ..evaluation.evaluate import run_evaluation
    from ..evaluation.protocol import load_benchmark
    from ..model.presets import base_encoder_folder
    from ..model.rerank import CrossEncoderReranker
    from ..model.specs import load_model
    from ..training.queries import corpus_training_queries
    from ..training.rerank import save_reranker, train_reranker
    from .loading import attach_index

    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    selection, vocab, dictionary, preprocessor = corpus_training_queries(args.corpus, splits, data_dir=args.data_dir,
                                                                         vocabulary=args.vocabulary, add_corpora=args.add_corpus)
    print(f"training queries: {json.dumps(selection.counts)}")
    model = load_model(args.model)
    attach_index(model, dictionary, vocab, progress=not args.quiet)
    options = RerankerOptions(depth=args.depth, max_length=args.max_length, candidate_text=args.candidate_text, gate=args.gate)
    reranker = CrossEncoderReranker.from_base(base_encoder_folder(args.base), options, seed=args.seed)
    config = RerankTrainingConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed, max_steps=args.max_steps)
    record = train_reranker(reranker, model, selection.queries, config, progress=not args.quiet)
    record.update(command=_command_line(), model=model.spec, base=args.base, corpus=args.corpus, splits=splits,
                  added_corpora=args.add_corpus, training_queries=selection.counts)
    if "dev" not in splits:
        dev = load_benchmark(args.corpus, "dev", data_dir=args.data_dir, vocabulary=args.vocabulary, preprocessor=preprocessor)
        attach_index(model, dev.dictionary, dev.vocabulary, progress=not args.quiet)
        figures = {}
        for name, used in (("without", None), ("with", reranker)):
            model.use_reranker(used)
            evaluation = run_evaluation(model, dev, k=5)
            figures[name] = {**evaluation.result.summary(), "rank_seconds": evaluation.seconds["rank"]}
        model.use_reranker(None)
        record["dev"] = figures
        print(f"dev Acc@1/Acc@5 without the reranker {figures['without']['acc']['acc@1']}/{figures['without']['acc']['acc@5']}, "
              f"with it {figures['with']['acc']['acc@1']}/{figures['with']['acc']['acc@5']}")
    save_reranker(reranker, args.output, record)
    print(f"reranker: {args.output}")
    return 0


COMMANDS = {"train": cmd_train, "pretrain": cmd_pretrain, "reproduce": cmd_reproduce, "soup": cmd_soup, "rerank": cmd_rerank}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="biosyn")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return COMMANDS[args.command](args)
    except (FileNotFoundError, ValueError, PermissionError) as error:
        print(f"biosyn: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
