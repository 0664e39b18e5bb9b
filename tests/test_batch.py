"""`biosyn batch` on a local Ray: counts kept, finished shards skipped, damaged ones redone, a dying worker survived;
and the PubMed XML reader. Ray starts once for the module; each run starts its actors anew (a few seconds each)."""

import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'biosyn[scale]')")

from biosyn.annotation.annotator import Annotator  # noqa: E402
from biosyn.data.errors import FormatError  # noqa: E402
from biosyn.data.pubmed import iter_pubmed, read_pubmed  # noqa: E402
from biosyn.data.sources import read_file  # noqa: E402
from biosyn.model.specs import load_model  # noqa: E402
from biosyn.preprocess.pipeline import build_dictionary  # noqa: E402
from biosyn.scale.batch import BatchJob, ShardWorker, run_batch  # noqa: E402
from biosyn.scale.shards import Shard, annotate_shard, plan_shards, read_rows, shard_status  # noqa: E402
from biosyn.search.index import NameIndex  # noqa: E402
from tiny import tiny_tagger, tiny_vocabulary  # noqa: E402

PUBMED = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE PubmedArticleSet PUBLIC "-//NLM//DTD PubMedArticle, 1st January 2025//EN" "https://dtd.nlm.nih.gov/ncbi/pubmed/out/pubmed_250101.dtd">
<PubmedArticleSet>
<PubmedArticle>
  <MedlineCitation Status="MEDLINE" Owner="NLM">
    <PMID Version="1">101</PMID>
    <Article PubModel="Print">
      <ArticleTitle>Lynch syndrome and <i>HNPCC</i>.</ArticleTitle>
      <Abstract>
        <AbstractText Label="BACKGROUND" NlmCategory="BACKGROUND">Wilson disease is rare.</AbstractText>
        <AbstractText Label="RESULTS" NlmCategory="RESULTS">Breast cancer, H<sub>2</sub>O.</AbstractText>
      </Abstract>
    </Article>
  </MedlineCitation>
  <PubmedData><ReferenceList><Reference><ArticleIdList><ArticleId IdType="pubmed">999</ArticleId></ArticleIdList></Reference></ReferenceList></PubmedData>
</PubmedArticle>
<PubmedArticle>
  <MedlineCitation><Article><ArticleTitle>An article without its PMID.</ArticleTitle></Article></MedlineCitation>
</PubmedArticle>
<PubmedArticle>
  <MedlineCitation><PMID Version="1">103</PMID><Article><ArticleTitle>No abstract here.</ArticleTitle></Article></MedlineCitation>
