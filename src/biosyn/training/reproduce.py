"""One command from the packaged MiniLM to a test figure: pretrain → train on train+dev → test once."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

from ..data.atomic import atomic_write


def reproduce(args, command: str) -> dict:
    import numpy
    import torch
    import transformers

    from .. import __version__
    from ..evaluation.evaluate import run_evaluation
    from ..evaluation.protocol import load_benchmark
    from ..model.biosyn import BioSyn
    from .cli import _train_config, load_base
    from .model_card import write_model_card
    from .pretrain import PretrainConfig, pretrain
    from .queries import corpus_training_queries
    from .trainer import MODEL_DIR, Trainer, plot_history

    output = Path(args.output or f"runs/{args.corpus}")
    output.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    selection, vocab, dictionary, preprocessor = corpus_training_queries(args.corpus, ["train", "dev"], data_dir=args.data_dir,
                                                                         vocabulary=args.vocabulary)
    model = load_base(args.model, pooling=args.pooling, max_length=args.max_length, similarity=args.similarity, scale=args.scale)
    seconds["prepare"] = round(time.perf_counter() - started, 1)
    pre_summary = None
    if not args.no_pretrain:
        t = time.perf_counter()
        pconfig = PretrainConfig(steps=args.pretrain_steps, batch_size=args.pretrain_batch_size, lr=args.pretrain_lr,
                                 max_length=args.max_length, bf16=not args.no_bf16, seed=args.seed)
        pre_summary = pretrain(model, vocab, pconfig, preprocessor=preprocessor, progress=not args.quiet,
                               log_path=output / "train_log.jsonl")
        seconds["pretrain"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    card = {"base_model": model.base_model, "corpus": args.corpus, "splits": ["train", "dev"], "command": command,
            "similarity": f"{model.similarity} (scale {model.scale})", "pretraining": pre_summary}
    trainer = Trainer(model, selection.queries, dictionary, vocab, _train_config(args), output, progress=not args.quiet, card=card)
    state = trainer.train(command)
    seconds["train"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    final = BioSyn.from_pretrained(output / MODEL_DIR)  # what was saved is what is measured
    benchmark = load_benchmark(args.corpus, "test", data_dir=args.data_dir, vocabulary=args.vocabulary, preprocessor=preprocessor)
    final.build_index(benchmark.dictionary, benchmark.vocabulary, progress=not args.quiet)
    evaluation = run_evaluation(final, benchmark, k=5, mode="hybrid")
    test = evaluation.result.summary()
    seconds["test"] = round(time.perf_counter() - t, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)
    card["results"] = {"test": test}
    card["training"] = {"config": asdict(trainer.config), "epochs_done": state.epoch, "history": state.history,
                        "queries": len(selection.queries)}
    write_model_card(output / MODEL_DIR, card)
    result = {
        "corpus": args.corpus, "command": command, "test": test, "benchmark": benchmark.describe(),
        "training_queries": selection.counts, "pretraining": pre_summary, "training": card["training"],
        "sparse_weight": final.sparse_weight, "similarity": final.similarity, "scale": final.scale,
        "seconds": seconds, "seed": args.seed,
        "machine": {"platform": platform.platform(), "cpu_threads": torch.get_num_threads()},
        "versions": {"biosyn": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": numpy.__version__, "python": platform.python_version()},
    }
    with atomic_write(output / "results.json") as out:
        json.dump(result, out, indent=2)
    plot_history(state.history, output / "training.png", title=f"{args.corpus}: train+dev, test Acc@1 {test['acc']['acc@1']}")
    return result
