"""`biosyn annotate`: raw text to concept IDs from arguments, .txt folders, JSONL and PubTator, in
every output format, over a sparse index of a hand-made vocabulary and a deterministic fake tagger."""

import json
from pathlib import Path

import pytest
import torch

from biosyn.interfaces import loading
from biosyn.interfaces.cli import main
from biosyn.model.biosyn import BioSyn
from biosyn.preprocess.pipeline import build_dictionary
from tiny import FakeTagger, tiny_tagger, tiny_vocabulary

LYNCH = "Lynch syndrome (HNPCC) raises colorectal cancer risk."


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory) -> str:
    vocabulary = tiny_vocabulary()
    path = tmp_path_factory.mktemp("index") / "idx"
    BioSyn().build_index(build_dictionary(vocabulary), vocabulary).save(path)
    return str(path)


@pytest.fixture()
def tagger(monkeypatch):
    fake = FakeTagger()
    monkeypatch.setattr(loading, "load_tagger", lambda spec=None, **options: fake)
    return fake


def annotate(index_dir, *args) -> int:
    return main(["annotate", "--model", "sparse", "--index", index_dir, *args])


def spans(record) -> list[tuple]:
    return [(m["start"], m["end"], m["text"], m["ids"]) for m in record["mentions"]]


def test_texts_as_arguments_print_a_table(index_dir, tagger, capsys):
    assert annotate(index_dir, LYNCH, "  ") == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"1: {LYNCH}",
        "  offsets  text               ID       name                                           score",
        "  0-14     Lynch syndrome     D003123  Colorectal Neoplasms, Hereditary Nonpolyposis  1.000",
        "  16-21    HNPCC              D003123  Colorectal Neoplasms, Hereditary Nonpolyposis  1.000",
        "  30-47    colorectal cancer  D009369  Neoplasms                                      0.622",
        "2: ",
        "  (no disease mentions)",
    ]
    assert err.splitlines()[-1] == "annotated 2 documents, 3 mentions; skipped 0 bad documents"
    assert tagger.calls == [[LYNCH]]  # the blank text never reaches the tagger


