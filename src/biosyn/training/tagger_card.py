"""The tagger's model card (`README.md`, Hugging Face layout): what it was trained on, how, and its figures."""

from __future__ import annotations

import json
from dataclasses import asdict

CITATIONS = """```bibtex
@article{dogan2014ncbi,
  title={NCBI disease corpus: a resource for disease name recognition and concept normalization},
  author={Do{\\u{g}}an, Rezarta Islamaj and Leaman, Robert and Lu, Zhiyong},
  journal={Journal of Biomedical Informatics}, volume={47}, pages={1--10}, year={2014}}
@article{li2016biocreative,
  title={BioCreative V CDR task corpus: a resource for chemical disease relation extraction},
  author={Li, Jiao and Sun, Yueping and Johnson, Robin J. and Sciaky, Daniela and Wei, Chih-Hsuan and Leaman, Robert and
          Davis, Allan Peter and Mattingly, Carolyn J. and Wiegers, Thomas C. and Lu, Zhiyong},
  journal={Database}, volume={2016}, pages={baw068}, year={2016}}
```"""


def render_tagger_card(metadata: dict, options) -> str:
    data = metadata.get("training_data") or {}
    training = metadata.get("training") or {}
    results = metadata.get("results") or {}
    datasets = sorted({k.split(":")[0] for k in data})
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: token-classification",
        "tags: [biomedical, ner, disease, biosyn]",
        f"datasets: {json.dumps(datasets)}",
        "license: mit",
        "---",
        "",
        "# biosyn disease tagger",
        "",
        "A token-classification model that finds disease mentions in biomedical text (one entity type, `Disease`, "
        "BIO tags), fine-tuned by `biosyn tagger train` from "
        f"`{metadata.get('base_model', 'minilm')}` (`minilm`: sentence-transformers/all-MiniLM-L6-v2).",
        "",
        "## Use",
        "",
        "```python",
        "from transformers import pipeline",
        "ner = pipeline(\"token-classification\", model=FOLDER, aggregation_strategy=\"first\")",
        "```",
        "",
        "biosyn reads it through overlapping windows with exact character offsets, BIO-constrained decoding and "
        "document-level propagation, and links every span to MEDIC concepts:",
        "",
        "```bash",
        "biosyn annotate --tagger FOLDER \"Hereditary nonpolyposis colorectal cancer (HNPCC) is ...\"",
        "```",
        "",
        "## Training data",
        "",
        *[f"- {source}: {count} documents" for source, count in data.items()],
        "",
        "Every mention type of the NCBI disease corpus (SpecificDisease, DiseaseClass, Modifier, CompositeMention) is one "
        "entity type; BC5CDR contributes its Disease mentions only. A PMID repeated in a file is read once.",
        "",
        "## Training",
        "",
        f"- configuration: `{json.dumps(training.get('config', {}))}`",
        f"- reading options: `{json.dumps(asdict(options))}`",
        f"- windows: {training.get('windows')}; wall time {training.get('seconds')} s",
        f"- epochs (dev F1 chooses the kept one, {training.get('best_epoch')}): "
        + "; ".join(f"{e['epoch']}: loss {e['loss']}" + (f", dev F1 {100 * e['dev']:.2f}" if "dev" in e else "")
                    for e in training.get("epochs", [])),
        *([f"- command: `{metadata['command']}`"] if metadata.get("command") else []),
        "",
        "## Results (exact-span NER)",
        "",
        "| split | precision | recall | F1 |",
        "|---|---|---|---|",
        *[f"| {split} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} |" for split, r in results.items()],
        "",
        "## Cite",
        "",
        CITATIONS,
        "",
    ]
    return "\n".join(lines)
