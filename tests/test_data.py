import gzip
import json
import os
import stat
import subprocess
import sys
import time

import pytest

from biosyn.data.biosyn_files import read_concept_file, read_dictionary, write_concept_file, write_dictionary
from biosyn.data.ctd import read_ctd
from biosyn.data.custom import read_jsonl_vocabulary, read_tsv_vocabulary, write_jsonl_vocabulary
from biosyn.data.errors import FormatError
from biosyn.data.fetch import DOWNLOADS, ChecksumError, fetch
from biosyn.data.ids import normalize_id, split_ids
from biosyn.data.medic import read_medic
from biosyn.data.pubtator import parse_pubtator, read_pubtator, write_pubtator
from biosyn.data.records import Concept, Dictionary, DictionaryEntry, Query, Vocabulary
from biosyn.data.vocabularies import detect_format, load_vocabulary

PUBTATOR = """\
9949209|t|Genetic mapping of the copper toxicosis locus.
9949209|a|Wilson disease (WD) is rare.
9949209\t23\t39\tcopper toxicosis\tModifier\tOMIM:215600
9949209\t47\t61\tWilson disease\tSpecificDisease\t D006527
9949209\t47\t61\tWilson disease  \tSpecificDisease\tD006527+D009999

8528200|t|Breast and ovarian cancer.
8528200|a|
8528200\t0\t25\tBreast and ovarian cancer\tCompositeMention\tD001943|D010051

8528200|t|Breast and ovarian cancer.
8528200|a|
8528200\t0\t25\tBreast and ovarian cancer\tCompositeMention\tD001943|D010051
"""

BC5CDR = """\
227508|t|Naloxone reverses hypertension.
227508|a|Naloxone was given.
227508\t0\t8\tNaloxone\tChemical\tD009270
227508\t18\t30\thypertension\tDisease\tD006973
227508\t32\t40\tNaloxone\tChemical\t-1
227508\tCID\tD009270\tD006973
"""


def test_ids():
    assert normalize_id(" OMIM:215600") == "215600"
    assert normalize_id("MESH:D001943 ") == "D001943"
    assert split_ids("D001943|D010051") == ("D001943", "D010051")
    assert split_ids(" D015862+D058499") == ("D015862", "D058499")
    assert split_ids("-1") == ()
    assert split_ids("D1|D1") == ("D1",)


