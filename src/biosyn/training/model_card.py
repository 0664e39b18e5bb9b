"""The model card (`README.md`, Hugging Face layout: YAML metadata, then sections) of a trained folder."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.atomic import atomic_write

CITATIONS = """```bibtex
@inproceedings{sung2020biomedical,
  title={Biomedical Entity Representations with Synonym Marginalization},
  author={Sung, Mujeen and Jeon, Hwisang and Lee, Jinhyuk and Kang, Jaewoo},
  booktitle={ACL}, year={2020}}
@inproceedings{liu2021self,
  title={Self-Alignment Pretraining for Biomedical Entity Representations},
  author={Liu, Fangyu and Shareghi, Ehsan and Meng, Zaiqiao and Basaldella, Marco and Collier, Nigel},
  booktitle={NAACL}, year={2021}}
@article{dogan2014ncbi,
  title={NCBI disease corpus: a resource for disease name recognition and concept normalization},
  author={Do{\\u{g}}an, Rezarta Islamaj and Leaman, Robert and Lu, Zhiyong},
  journal={Journal of Biomedical Informatics}, volume={47}, pages={1--10}, year={2014}}
@article{davis2023ctd,
  title={Comparative Toxicogenomics Database (CTD): update 2023},
  author={Davis, Allan Peter and Wiegers, Thomas C. and Johnson, Robin J. and Sciaky, Daniela and Wiegers, Jolene and Mattingly, Carolyn J.},
  journal={Nucleic Acids Research}, volume={51}, number={D1}, pages={D1257--D1262}, year={2023}}
```"""


def _yaml_str(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def _reference(corpus: str) -> str:
    from ..data.locate import CORPORA

    known = CORPORA.get(corpus)
    return known.reference if known and known.reference else "a user-supplied corpus"


def render_model_card(info: dict) -> str:
    """`info`: base_model, corpus, vocabulary, command, results ({split: summary}), training, pretraining, notes."""
    base = info.get("base_model", "sentence-transformers/all-MiniLM-L6-v2")
    corpus = info.get("corpus", "ncbi-disease")
    vocabulary = info.get("vocabulary", "MEDIC (CTD), 6 July 2012 release")
    results = info.get("results") or {}
    training = info.get("training") or {}
    pretraining = info.get("pretraining")
    history = training.get("history") or []
    lines = ["---", "language: en", "license: apache-2.0", "library_name: transformers", f"base_model: {_yaml_str(base)}",
             "pipeline_tag: feature-extraction",
             "tags: [biomedical, entity-linking, entity-normalization, biosyn, sapbert, disease]",
             f"datasets: [{_yaml_str(corpus)}]", "metrics: [accuracy]"]
    if results:
        lines += ["model-index:", "- name: " + _yaml_str(info.get("name", f"biosyn-{corpus}")), "  results:"]
        for split, summary in results.items():
            lines += ["  - task: {type: entity-linking, name: Entity normalization}",
                      f"    dataset: {{type: {corpus}, name: {_yaml_str(corpus + ' ' + split)}, split: {split}}}",
                      "    metrics:"]
            for k in ("acc@1", "acc@5"):
                if k in summary.get("acc", {}):
                    lines.append(f"    - {{type: accuracy, name: {_yaml_str(k.capitalize())}, value: {summary['acc'][k]}}}")
    lines += ["---", "", f"# BioSyn entity normaliser for {corpus}", "",
              "Maps a disease mention to a MEDIC concept (MeSH or OMIM ID): the dense encoder below, a character "
              "n-gram TF-IDF encoder (`sparse_encoder/`) and a learned sparse weight (`biosyn.json`), as in BioSyn "
              "(Sung et al., ACL 2020), trained with the `biosyn` package.", "",
              "## Model details", "",
              f"- **Base encoder:** `{base}`" + (" (packaged all-MiniLM-L6-v2, mean pooling)" if "MiniLM" in base else ""),
              f"- **Stage:** {info.get('stage', 'BioSyn fine-tuning')}"]
    cfg = training.get("config") or {}
    if cfg:
        lines.append("- **Training:** synonym marginalisation over top-{topk} candidates ({d} dense, iterative retrieval), "
                     "{epochs} epochs planned ({done} done), batch {batch_size}, lr {lr}, AdamW weight decay {weight_decay}, sparse weight init "
                     "{sparse_weight_init} / lr {sparse_lr}, max length {max_length}, seed {seed}, bf16 autocast {bf16}"
                     .format(d=int(cfg["topk"] * cfg["dense_ratio"]), done=training.get("epochs_done", "?"), **cfg)
                     + (", gold name added where no candidate is positive (`--add-gold`)" if cfg.get("add_gold") else "")
                     + (f", {cfg['schedule']} schedule with warm-up {cfg.get('warmup', 0)}" if cfg.get("schedule", "constant") != "constant" else ""))
    if pretraining:
        lines.append(f"- **Synonym pre-training (SapBERT-style):** {json.dumps(pretraining.get('config', pretraining))}")
    if info.get("similarity"):
        lines.append(f"- **Similarity:** {info['similarity']}")
    lines += ["", "## Training data", "",
              f"- **Mentions:** the {corpus} corpus ({_reference(corpus)}), splits {', '.join(info.get('splits', ['train']))}"
              + "".join(f", plus the {extra} corpus's train split ({_reference(extra)})" for extra in info.get("added_corpora", []))
              + f"; {training.get('queries', '?')} training queries after BioSyn's filters (no composites, no duplicates, "
              "gold IDs present in the vocabulary)."
              + (" Published BioSyn models train on one corpus: compare these figures with theirs only with that in mind."
                 if info.get("added_corpora") else ""),
              f"- **Vocabulary:** {vocabulary}, from the Comparative Toxicogenomics Database (CTD, Davis et al.); "
              "the training dictionary is the vocabulary's names alone.", ""]
    lines += ["## Evaluation", "",
              "Protocol: BioSyn's (preprocessing with Ab3P-style abbreviation resolution and composite splitting; "
              "the test split ranked against the vocabulary plus the train and dev mentions, dev against the vocabulary "
              "plus train; a query counts as correct at k when one of its top-k names carries a gold ID, "
              "composites needing every part right).", ""]
    if results:
        lines += ["| split | queries | Acc@1 | Acc@5 |", "|---|---|---|---|"]
        for split, s in results.items():
            lines.append(f"| {split} | {s.get('queries', '')} | {s['acc'].get('acc@1')} | {s['acc'].get('acc@5')} |")
    elif any(h.get("dev") for h in history):
        lines += ["Dev accuracy after each epoch (trained on train only):", "", "| epoch | loss | dev Acc@1 | dev Acc@5 |",
                  "|---|---|---|---|"]
        for h in history:
            if h.get("dev"):
                lines.append(f"| {h['epoch']} | {h['loss']} | {h['dev']['acc']['acc@1']} | {h['dev']['acc']['acc@5']} |")
    else:
        lines.append("Not measured for this folder: run `biosyn evaluate --model <this folder>`.")
    lines += ["", "## How to train it", "", "```bash", info.get("command") or "(command not recorded)", "```", "",
              "## How to use", "", "```python", "from biosyn.model.biosyn import BioSyn",
              "model = BioSyn.from_pretrained('path/to/this/folder')", "```",
              "or `biosyn normalize --model path/to/this/folder \"breast cancer\"`.", "",
              "## Limits of use", "",
              "- Trained and measured on English PubMed abstracts and disease mentions only; other entity types, "
              "languages or text genres (clinical notes, social media) are out of scope and unmeasured.",
              "- The vocabulary is the 2012 MEDIC release used by the NCBI corpus; concepts added or merged later are "
              "not known. Predictions are concept IDs from that release.",
              "- Accuracy figures are for gold mention spans; with a mention detector, its errors add up.",
              "- Not for clinical decision making; outputs need review where errors matter.",
              "- MEDIC/CTD data are under CTD's terms of use; the NCBI corpus is public domain (U.S. Government work).", "",
              "## Citation", "", CITATIONS, ""]
    if info.get("notes"):
        lines[-1:-1] = ["## Notes", "", info["notes"], ""]
    return "\n".join(lines)


def write_model_card(folder: Path, info: dict) -> Path:
    path = Path(folder) / "README.md"
    with atomic_write(path) as out:
        out.write(render_model_card(info))
    return path