@pytest.fixture()
def txt_folder(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.txt").write_bytes("Naïve 👩‍⚕️ notes:\r\nLynch syndrome, then breast cancer.\r\n".encode())
    (folder / "empty.txt").write_bytes(b"")
    (folder / "junk.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff")
    (folder / "nul.txt").write_bytes(b"text\nwith a \x00 byte")
    (folder / "skip.md").write_text("not a .txt file")
    return folder


def test_txt_folder_to_jsonl_pubtator_and_bioc(index_dir, tagger, txt_folder, tmp_path, capsys):
    text = (txt_folder / "a.txt").read_bytes().decode()
    out = tmp_path / "out.jsonl"
    assert annotate(index_dir, "--input", str(txt_folder), "--output", str(out)) == 0
    a, empty, junk, nul = [json.loads(line) for line in out.read_text().splitlines()]
    assert a["id"] == "a" and a["text"] == text
    assert spans(a) == [(19, 33, "Lynch syndrome", ["D003123"]), (40, 53, "breast cancer", ["D001943"])]
    assert all(text[m["start"]:m["end"]] == m["text"] for m in a["mentions"])  # CRLF and emoji counted as in the file
    assert a["mentions"][1]["names"] == ["Breast Neoplasms"] and a["mentions"][1]["scores"] == [1.0]
    assert empty == {"id": "empty", "text": "", "mentions": []}
    assert junk == {"id": "junk", "error": f"{txt_folder / 'junk.txt'}:1: encoding: not UTF-8: byte 0x89 at column 1"}
    assert nul == {"id": "nul", "error": f"{txt_folder / 'nul.txt'}:2: text: binary data (a NUL character)"}
    err = capsys.readouterr().err.splitlines()
    assert err[-3:] == [f"skipped: {junk['error']}", f"skipped: {nul['error']}",
                        f"annotated 2 documents, 2 mentions; skipped 2 bad documents; wrote {out}"]

    out = tmp_path / "out.pubtator"
    assert annotate(index_dir, "--input", str(txt_folder / "a.txt"), "--output", str(out)) == 0
    # Line breaks become spaces, one for one, so the offsets hold in the one-line title.
    assert out.read_text().splitlines() == [
        "a|t|" + text.replace("\r", " ").replace("\n", " "), "a|a|",
        "a\t19\t33\tLynch syndrome\tDisease\tD003123", "a\t40\t53\tbreast cancer\tDisease\tD001943"]

    out = tmp_path / "out.json"
    assert annotate(index_dir, "--input", str(txt_folder / "*.txt"), "--output", str(out)) == 0
    bioc = json.loads(out.read_text())
    assert [d["id"] for d in bioc["documents"]] == ["a", "empty"]
    (passage,) = bioc["documents"][0]["passages"]
    assert passage["text"] == text and passage["offset"] == 0
    assert [(x["text"], x["infons"]["identifier"], x["locations"]) for x in passage["annotations"]] == [
        ("Lynch syndrome", "MESH:D003123", [{"offset": 19, "length": 14}]),
        ("breast cancer", "MESH:D001943", [{"offset": 40, "length": 13}])]


def test_jsonl_with_and_without_spans(index_dir, tagger, tmp_path, capsys):
    source = tmp_path / "docs.jsonl"
    source.write_bytes(b'{"id": 7, "text": "HNPCC or Lynch syndrome", "source": "kept"}\n'
                       b'{"id": "b", "text": "breast cancer and WD", "mentions": [{"start": 0, "end": 13}, '
                       b'{"start": 18, "end": 20, "type": "Abbr"}]}\n'
                       b'{"id": "c", "text": "no spans given", "mentions": null}\n'
                       b"not json\n"
                       b'{"id": "d", "text": 5}\n'
                       b'{"id": "e", "text": "ab", "mentions": [{"start": 0, "end": 9}]}\n'
                       b'{"id": "f", "text": "ab", "mentions": [{"start": "0", "end": 1}]}\n'
                       b'\xff{"id": "g"}\n')
    out = tmp_path / "out.jsonl"
    assert annotate(index_dir, "--input", str(source), "--output", str(out)) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 8  # documents in = documents out
    seven, b, c, *bad = records
    assert seven["id"] == 7 and seven["source"] == "kept"
    assert spans(seven) == [(0, 5, "HNPCC", ["D003123"]), (9, 23, "Lynch syndrome", ["D003123"])]
    assert spans(b) == [(0, 13, "breast cancer", ["D001943"]), (18, 20, "WD", ["D006527"])]
    assert b["mentions"][1]["type"] == "Abbr"
    assert c["mentions"] == []
    assert tagger.calls == [["HNPCC or Lynch syndrome", "no spans given"]]  # b's spans were linked, not re-found
    assert [r["error"].split(": ", 1)[1] for r in bad] == [
        "json: Expecting value: line 1 column 1 (char 0)", "text: missing or not a string",
        "mentions[0]: span 0-9 is not inside the 2-character text", "mentions[0]: expected integer start and end",
        "encoding: not UTF-8: byte 0xff at column 1"]
    assert [r["error"].split(": ", 1)[0] for r in bad] == [f"{source}:{n}" for n in (4, 5, 6, 7, 8)]
    assert [r["id"] for r in bad] == ["docs:4", "d", "e", "f", "docs:8"]
    assert capsys.readouterr().err.splitlines()[-1].startswith("annotated 3 documents, 4 mentions; skipped 5 bad documents")


PUBTATOR = ("1|t|Lynch syndrome and breast cancer\n1|a|HNPCC families.\n1\t0\t14\tLynch syndrome\tDisease\t-1\n\n"
            "2|t|Wilson disease (WD) is rare.\n2|a|\n\n"
            "3|t|Broken offsets\n3|a|x\n3\t5\t99\tbroken\tDisease\t-1\n\n"
            "4|t|Bad line\n4\tzero\t3\tBad\tDisease\n\n"
            "5|t|Mismatch cancer\n5|a|\n5\t0\t4\tcancer\tDisease\t-1\n")


def test_pubtator_with_and_without_annotations(index_dir, tagger, tmp_path, capsys):
    source = tmp_path / "corpus.txt"
    source.write_text(PUBTATOR)
    out = tmp_path / "out.txt"
    assert annotate(index_dir, "--input", str(source), "--output", str(out)) == 0
    # 1 has a span: linked as given; 2 has none: found by the tagger; 3-5 are broken.
    assert out.read_text() == ("1|t|Lynch syndrome and breast cancer\n1|a|HNPCC families.\n1\t0\t14\tLynch syndrome\tDisease\tD003123\n"
                               "\n2|t|Wilson disease (WD) is rare.\n2|a|\n2\t0\t14\tWilson disease\tDisease\tD006527\n"
                               "2\t16\t18\tWD\tDisease\tD006527\n")
    err = capsys.readouterr().err.splitlines()
    assert err == [f"skipped: {source}:10: start/end: span 5-99 ends past the document's 16 characters",
                   f"skipped: {source}:13: start/end: offsets must be integers, got 'zero', '3'",
                   f"skipped: {source}:17: text: 'cancer' is not the document's text 'Mism' at 0-4",
                   f"annotated 2 documents, 3 mentions; skipped 3 bad documents; wrote {out}"]

    # --find replaces the given spans with the tagger's (so broken offsets do not matter).
    assert annotate(index_dir, "--input", str(source), "--find", "--format", "jsonl") == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in records] == ["1", "2", "3", "4", "5"] and "error" in records[3]
    assert spans(records[0]) == [(0, 14, "Lynch syndrome", ["D003123"]), (19, 32, "breast cancer", ["D001943"]),
                                 (33, 38, "HNPCC", ["D003123"])]
    assert spans(records[4]) == [(9, 15, "cancer", ["D009369"])]