def test_pubtator_quirks(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(PUBTATOR)
    docs = read_pubtator(path)
    assert [d.pmid for d in docs] == ["9949209", "8528200", "8528200"]
    first = docs[0]
    assert first.text == "Genetic mapping of the copper toxicosis locus. Wilson disease (WD) is rare."
    copper, wilson, spaced = first.mentions
    assert copper.ids == ("215600",) and copper.type == "Modifier"
    assert first.text[copper.start:copper.end] == "copper toxicosis"
    assert wilson.ids == ("D006527",)
    assert spaced.text == "Wilson disease" and spaced.ids == ("D006527", "D009999")
    assert docs[1].mentions[0].is_composite and docs[1].title == "Breast and ovarian cancer."


def test_pubtator_relations_types_and_unknown_ids():
    docs = list(parse_pubtator(BC5CDR.splitlines(), types={"Disease"}))
    assert len(docs) == 1
    (doc,) = docs
    assert [m.text for m in doc.mentions] == ["hypertension"]
    assert doc.relations[0].type == "CID" and doc.relations[0].arguments == ("D009270", "D006973")
    every = list(parse_pubtator(BC5CDR.splitlines()))[0].mentions
    assert every[2].ids == ()


def test_pubtator_errors_name_line_and_field(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1|t|T\n1|a|A\n1\tx\t4\tT\tDisease\tD1\n1\t0\t1\tT\tDisease\tD2\n")
    with pytest.raises(FormatError, match=r"bad.txt:3: start/end"):
        read_pubtator(path)
    skipped = []
    docs = read_pubtator(path, skipped=skipped)
    assert len(skipped) == 1 and skipped[0].line == 3
    assert [m.ids for m in docs[0].mentions] == [("D2",)]
    with pytest.raises(FormatError, match=r":1: line"):
        list(parse_pubtator(["garbage line"]))


def test_pubtator_round_trip(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text(BC5CDR)
    docs = read_pubtator(src)
    out = write_pubtator(docs, tmp_path / "out.txt")
    assert read_pubtator(out) == docs


def test_medic(tmp_path):
    path = tmp_path / "medic.txt"
    path.write_text("D017092|263700||Porphyria, Erythropoietic|CEP|Congenital Erythropoietic Porphyria\nC565588||Epidermolysis Bullosa\n")
    vocab = read_medic(path)
    assert len(vocab) == 2
    c = vocab.get("263700")
    assert c.id == "D017092" and c.alt_ids == ("263700",)
    assert c.names == ("Porphyria, Erythropoietic", "CEP", "Congenital Erythropoietic Porphyria")
    assert vocab.resolve("263700") == "D017092" and "C565588" in vocab and "X" not in vocab
    path.write_text("114480|D001943||Breast Neoplasms\n")
    assert read_medic(path).get("114480").ids == ("D001943", "114480")
    path.write_text("D1||a\nD2|b\n")
    with pytest.raises(FormatError, match=r"medic.txt:2: line"):
        read_medic(path)
    skipped = []
    assert len(read_medic(path, skipped=skipped)) == 1 and len(skipped) == 1


CTD_ROWS = (
    "# header\n#\n# Fields:\n# DiseaseName\tDiseaseID\tAltDiseaseIDs\tDefinition\tParentIDs\tTreeNumbers\tParentTreeNumbers\tSynonyms\tSlimMappings\n#\n"
    "Wilson Disease\tMESH:D006527\tDO:DOID:893|OMIM:277900\tdef\tMESH:D1\tC1\tC0\tHepatolenticular Degeneration|Wilson Disease\tMetabolic disease\n"
    "Cancer\tMESH:D009369\t\t\t\t\t\t\t\n"
)


@pytest.mark.parametrize("gz", [False, True])
def test_ctd(tmp_path, gz):
    path = tmp_path / ("CTD_diseases.tsv.gz" if gz else "CTD_diseases.tsv")
    if gz:
        with gzip.open(path, "wt") as f:
            f.write(CTD_ROWS)
    else:
        path.write_text(CTD_ROWS)
    vocab = load_vocabulary(path)
    assert detect_format(path) == "ctd"
    wilson = vocab.get("277900")
    assert wilson.id == "D006527" and wilson.alt_ids == ("DO:DOID:893", "277900")
    assert wilson.synonyms == ("Hepatolenticular Degeneration",)
    assert vocab.get("D009369").names == ("Cancer",)


def test_ctd_error(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("# CTD\nName\t\n")
    with pytest.raises(FormatError, match=r"c.tsv:2: DiseaseID"):
        read_ctd(path)


def test_custom_vocabularies(tmp_path):
    tsv = tmp_path / "v.tsv"
    tsv.write_text("id\tname\tsynonyms\nX:1\tFoo disease\tfoo|Foo disease\nX:2\tBar\n")
    vocab = read_tsv_vocabulary(tsv)
    assert [c.names for c in vocab] == [("Foo disease", "foo"), ("Bar",)]
    jsonl = tmp_path / "v.jsonl"
    write_jsonl_vocabulary(vocab, jsonl)
    again = load_vocabulary(jsonl)
    assert list(again) == list(vocab)
    jsonl.write_text('{"id": "A", "name": "a"}\n{"id": "B", "synonyms": ["b"]}\n{"id": "C", "name": "c", "synonyms": "c"}\nnot json\n')
    with pytest.raises(FormatError, match=r"v.jsonl:2: name"):
        read_jsonl_vocabulary(jsonl)
    skipped = []
    assert [c.id for c in read_jsonl_vocabulary(jsonl, skipped=skipped)] == ["A"]
    assert [(e.line, e.field) for e in skipped] == [(2, "name"), (3, "synonyms"), (4, "json")]


def test_vocabulary_merges_repeated_ids():
    vocab = Vocabulary([Concept("D1", "a", ("1",), ("b",)), Concept("D1", "c", ("2",), ("a",))])
    (c,) = list(vocab)
    assert c.names == ("a", "b", "c") and c.alt_ids == ("1", "2")


def test_biosyn_files_round_trip(tmp_path):
    d = Dictionary([DictionaryEntry("wilson disease", ("D006527",)), DictionaryEntry("cep", ("D017092", "263700"))])
    d.add("wilson disease", ("277900",))
    path = write_dictionary(d, tmp_path / "dict.txt")
    assert path.read_text() == "D006527|277900||wilson disease\nD017092|263700||cep\n"
    assert list(read_dictionary(path)) == list(d)
    assert load_vocabulary(path, format="biosyn-dict").get("277900").name == "wilson disease"
    queries = [Query("breast and ovarian cancer", ("breast cancer", "ovarian cancer"), ("D001943", "D010051"), "CompositeMention", "1", 0, 25)]
    concept = write_concept_file(queries, tmp_path / "1.concept")
    assert concept.read_text() == "1||0|25||CompositeMention||breast cancer|ovarian cancer||D001943|D010051\n"
    assert read_concept_file(concept)[0].parts == queries[0].parts
    concept.write_text("1||0|x||T||m||D1\n")
    with pytest.raises(FormatError, match=r"1.concept:1: start\|end"):
        read_concept_file(concept)


def test_fetch_checks_and_writes_atomically(tmp_path):
    payload = b"C1||a\n"
    item = DOWNLOADS["medic-2012"][0]
    with pytest.raises(ChecksumError):
        fetch(["medic-2012"], tmp_path, get=lambda url: payload)
    assert not any(tmp_path.rglob("*medic*"))
    ctd = fetch(["ctd"], tmp_path, get=lambda url: b"\x1f\x8b fake")
    assert ctd[0].read_bytes() == b"\x1f\x8b fake"
    source = json.loads((ctd[0].parent / "SOURCE.json").read_text())
    assert source["url"].endswith("CTD_diseases.tsv.gz") and len(source["sha256"]) == 64
    assert item.target == "medic/medic_06Jul2012.txt"


def test_real_files(real_data_dir):
    docs = read_pubtator(real_data_dir / "ncbi-disease" / "NCBItrainset_corpus.txt")
    assert len(docs) == 593 and sum(len(d.mentions) for d in docs) == 5145
    assert [d.pmid for d in docs].count("8528200") == 2
    assert all(d.text[m.start:m.end] == m.text for d in docs for m in d.mentions)
    medic = load_vocabulary("medic-2012", data_dir=real_data_dir)
    assert len(medic) == 11915 and medic.n_names == 76237
    ctd = load_vocabulary("ctd", data_dir=real_data_dir)
    assert len(ctd) == 11865


# -- hardening (issue 11) ----------------------------------------------------------------------


def test_a_bom_does_not_corrupt_the_first_record(tmp_path):
    bom = "\ufeff"
    tsv = tmp_path / "v.tsv"
    tsv.write_text(bom + "X:1\tFoo\n")
    assert [c.id for c in read_tsv_vocabulary(tsv)] == ["X:1"]
    jsonl = tmp_path / "v.jsonl"
    jsonl.write_text(bom + '{"id": "A", "name": "a"}\n')
    assert [c.id for c in read_jsonl_vocabulary(jsonl)] == ["A"]
    medic = tmp_path / "m.txt"
    medic.write_text(bom + "D1||a\n")
    assert [c.id for c in read_medic(medic)] == ["D1"]
    pubtator = tmp_path / "p.txt"
    pubtator.write_text(bom + BC5CDR)
    assert [d.pmid for d in read_pubtator(pubtator)] == ["227508"]
    assert [d.pmid for d in parse_pubtator((bom + BC5CDR).splitlines())] == ["227508"]


@pytest.mark.parametrize("reader", [read_tsv_vocabulary, read_jsonl_vocabulary, read_medic, read_ctd, read_pubtator,
                                    read_dictionary, read_concept_file])
def test_undecodable_bytes_name_file_and_line(tmp_path, reader):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"\n\xff\xfe\x00junk\n")
    with pytest.raises(FormatError, match=r"bad.tsv:2: encoding: not UTF-8: byte 0xff at column 1"):
        reader(path)


def test_undecodable_lines_are_skipped_and_counted(tmp_path):
    path = tmp_path / "v.tsv"
    path.write_bytes(b"X:1\tFoo\nX:2\t\xe9t\xe9\nX:3\tBar\n")
    skipped = []
    assert [c.id for c in read_tsv_vocabulary(path, skipped=skipped)] == ["X:1", "X:3"]
    assert [(e.line, e.field) for e in skipped] == [(2, "encoding")]


def test_damaged_gzip_names_the_file(tmp_path):
    path = tmp_path / "CTD_diseases.tsv.gz"
    path.write_bytes(gzip.compress(CTD_ROWS.encode())[:40])
    with pytest.raises(FormatError, match=r"CTD_diseases.tsv.gz:\d+: gzip"):
        read_ctd(path)


@pytest.mark.parametrize("line, problem", [
    ("1\t3\t3\tT\tDisease\tD1", "invalid span 3-3"),
    ("1\t0\t40\tTitle. Abstract.\tDisease\tD1", "span 0-40 ends past the document's 16 characters"),
    ("1\t0\t5\tAbstr\tDisease\tD1", "'Abstr' is not the document's text 'Title' at 0-5"),
])
def test_pubtator_spans_must_fit_the_text(tmp_path, line, problem):
    lines = ["1|t|Title.", "1|a|Abstract.", line]
    with pytest.raises(FormatError, match=r"<input>:3: (start/end|text): " + problem.replace("(", r"\(")):
        list(parse_pubtator(lines, check_text=True))
    skipped = []
    (doc,) = parse_pubtator(lines, skipped=skipped, check_text=True)
    assert doc.mentions == [] and len(skipped) == 1
    path = tmp_path / "p.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FormatError, match=r"p.txt:3: (start/end|text): " + problem.replace("(", r"\(")):
        read_pubtator(path)


def test_strict_json_lines(tmp_path):
    jsonl = tmp_path / "v.jsonl"
    jsonl.write_text('{"id": "A", "name": "a", "x": NaN}\n' + "[" * 100_000 + "\n" + '{"id": "B", "name": "b"}\n')
    skipped = []
    assert [c.id for c in read_jsonl_vocabulary(jsonl, skipped=skipped)] == ["B"]
    assert [(e.line, e.message) for e in skipped] == [(1, "NaN is not a JSON number"), (2, "nested too deeply")]


def test_atomic_writes_respect_the_umask(tmp_path):
    from biosyn.data.atomic import atomic_dir, atomic_write

    old = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "out.txt") as out:
            out.write("x")
        with atomic_dir(tmp_path / "folder") as folder:
            (folder / "inner.txt").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o750


def test_atomic_write_onto_a_folder_names_it(tmp_path):
    from biosyn.data.atomic import atomic_write

    (tmp_path / "out").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        with atomic_write(tmp_path / "out") as out:
            out.write("x")
    assert caught.value.filename == str(tmp_path / "out")
    assert os.listdir(tmp_path) == ["out"]


def test_stale_temporaries_of_killed_writes_are_removed(tmp_path):
    from biosyn.data.atomic import STALE_AFTER_S, _temp_name, atomic_dir

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = _temp_name(tmp_path / "idx")  # this process's name pattern, then the dead one's pid
    killed = tmp_path / live.name.replace(f"-{os.getpid()}.", f"-{dead.pid}.")
    killed.mkdir()
    (killed / "dense.npy").write_bytes(b"half")
    legacy_old = tmp_path / ".idx.k2j3h4.tmp"  # mkstemp's name, before pids were in it
    legacy_old.mkdir()
    os.utime(legacy_old, (time.time() - STALE_AFTER_S - 60,) * 2)
    legacy_new = tmp_path / ".idx.a1b2c3.tmp"
    legacy_new.write_text("maybe another process's write in progress")
    old_dir = tmp_path / f".idx.old.{dead.pid}"
    old_dir.mkdir()
    other_target = tmp_path / f".idxs.{live.name.split('.', 3)[2]}.1.tmp"
    other_target.mkdir()
    with atomic_dir(tmp_path / "idx") as folder:
        (folder / "manifest.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".idx.a1b2c3.tmp", other_target.name, "idx"])


def test_real_bc5cdr_files_and_their_protocol(real_data_dir):
    from biosyn.data.locate import corpus, data_file
    from biosyn.evaluation.protocol import load_benchmark
    from biosyn.preprocess.corpus import corpus_preprocessor

    files = corpus("bc5cdr-disease")
    train, dev = (read_pubtator(data_file(files.splits[s], real_data_dir), types=files.entity_types) for s in ("train", "dev"))
    assert (len(train), len(dev)) == (500, 500)
    assert (sum(len(d.mentions) for d in train), sum(len(d.mentions) for d in dev)) == (4182, 4244)
    assert all(d.text[m.start:m.end] == m.text for d in train + dev for m in d.mentions)
    # BioSyn's protocol for BC5CDR: no-gold (-1) and unknown-ID mentions are left out, and counted.
    # (Ab3P does not change these counts and takes most of the time, so it is off here.)
    preprocessor = corpus_preprocessor("bc5cdr-disease", real_data_dir, resolve_abbreviations=False)
    described = load_benchmark("bc5cdr-disease", "dev", data_dir=real_data_dir, preprocessor=preprocessor).describe()
    assert (described["dropped_without_gold"], described["dropped_unknown_ids"], described["kept_unknown_ids"]) == (16, 49, 0)
    assert described["queries"] == 4244 - 16 - 49
    kept = load_benchmark("bc5cdr-disease", "dev", data_dir=real_data_dir, preprocessor=preprocessor, drop_unknown=False)
    assert kept.describe()["kept_unknown_ids"] == 49
    # The test split is published but absent here: the error names the file and how to get it.
    if not (real_data_dir / files.splits["test"]).exists():
        with pytest.raises(FileNotFoundError, match=r"CDR_TestSet.*biosyn data fetch"):
            load_benchmark("bc5cdr-disease", "test", data_dir=real_data_dir, preprocessor=preprocessor)
