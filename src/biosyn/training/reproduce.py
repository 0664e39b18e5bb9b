"""One command from the packaged MiniLM to a test figure: pretrain → train on train+dev → test once."""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..data.atomic import atomic_write
from ..model.rerank import RerankerOptions
from .config import PretrainConfig, RerankTrainingConfig, TrainConfig
from .trainer import MODEL_DIR

log = logging.getLogger(__name__)

RERANKER_DIR = "reranker"


@dataclass
class ReproduceConfig:
    """Everything `reproduce` needs; `train.seed`, `train.max_length` and `train.bf16` also apply to
    loading the base model and to pre-training."""

    corpus: str = "ncbi-disease"
    output: str | None = None  # default runs/<corpus>
    data_dir: str | None = None
    vocabulary: str | None = None  # default: the corpus's
    model: str = "minilm"  # a model spec (`biosyn.model.specs`)
    pooling: str | None = None
    similarity: str = "cosine"
    scale: float = 20.0
    device: str | None = None
    seeds: list[int] | None = None  # one run per seed, then a model soup; default [train.seed]
    pretrain: PretrainConfig | None = field(default_factory=PretrainConfig)  # None: no synonym pre-training
    pretrain_mentions: bool = False  # pre-training also pairs the train+dev mentions with their concepts' names
    add_corpora: list[str] = field(default_factory=list)  # other corpora's train splits added to the training data
    rerank: RerankTrainingConfig | None = None  # then also a cross-encoder reranker over the trained model's candidates
    rerank_options: RerankerOptions = field(default_factory=RerankerOptions)
    rerank_base: str = "minilm"
    train: TrainConfig = field(default_factory=TrainConfig)
    progress: bool = True