def test_all_skipped_is_a_failure_and_a_model_error_skips_one_document(index_dir, tagger, tmp_path, capsys):
    junk = tmp_path / "junk.txt"
    junk.write_bytes(b"\xff\xfe\x00")
    assert annotate(index_dir, "--input", str(junk)) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "annotated 0 documents, 0 mentions; skipped 1 bad documents"

    real_tag = tagger.tag
    tagger.tag = lambda texts: (_ for _ in ()).throw(RuntimeError("boom")) if any("boom" in t for t in texts) else real_tag(texts)
    assert annotate(index_dir, "--format", "jsonl", "breast cancer", "boom", "WD") == 0
    out, err = capsys.readouterr()
    assert [json.loads(line).get("error") for line in out.splitlines()] == [None, "2: annotation failed: RuntimeError: boom", None]
    assert err.splitlines()[-1] == "annotated 2 documents, 2 mentions; skipped 1 bad documents"


def test_no_tagger_is_a_clear_error_and_leaves_the_output_alone(index_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(loading.ENV_TAGGER, raising=False)
    out = tmp_path / "out.jsonl"
    out.write_text("before\n")
    assert annotate(index_dir, "--output", str(out), "some text") == 2
    assert "biosyn tagger train --output runs/ncbi-disease/tagger" in capsys.readouterr().err
    assert out.read_text() == "before\n"

    def offline(spec, hub_kwargs):
        raise OSError("no network")

    monkeypatch.setattr("biosyn.model.biosyn._local_or_download", offline)
    with pytest.raises(FileNotFoundError, match="'org/no-tagger' is neither a folder here nor a hub model"):
        loading.load_tagger("org/no-tagger")


def test_a_real_tagger_folder(index_dir, tmp_path, capsys):
    """Through `--tagger FOLDER`: a tiny random tagger whose head always says B, so each word is a mention."""
    tagger = tiny_tagger(tmp_path / "tagger")
    with torch.no_grad():
        tagger.model.classifier.bias[:] = torch.tensor([0.0, 20.0, 0.0])
    tagger.save_pretrained(tmp_path / "tagger")
    assert annotate(index_dir, "--tagger", str(tmp_path / "tagger"), "--format", "jsonl", "breast cancer") == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert spans(record) == [(0, 6, "breast", ["D001943"]), (7, 13, "cancer", ["D009369"])]


def test_a_mention_without_a_match_gets_no_ids(index_dir):
    from biosyn.annotation.annotator import Annotator, linked_document
    from biosyn.data.pubtator import format_pubtator
    from biosyn.data.records import Document
    from biosyn.search.index import NameIndex

    linker = BioSyn()
    linker.use_index(NameIndex.load(index_dir))
    annotator = Annotator(FakeTagger(names=("乳腺癌", "breast cancer")), linker)
    text = "乳腺癌 and breast cancer"
    none, breast = annotator.annotate([text])[0]  # no character n-gram of 乳腺癌 is in the vocabulary
    assert (none.ids, none.names, none.scores) == ((), (), ())
    assert (breast.ids, breast.names) == (("D001943",), ("Breast Neoplasms",))
    assert format_pubtator(linked_document(Document("1", text), [none, breast])).splitlines()[2:] == [
        "1\t0\t3\t乳腺癌\tDisease\t-1", "1\t8\t21\tbreast cancer\tDisease\tD001943"]


def test_min_score_drops_weakly_linked_found_spans_but_never_given_ones(index_dir, tagger, capsys):
    assert annotate(index_dir, "--min-score", "0.7", LYNCH) == 0
    out, _ = capsys.readouterr()
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["0-14", "16-21"]  # colorectal cancer (0.622) dropped

    from biosyn.annotation.annotator import Annotator
    from biosyn.data.records import Document, Mention
    from biosyn.search.index import NameIndex

    linker = BioSyn()
    linker.use_index(NameIndex.load(index_dir))
    given = Document("1", LYNCH, "", [Mention(30, 47, "colorectal cancer", "Disease")])
    [kept] = Annotator(None, linker, min_score=0.7).annotate_documents([given])
    assert [(m.start, m.end, m.ids) for m in kept.mentions] == [(30, 47, ("D009369",))]
    assert loading.default_min_score(linker) is None and loading.default_min_score(linker, 0.5) == 0.5


def test_a_weakly_linked_span_the_tagger_is_sure_of_stays_without_a_concept(index_dir, monkeypatch, capsys):
    fake = FakeTagger(confidence={"colorectal cancer": 0.99, "hnpcc": 0.5})
    monkeypatch.setattr(loading, "load_tagger", lambda spec=None, **options: fake)
    assert annotate(index_dir, "--min-score", "0.7", "--format", "jsonl", LYNCH) == 0
    record = json.loads(capsys.readouterr().out)
    # colorectal cancer links at 0.622 but the tagger is sure of it (0.99 >= 0.98); HNPCC links at 1.0.
    assert [(m["text"], m["ids"], m["names"], m["scores"]) for m in record["mentions"]] == [
        ("Lynch syndrome", ["D003123"], ["Colorectal Neoplasms, Hereditary Nonpolyposis"], [1.0]),
        ("HNPCC", ["D003123"], ["Colorectal Neoplasms, Hereditary Nonpolyposis"], [1.0]),
        ("colorectal cancer", [], [], [])]
    assert [m.get("confidence") for m in record["mentions"]] == [None, 0.5, 0.99]  # only where the tagger gave one
    assert annotate(index_dir, "--min-score", "0.7", "--min-confidence", "1.01", "--format", "jsonl", LYNCH) == 0
    assert [m["text"] for m in json.loads(capsys.readouterr().out)["mentions"]] == ["Lynch syndrome", "HNPCC"]


def test_tagger_evaluate_sweeps_link_score_thresholds_from_one_pass(real_data_dir, tmp_path, monkeypatch, capsys):
    """`biosyn tagger evaluate --min-score-sweep` on NCBI dev, a fake tagger and the sparse linker: each
    threshold's scores are those of a run with that --min-score, and one past the highest score keeps nothing."""
    import types

    fake = FakeTagger(names=("cancer", "breast cancer", "tumour", "tumor", "disease", "deficiency", "syndrome"))
    fake.spec, fake.options = "fake", types.SimpleNamespace()
    monkeypatch.setattr(loading, "load_tagger", lambda spec=None, options=None, backend=None: fake)
    run = ["tagger", "evaluate", "--split", "dev", "--model", "sparse", "--data-dir", str(real_data_dir), "--quiet"]
    assert main([*run, "--min-score-sweep", "1.01,0.9", "--output", str(tmp_path / "sweep.json")]) == 0
    sweep = json.loads((tmp_path / "sweep.json").read_text())["min_score_sweep"]
    assert list(sweep) == ["None", "0.9", "1.01"] and "min score   0.9: NER F1" in capsys.readouterr().out
    assert sweep["1.01"]["ner"]["tp"] == sweep["1.01"]["ner"]["fp"] == 0  # sparse scores reach 1.0 at most
    assert 0 < sweep["0.9"]["ner"]["fp"] < sweep["None"]["ner"]["fp"]
    assert main([*run, "--min-score", "0.9", "--output", str(tmp_path / "once.json")]) == 0
    once = json.loads((tmp_path / "once.json").read_text())
    assert once["min_score"] == 0.9 and {"ner": once["ner"], **once["joint"]} == sweep["0.9"]


def test_the_default_link_threshold_is_a_share_of_a_cosine_linkers_top_score(tmp_path):
    from biosyn.encoders.dense import DenseEncoder
    from biosyn.model.presets import MIN_LINK_SHARE
    from tiny import tiny_bert

    bert, tokenizer = tiny_bert(tmp_path / "bert")
    vocab = tiny_vocabulary()
    # The packaged MiniLM's settings give its dev-chosen 1.0; a trained linker's scale gives the same share of its top.
    for similarity, scale, weight, want in [("cosine", 1.0, 0.2, 1.0), ("cosine", 20.0, 0.8, round(MIN_LINK_SHARE * 20.8, 4)),
                                            ("dot", 1.0, 0.2, None)]:
        linker = BioSyn(DenseEncoder(bert, tokenizer), similarity=similarity, scale=scale, sparse_weight=weight)
        linker.build_index(build_dictionary(vocab), vocab)
        assert loading.default_min_score(linker) == want
        assert loading.default_min_score(linker, mode="dense") is None and loading.default_min_score(linker, 3.0) == 3.0