</PubmedArticle>
<DeleteCitation><PMID Version="1">77</PMID><PMID Version="1">78</PMID></DeleteCitation>
</PubmedArticleSet>
"""


def write_pubmed(path: Path, text: str = PUBMED) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(text)
    return path


def test_pubmed_articles_sections_deletions_and_bad_articles(tmp_path):
    path = write_pubmed(tmp_path / "pubmed25n0001.xml.gz")
    deleted: list[str] = []
    records = list(iter_pubmed(path, deleted))
    assert [(r.position, r.pmid) for r in records] == [(1, "101"), (2, None), (3, "103")]
    doc = records[0].document
    assert doc.title == "Lynch syndrome and HNPCC."
    assert doc.abstract == "BACKGROUND: Wilson disease is rare. RESULTS: Breast cancer, H2O."
    assert records[2].document.text == "No abstract here."
    assert str(records[1].error) == f"{path}: PubmedArticle 2: no PMID"
    assert deleted == ["77", "78"]
    skipped: list[FormatError] = []
    assert [d.pmid for d in read_pubmed(path, skipped)] == ["101", "103"] and len(skipped) == 1
    # As `biosyn annotate` and `biosyn batch` read it: the bad article in its place, told by the name.
    sources = read_file(path)
    assert [(s.id, s.doc is None) for s in sources] == [("101", False), ("pubmed25n0001.xml.gz:article2", True), ("103", False)]
    assert sources[0].spans is None  # the tagger finds the mentions


def test_pubmed_broken_xml_keeps_the_articles_before(tmp_path):
    third = PUBMED.index("<PubmedArticle>", PUBMED.index("without its PMID"))
    cut = PUBMED[:third] + "<PubmedArticle><Medline"
    path = write_pubmed(tmp_path / "cut.xml.gz", cut)
    with pytest.raises(FormatError, match=r":20: xml: unclosed token: line 20, column 15 \(after 2 articles\)"):
        list(iter_pubmed(path))
    sources = read_file(path)
    assert [s.id for s in sources] == ["101", "cut.xml.gz:article2", "cut.xml.gz:rest"]
    assert "cut.xml.gz" in sources[-1].error


def test_shards_of_files_folders_and_globs(tmp_path):
    (tmp_path / "shards").mkdir()
    for name in ("pubmed25n0001.xml.gz", "pubmed25n0001.xml.gz.md5", "pubmed25n0002.xml.gz", ".hidden.jsonl"):
        (tmp_path / "shards" / name).write_text("")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "one.txt").write_text("Wilson disease.")
    shards = plan_shards([str(tmp_path / "shards"), str(tmp_path / "notes"), str(tmp_path / "shards" / "*0002.xml.gz")])
    assert [(s.name, Path(s.path).name, s.folder) for s in shards] == [
        ("pubmed25n0001", "pubmed25n0001.xml.gz", False), ("pubmed25n0002", "pubmed25n0002.xml.gz", False), ("notes", "notes", True)]
    (tmp_path / "b.jsonl").write_text("")
    (tmp_path / "b.pubtator").write_text("")
    with pytest.raises(ValueError, match="would both write shard 'b'"):
        plan_shards([str(tmp_path / "b.*")])
    with pytest.raises(FileNotFoundError, match="nothing matches"):
        plan_shards([str(tmp_path / "nothing*.xml")])


def test_without_a_tagger_documents_without_spans_are_counted_bad(tmp_path):
    vocabulary = tiny_vocabulary()
    linker = load_model("sparse")
    linker.build_index(build_dictionary(vocabulary), vocabulary)
    shard = Shard("pubmed", str(write_pubmed(tmp_path / "pubmed.xml.gz")))
    manifest = annotate_shard(Annotator(None, linker), shard, tmp_path / "out", {}, job_fingerprint="x")
    assert manifest["counts"] == {"documents": 3, "annotated": 0, "bad": 3, "mentions": 0}
    assert [b["id"] for b in manifest["bad"]] == ["101", "pubmed.xml.gz:article2", "103"]
    assert manifest["bad"][0]["error"].startswith("101: annotation failed: ValueError: no tagger")
    assert [(r["document"], r["position"]) for r in read_rows(tmp_path / "out" / "pubmed.mentions.jsonl")] == [
        ("101", 0), ("pubmed.xml.gz:article2", 1), ("103", 2)]


def test_a_sure_span_that_links_weakly_is_kept_unlinked_with_its_confidence_in_parquet(tmp_path):
    from tiny import FakeTagger

    vocabulary = tiny_vocabulary()
    linker = load_model("sparse")
    linker.build_index(build_dictionary(vocabulary), vocabulary)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "n1.txt").write_text("Lynch syndrome raises colorectal cancer risk.")
    tagger = FakeTagger(confidence={"colorectal cancer": 0.99, "lynch syndrome": 0.5})
    annotator = Annotator(tagger, linker, min_score=0.7)  # colorectal cancer links at 0.62
    annotate_shard(annotator, Shard("notes", str(tmp_path / "notes"), folder=True), tmp_path / "out", {}, job_fingerprint="x",
                   output_format="parquet")
    rows = read_rows(tmp_path / "out" / "notes.mentions.parquet")
    assert [(r["text"], r["ids"], r["confidence"]) for r in rows] == [
        ("Lynch syndrome", ["D003123"], 0.5), ("colorectal cancer", [], 0.99)]


# -- the batch job on Ray ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's own workers, for the actors
    yield
    ray.shutdown()


def doc(i, text, spans):
    return json.dumps({"id": i, "text": text, "mentions": [{"start": text.index(s), "end": text.index(s) + len(s)} for s in spans]})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, local_ray):
    """Two JSONL shards and a PubTator shard, all with their spans (so no tagger is needed), a bad line and an empty document."""
    root = tmp_path_factory.mktemp("batch")
    vocabulary = tiny_vocabulary()
    linker = load_model("sparse")
    linker.build_index(build_dictionary(vocabulary), vocabulary).save(root / "index")
    inputs = root / "inputs"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text("\n".join([
        doc("a1", "Wilson disease and breast cancer.", ["Wilson disease", "breast cancer"]),
        doc("a2", "Nothing to see.", []),
        "{not json",
        doc("a1", "HNPCC again, under a repeated ID.", ["HNPCC"]),
    ]) + "\n")
    (inputs / "b.jsonl").write_text(doc("b1", "Lynch syndrome (HNPCC).", ["Lynch syndrome", "HNPCC"]) + "\n")
    (inputs / "c.pubtator").write_text("7|t|Ovarian cancer.\n7|a|Tumor cells.\n7\t0\t14\tOvarian cancer\tDisease\tD010051\n")
    job = BatchJob.create(linker, root / "index", None)
    return root, plan_shards([str(inputs)]), job


EXPECTED = {  # shard -> (documents, bad, mentions), and the mention rows (document, position, text, best ID)
    "a": ((4, 1, 3), [("a1", 0, "Wilson disease", ["D006527"]), ("a1", 0, "breast cancer", ["D001943"]), ("a1", 3, "HNPCC", ["D003123"])]),
    "b": ((1, 0, 2), [("b1", 0, "Lynch syndrome", ["D003123"]), ("b1", 0, "HNPCC", ["D003123"])]),
    "c": ((1, 0, 1), [("7", 0, "Ovarian cancer", ["D010051"])]),
}


def check_complete(report, out: Path, fmt: str = "jsonl"):
    assert report.missing == {} and report.errors == []
    for name, ((documents, bad, mentions), rows) in EXPECTED.items():
        counts = report.manifests[name]["counts"]
        assert (counts["documents"], counts["bad"], counts["mentions"]) == (documents, bad, mentions)
        assert counts["annotated"] + counts["bad"] == counts["documents"]
        got = read_rows(out / f"{name}.mentions.{fmt}")
        assert sorted({r["position"] for r in got}) == list(range(documents))  # documents in = documents out
        assert [(r["document"], r["position"], r["text"], r["ids"]) for r in got if r["start"] is not None] == rows
    assert report.bad == [("a", "a:3", report.manifests["a"]["bad"][0]["error"])]
    assert report.manifests["a"]["bad"][0]["error"].endswith("a.jsonl:3: json: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)")


@pytest.fixture(scope="module")
def done(corpus, tmp_path_factory):
    """The corpus run once with two actors: its output folder and report."""
    root, shards, job = corpus
    out = tmp_path_factory.mktemp("done")
    return out, run_batch(shards, out, job, workers=2)


def copy_of(folder: Path, tmp_path: Path) -> Path:
    shutil.copytree(folder, tmp_path / "out")
    return tmp_path / "out"


@pytest.mark.slow
def test_counts_kept_then_a_rerun_skips_every_done_shard(corpus, done, tmp_path):
    root, shards, job = corpus
    assert [s.name for s in shards] == ["a", "b", "c"]
    folder, report = done
    assert report.redone == {"a": "not done", "b": "not done", "c": "not done"} and report.skipped == []
    check_complete(report, folder)
    out = copy_of(folder, tmp_path)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_batch(shards, out, job, workers=2)
    assert again.skipped == ["a", "b", "c"] and again.redone == {}
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamps
    check_complete(again, out)


@pytest.mark.slow
def test_damaged_and_stale_shards_are_redone(corpus, done, tmp_path):
    root, shards, job = corpus
    out = copy_of(done[0], tmp_path)
    good = (out / "a.mentions.jsonl").read_bytes()
    (out / "a.mentions.jsonl").write_bytes(good[:-40])  # truncated
    (out / "b.manifest.json").write_text("{")  # a damaged manifest
    manifest = json.loads((out / "c.manifest.json").read_text())
    manifest["output_sha256"] = "0" * 64  # a wrong checksum
    (out / "c.manifest.json").write_text(json.dumps(manifest))
    report = run_batch(shards, out, job, workers=1, retries=0)
    assert report.redone == {"a": "output a.mentions.jsonl damaged (checksum differs from the manifest's)",
                             "b": "damaged manifest", "c": "output c.mentions.jsonl damaged (checksum differs from the manifest's)"}
    assert (out / "a.mentions.jsonl").read_bytes() == good
    check_complete(report, out)
    other = BatchJob.create(load_model("sparse").use_index(NameIndex.load(root / "index")), root / "index", None, min_score=0.5)
    assert shard_status(shards[0], out, other.fingerprint, "jsonl") == "stale: done with another model, index, tagger or settings"
    (root / "inputs" / "b.jsonl").write_text((root / "inputs" / "b.jsonl").read_text())  # the same bytes: still done
    assert shard_status(shards[1], out, job.fingerprint, "jsonl") is None


class DiesOnce(ShardWorker):
    """Kills its own process on its first shard, once for the whole job (a marker file remembers)."""

    def __call__(self, batch):
        marker = Path(self.output_dir) / ".died"
        if not marker.exists():
            marker.write_text("")
            os._exit(1)
        return super().__call__(batch)


class DiesOnB(ShardWorker):
    def __call__(self, batch):
        if '"b"' in str(batch["shard"][0]):
            os._exit(1)
        return super().__call__(batch)


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_restarted_and_counts_stay_complete(corpus, tmp_path):
    root, shards, job = corpus
    report = run_batch(shards, tmp_path, job, workers=1, worker_class=DiesOnce)
    assert (tmp_path / ".died").exists()
    check_complete(report, tmp_path)


@pytest.mark.slow
def test_a_shard_that_always_kills_its_worker_is_named_missing(corpus, tmp_path):
    root, shards, job = corpus
    report = run_batch(shards, tmp_path, job, workers=1, worker_class=DiesOnB, retries=1)
    assert report.missing == {"b": "not done"} and sorted(report.manifests) == ["a", "c"]
    assert report.total("documents") == 5  # a re-run, once whatever kills the worker is fixed, does b alone


@pytest.mark.slow
def test_the_command_writes_parquet_and_a_summary(corpus, tmp_path, capsys):
    from biosyn.interfaces.cli import main

    root, shards, job = corpus
    args = ["batch", str(root / "inputs"), "--output", str(tmp_path), "--format", "parquet", "--model", "sparse",
            "--index", str(root / "index"), "--workers", "1"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "3 shards: 3 done now, 0 already done, 0 missing" in err
    assert "6 documents, 5 annotated, 6 mentions, 1 bad" in err
    assert "bad: a: a:3: " in err
    summary = json.loads((tmp_path / "batch-summary.json").read_text())
    assert summary["counts"] == {"documents": 6, "annotated": 5, "bad": 1, "mentions": 6}
    assert read_rows(tmp_path / "c.mentions.parquet")[0]["ids"] == ["D010051"]
    assert read_rows(tmp_path / "c.mentions.parquet")[0]["confidence"] is None  # a given span: no tagger confidence
    assert main(args) == 0
    assert "0 done now, 3 already done" in capsys.readouterr().err
    shutil.rmtree(tmp_path)


@pytest.mark.slow
def test_the_tagger_finds_mentions_on_ray_exactly_as_in_one_process(corpus, tmp_path):
    """PubMed XML and a folder of .txt files have no spans: the actors' tagger finds them, as one process's does."""
    from biosyn.ner.tagger import DiseaseTagger

    root, _, _ = corpus
    inputs = tmp_path / "inputs"
    (inputs / "notes").mkdir(parents=True)
    write_pubmed(inputs / "pubmed.xml.gz")
    (inputs / "notes" / "n1.txt").write_text("lynch syndrome and hnpcc in a family")
    (inputs / "notes" / "n2.txt").write_text("")
    tiny_tagger(tmp_path / "tagger")
    linker = load_model("sparse").use_index(NameIndex.load(root / "index"))
    job = BatchJob.create(linker, root / "index", tmp_path / "tagger")
    shards = plan_shards([str(inputs / "pubmed.xml.gz"), str(inputs / "notes")])
    report = run_batch(shards, tmp_path / "ray", job, workers=1, retries=0)
    assert report.missing == {} and report.total("documents") == 5 and report.total("bad") == 1
    annotator = Annotator(DiseaseTagger.from_pretrained(tmp_path / "tagger"), linker)
    for shard in shards:
        annotate_shard(annotator, shard, tmp_path / "one", job.settings, job_fingerprint=job.fingerprint)
        ours, theirs = (tmp_path / d / f"{shard.name}.mentions.jsonl" for d in ("ray", "one"))
        assert ours.read_bytes() == theirs.read_bytes()
    rows = read_rows(tmp_path / "ray" / "notes.mentions.jsonl")
    assert sorted({(r["document"], r["position"]) for r in rows}) == [("n1", 0), ("n2", 1)]
