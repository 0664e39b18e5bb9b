"""The reranker's model card (`README.md`, Hugging Face layout): its data, its training and its dev figures."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.atomic import atomic_write


def render_reranker_card(record: dict) -> str:
    lists = record.get("lists", {})
    options = record.get("options", {})
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-classification",
        "tags: [biomedical, entity-linking, reranker, cross-encoder, biosyn]", "license: mit", "---", "",
        "# biosyn cross-encoder reranker", "",
        f"Re-scores the top {options.get('depth', '?')} candidates of the BioSyn model `{record.get('model')}`: it reads "
        "\"[CLS] mention [SEP] candidate [SEP]\" and adds its logit to the BioSyn score (`biosyn.model.rerank`). "
        f"Fine-tuned by `biosyn rerank train` from `{record.get('base')}`.", "",
        "## Use", "", "```bash", "biosyn evaluate --model MODEL --rerank FOLDER", "biosyn normalize --rerank FOLDER \"colon cancers\"", "```", "",
        "## Training data", "",
        f"- {record.get('corpus')} splits {', '.join(record.get('splits', []))}"
        + "".join(f", plus {extra}'s train split" for extra in record.get("added_corpora") or []) + ".",
        f"- {lists.get('lists', '?')} candidate lists from {lists.get('queries', '?')} training queries; left out: "
        f"{lists.get('no_positive', '?')} without a right candidate in the list, {lists.get('only_positives', '?')} with only right ones.",
        f"- Training: {json.dumps(record.get('config', {}))}", "",
    ]
    dev = record.get("dev")
    if dev:
        lines += ["## Dev figures (BioSyn's protocol)", "", "| | Acc@1 | Acc@5 |", "|---|---|---|"]
        lines += [f"| {name} the reranker | {s['acc']['acc@1']} | {s['acc']['acc@5']} |" for name, s in dev.items()]
        lines.append("")
    lines += ["## How it was trained", "", "```bash", record.get("command", "(not recorded)"), "```", ""]
    return "\n".join(lines)


def write_reranker_card(folder: Path, record: dict) -> None:
    with atomic_write(folder / "README.md") as out:
        out.write(render_reranker_card(record))
