"""`biosyn normalize --input/--output`: TSV, JSONL and PubTator files in, the same with IDs out.

The input's format is `--format` when given; else `.tsv` and `.jsonl` names decide; else the
first non-blank line does: `{` starts JSONL, `PMID|t|` or `PMID|a|` starts PubTator, anything
else is TSV (so a TSV named `.txt` is read as one). Bad records are skipped and counted; a file
in which no record could be read is an error, and no output is written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..data.atomic import atomic_write
from ..data.errors import FormatError
from ..data.ids import NO_CONCEPT
from ..data.lines import first_line, parse_json_line, text_lines
from ..data.pubtator import format_pubtator, is_text_line, read_pubtator
from ..data.records import Document, Mention

BATCH = 256
FORMATS = ("tsv", "jsonl", "pubtator")


def detect_format(path: str) -> str:
    name = Path(path).name.lower()
    if name.endswith(".jsonl"):
        return "jsonl"
    if name.endswith(".tsv"):
        return "tsv"
    line = first_line(path)
    if line.lstrip().startswith("{"):
        return "jsonl"
    return "pubtator" if is_text_line(line) else "tsv"


def candidate_json(c) -> dict:
    return {"ids": list(c.ids), "concepts": list(c.concepts), "preferred_names": list(c.preferred_names),
            "name": c.name, "score": round(c.score, 6),
            "dense": None if c.dense is None else round(c.dense, 6), "sparse": None if c.sparse is None else round(c.sparse, 6)}


def result_json(result) -> dict:
    return {"mention": result.mention, "parts": list(result.parts),
            "ids": [c.concept_id for c in result.top],
            "candidates": [[candidate_json(c) for c in part] for part in result.candidates]}


def top_ids(result) -> str:
    """`result.best_ids` joined by `|` as PubTator joins a composite's IDs; `-1` (PubTator's "no ID") for no match."""
    return "|".join(result.best_ids) or NO_CONCEPT


def print_results(results, *, as_json: bool = False, out=None) -> None:
    out = out or sys.stdout
    if as_json:
        for r in results:
            out.write(json.dumps(result_json(r), ensure_ascii=False) + "\n")
        return
    for r in results:
        out.write(f"{r.mention}" + (f"  →  {' | '.join(r.parts)}" if r.parts != (r.mention,) else "") + "\n")
        for part, cands in zip(r.parts, r.candidates):
            if len(r.parts) > 1:
                out.write(f"  [{part}]\n")
            for rank, c in enumerate(cands, 1):
                concept = ",".join(c.concepts) or "|".join(c.ids)
                preferred = "; ".join(c.preferred_names)
                parts = "" if c.dense is None else f"  (dense {c.dense:.3f}, sparse {c.sparse:.3f})"
                out.write(f"  {rank}. {concept:<12} {c.score:8.4f}  {c.name}  [{preferred}]{parts}\n")


def _read_records(path: str, fmt: str, skipped: list[FormatError]) -> list[tuple[str, str | None, Any]]:
    """(mention, document text, original record) for every good record; bad ones go to `skipped`."""
    records: list[tuple[str, str | None, Any]] = []
    for line_no, line in text_lines(path, skipped):
        if not line.strip():
            continue
        if fmt == "tsv":
            fields = line.split("\t")
            if line_no == 1 and fields[0].lower() == "mention":
                continue
            if not fields[0].strip():
                skipped.append(FormatError(path, line_no, "mention", "empty"))
                continue
            records.append((fields[0].strip(), fields[1] if len(fields) > 1 and fields[1].strip() else None, fields))
        else:
            try:
                record = parse_json_line(line, path, line_no)
            except FormatError as error:
                skipped.append(error)
                continue
            mention = record.get("mention") if isinstance(record, dict) else None
            if not isinstance(mention, str) or not mention.strip():
                skipped.append(FormatError(path, line_no, "mention", "missing or empty"))
                continue
            text = record.get("text")
            records.append((mention.strip(), text if isinstance(text, str) else None, record))
    return records


def normalize_file(model, path: str, output: str | None, *, k: int = 5, mode: str | None = None,
                   approximate: bool = False, format: str | None = None) -> tuple[int, int]:
    """Normalises every mention of the file; returns (mentions written, bad records skipped).

    Raises FormatError when no record could be read: every one was skipped, or there were none
    (a PubTator file of documents without mentions is passed through)."""
    fmt = format or detect_format(path)
    skipped: list[FormatError] = []
    docs: list[Document] = []
    records: list[tuple[str, str | None, Any]]
    if fmt == "pubtator":
        docs = read_pubtator(path, skipped=skipped)
        records = [(m.text, d.text, (d, i)) for d in docs for i, m in enumerate(d.mentions)]
    else:
        records = _read_records(path, fmt, skipped)
    for error in skipped:
        print(f"skipped: {error}", file=sys.stderr)
    if not records and (skipped or not docs):
        found = f"all {len(skipped)} records were bad" if skipped else "it holds none"
        raise FormatError(path, None, None, f"no mention to normalise: {found} (read as {fmt}; "
                                            f"pass --format {'|'.join(FORMATS)} if that is wrong)")
    results = []
    with tqdm(total=len(records), unit="mentions", desc="normalising", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(records), BATCH):
            batch = records[start:start + BATCH]
            results += model.normalize([r[0] for r in batch], k=k, mode=mode, texts=[r[1] for r in batch], approximate=approximate)
            bar.update(len(batch))
    lines = _render(fmt, records, results, docs)
    if output:
        with atomic_write(output) as out:
            out.write(lines)
    else:
        sys.stdout.write(lines)
    return len(results), len(skipped)


def _render(fmt, records, results, docs) -> str:
    if fmt == "pubtator":
        filled: dict[int, list[Mention]] = {}
        for (_, _, (doc, i)), r in zip(records, results):
            m = doc.mentions[i]
            filled.setdefault(id(doc), list(doc.mentions))[i] = Mention(m.start, m.end, m.text, m.type, r.best_ids)
        return "\n".join(format_pubtator(Document(d.pmid, d.title, d.abstract, filled.get(id(d), d.mentions), d.relations))
                         for d in docs)
    if fmt == "tsv":
        rows = ["mention\ttext\tids\tpreferred_names\tscore"]
        for (mention, text, _), r in zip(records, results):
            names = "|".join(c.preferred_name for c in r.top)
            score = "|".join(f"{c.score:.4f}" for c in r.top)
            rows.append(f"{mention}\t{text or ''}\t{top_ids(r)}\t{names}\t{score}")
        return "\n".join(rows) + "\n"
    return "".join(json.dumps({**rec, **result_json(r)}, ensure_ascii=False) + "\n" for (_, _, rec), r in zip(records, results))