def reproduce(config: ReproduceConfig, command: str) -> dict:
    import numpy
    import torch
    import transformers

    from .._version import __version__
    from ..evaluation.evaluate import run_evaluation
    from ..model.biosyn import BioSyn
    from ..model.specs import load_model
    from .model_card import write_model_card
    from .plot import PLOT_FILE, plot_history
    from .pretrain import pretrain
    from .progress import LOG_FILE
    from .queries import corpus_training_queries
    from .soup import soup
    from .trainer import Trainer

    args, train = config, config.train
    output = Path(args.output or f"runs/{args.corpus}")
    output.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    selection, vocab, dictionary, preprocessor = corpus_training_queries(args.corpus, ["train", "dev"], data_dir=args.data_dir,
                                                                         vocabulary=args.vocabulary, add_corpora=args.add_corpora)
    benchmark, test_missing = _test_benchmark(args, output, preprocessor)
    model = load_model(args.model, pooling=args.pooling, max_length=train.max_length, similarity=args.similarity,
                       scale=args.scale, device=args.device)
    device = model.encoder.device
    seconds["prepare"] = round(time.perf_counter() - started, 1)
    pre_summary = None
    if args.pretrain is not None:
        t = time.perf_counter()
        pconfig = replace(args.pretrain, max_length=train.max_length, bf16=train.bf16, seed=train.seed)
        pre_summary = pretrain(model, vocab, pconfig, preprocessor=preprocessor, progress=args.progress,
                               mentions=selection.queries if args.pretrain_mentions else (),
                               log_path=output / LOG_FILE)
        seconds["pretrain"] = round(time.perf_counter() - t, 1)
    seeds = list(dict.fromkeys(args.seeds or [train.seed]))
    card = {"base_model": model.base_model, "corpus": args.corpus, "splits": ["train", "dev"], "command": command,
            "similarity": f"{model.similarity} (scale {model.scale})", "pretraining": pre_summary,
            **({"added_corpora": args.add_corpora} if args.add_corpora else {})}

    def test_figures(folder: Path, *rerankers) -> list[dict | None]:
        """The test summary of the model saved in `folder`, then with each of `rerankers`, on one index."""
        if benchmark is None:
            return [None] * (1 + len(rerankers))
        final = BioSyn.from_pretrained(folder, device=args.device)  # what was saved is what is measured
        final.build_index(benchmark.dictionary, benchmark.vocabulary, progress=args.progress)
        return [run_evaluation(final.use_reranker(r), benchmark, k=5, mode="hybrid").result.summary() for r in (None, *rerankers)]

    start = {k: v.detach().clone() for k, v in model.encoder.model.state_dict().items()}
    runs: list[dict] = []
    for seed in seeds:
        t = time.perf_counter()
        model.encoder.model.load_state_dict(start)  # every seed starts from the pre-trained weights
        model.weights_changed()
        folder = output if len(seeds) == 1 else output / "seeds" / f"seed-{seed}"
        trainer = Trainer(model, selection.queries, dictionary, vocab, replace(train, seed=seed), folder,
                          progress=args.progress,
                          card={**card, "stage": f"BioSyn fine-tuning, seed {seed}"})
        state = trainer.train(command)
        seconds[f"train_seed_{seed}"] = round(time.perf_counter() - t, 1)
        runs.append({"seed": seed, "folder": str(folder / MODEL_DIR), "history": state.history})
    record = trainer.training_record(command)
    training = {**record, "config": {**record["config"], "seed": seeds if len(seeds) > 1 else seeds[0]}}
    if len(seeds) > 1:
        for run in runs:  # the spread of single runs, reported beside the soup (never used to choose)
            t = time.perf_counter()
            run["test"] = test_figures(Path(run["folder"]))[0]
            seconds[f"test_seed_{run['seed']}"] = round(time.perf_counter() - t, 1)
        soup([run["folder"] for run in runs], output / MODEL_DIR, extra={"training": training, "base_model": model.base_model})
        card["stage"] = f"uniform weight average (model soup) of {len(seeds)} BioSyn runs, seeds {', '.join(map(str, seeds))}"
    reranker = reranked = None
    if args.rerank is not None:
        t = time.perf_counter()
        reranker, reranked = _train_reranker(args, output, selection, dictionary, vocab, command)
        seconds["rerank_train"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    test, *with_reranker = test_figures(output / MODEL_DIR, *([reranker] if reranker is not None else []))
    if reranked is not None:
        reranked["test"] = with_reranker[0]
    seconds["test"] = round(time.perf_counter() - t, 1)  # with the reranker's figure, when there is one
    seconds["total"] = round(time.perf_counter() - started, 1)
    final_config = json.loads((output / MODEL_DIR / "biosyn.json").read_text())
    if test:
        card["results"] = {"test": test}
    else:
        card["notes"] = test_missing
    card["training"] = training
    write_model_card(output / MODEL_DIR, card)
    result = {
        "corpus": args.corpus, "command": command, "test": test, "test_missing": test_missing,
        "benchmark": benchmark.describe() if benchmark else None,
        "training_queries": selection.counts, "pretraining": pre_summary, "training": training,
        "seeds": seeds, "runs": runs if len(seeds) > 1 else None, "rerank": reranked,
        "sparse_weight": final_config["sparse_weight"], "similarity": final_config["similarity"], "scale": final_config["scale"],
        "seconds": seconds,
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(), "device": str(device),
                    **({"gpu": torch.cuda.get_device_name(device)} if device.type == "cuda" else {})},
        "versions": {"biosyn": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": numpy.__version__, "python": platform.python_version()},
    }
    with atomic_write(output / "results.json") as out:
        json.dump(result, out, indent=2)
    figure = f"test Acc@1 {test['acc']['acc@1']}" if test else "no test split"
    plot_history(state.history, output / PLOT_FILE, title=f"{args.corpus}: train+dev, {figure}"
                 + (f" (soup of {len(seeds)})" if len(seeds) > 1 else ""))
    return result


def _train_reranker(args: ReproduceConfig, output: Path, selection, dictionary, vocabulary, command: str):
    """A reranker trained on the final model's candidates for the same training queries, saved to <output>/reranker."""
    from ..model.biosyn import BioSyn
    from ..model.presets import base_encoder_folder
    from ..model.rerank import CrossEncoderReranker
    from .rerank import save_reranker, train_reranker

    assert args.rerank is not None
    final = BioSyn.from_pretrained(output / MODEL_DIR, device=args.device)
    final.build_index(dictionary, vocabulary, progress=args.progress)
    reranker = CrossEncoderReranker.from_base(base_encoder_folder(args.rerank_base), args.rerank_options, seed=args.train.seed,
                                              device=args.device)
    record = train_reranker(reranker, final, selection.queries, args.rerank, progress=args.progress)
    record.update(command=command, model=str(output / MODEL_DIR), base=args.rerank_base, corpus=args.corpus,
                  splits=["train", "dev"], added_corpora=args.add_corpora, training_queries=selection.counts)
    save_reranker(reranker, output / RERANKER_DIR, record)
    return CrossEncoderReranker.from_pretrained(output / RERANKER_DIR, device=args.device), record


def _test_benchmark(args: ReproduceConfig, output: Path, preprocessor):
    """The test benchmark, or None and the command that gives the test figure once the split is there.

    Checked before any training, so that a missing split is said at the start, not after an hour."""
    from ..evaluation.protocol import load_benchmark

    try:
        return load_benchmark(args.corpus, "test", data_dir=args.data_dir, vocabulary=args.vocabulary, preprocessor=preprocessor), None
    except FileNotFoundError as missing:
        later = (f"the {args.corpus} test split is missing ({missing}); the model is trained and saved without a test "
                 f"figure. Once the split is there: biosyn evaluate --corpus {args.corpus} --split test --model {output / MODEL_DIR}")
        log.warning(later)
        return None, later
