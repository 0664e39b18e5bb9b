import json
import re

import pytest

from biosyn.interfaces.cli import main


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOSYN_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    # The command column of the help, not a word anywhere in it ("evaluate" is also in reproduce's help).
    listed = re.findall(r"^    ([a-z]+)(?: |$)", out, flags=re.MULTILINE)
    assert listed == ["data", "evaluate", "index", "normalize", "annotate", "serve", "train", "pretrain", "reproduce",
                      "soup", "rerank", "tagger", "batch", "export"]


def test_missing_data_is_a_clear_error(tmp_path, capsys):
    assert main(["evaluate", "--model", "sparse", "--data-dir", str(tmp_path)]) == 2
    assert "biosyn data fetch" in capsys.readouterr().err


def test_normalize_files(real_data_dir, cache, capsys):
    tsv = cache / "in.tsv"
    tsv.write_text("mention\ttext\nWilson disease\t\n\tno mention here\nWD\tWilson disease (WD) is a copper disorder.\n")
    out = cache / "out.tsv"
    assert main(["normalize", "--model", "sparse", "--data-dir", str(real_data_dir), "--input", str(tsv), "--output", str(out)]) == 0
    rows = [line.split("\t") for line in out.read_text().splitlines()]
    assert rows[0] == ["mention", "text", "ids", "preferred_names", "score"]
    assert [r[2] for r in rows[1:]] == ["D006527", "D006527"]
    assert "skipped 1 bad records" in capsys.readouterr().err

    jsonl = cache / "in.jsonl"
    jsonl.write_text('{"mention": "breast and colon cancer", "id": 7}\nnot json\n{"mention": "breast and ovarian cancer"}\n')
    out = cache / "out.jsonl"
    assert main(["normalize", "--model", "sparse", "--data-dir", str(real_data_dir), "--input", str(jsonl), "--output", str(out), "-k", "2"]) == 0
    record, whole = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["id"] == 7 and record["parts"] == ["breast cancer", "colon cancer"]
    assert record["ids"] == ["D001943", "D003110"] and len(record["candidates"][0]) == 2
    # One of NCBI's training mentions in the default dictionary: a name of its own, not split.
    assert whole["parts"] == ["breast and ovarian cancer"] and whole["ids"] == ["D061325"]

    pubtator = cache / "doc.txt"
    pubtator.write_text("1|t|Hereditary nonpolyposis colorectal cancer (HNPCC) in families.\n1|a|HNPCC is common.\n"
                        "1\t43\t48\tHNPCC\tSpecificDisease\t-1\n")
    out = cache / "doc.out.txt"
    assert main(["normalize", "--model", "sparse", "--data-dir", str(real_data_dir), "--input", str(pubtator), "--output", str(out)]) == 0
    assert out.read_text().splitlines()[2] == "1\t43\t48\tHNPCC\tSpecificDisease\tD003123"


@pytest.mark.slow
def test_sparse_evaluation_on_the_real_test_set(real_data_dir, cache, capsys):
    """End to end: BioSyn's protocol on the NCBI disease test set with the sparse model alone."""
    predictions, figures = cache / "pred.jsonl", cache / "figures.json"
    assert main(["evaluate", "--model", "sparse", "--data-dir", str(real_data_dir),
                 "--predictions", str(predictions), "--output", str(figures)]) == 0
    report = json.loads(figures.read_text())
    assert report["queries"] == 960 and report["dictionary_names"] == 73024
    assert report["acc"]["acc@1"] == 87.6 and report["acc"]["acc@5"] == 90.52
    assert sum(t["queries"] for t in report["by_type"].values()) == 960
    lines = predictions.read_text().splitlines()
    assert len(lines) == 960 and json.loads(lines[0])["mention"] == "copper toxicosis"


def test_evaluate_biosyn_preprocessed_queries(real_data_dir, cache, capsys):
    concept = cache / "q" / "1.concept"
    concept.parent.mkdir()
    concept.write_text("1||0|14||SpecificDisease||wilson disease||D006527\n"
                       "1||20|45||CompositeMention||breast cancer|ovarian cancer||D001943|D010051\n"
                       "1||50|55||DiseaseClass||xyzzy||D009369\n")
    figures = cache / "f.json"
    assert main(["evaluate", "--model", "sparse", "--data-dir", str(real_data_dir), "--queries", str(concept.parent),
                 "-k", "1", "--output", str(figures)]) == 0
    report = json.loads(figures.read_text())
    assert report["queries"] == 3 and report["acc"] == {"acc@1": 66.67}


def test_index_build_then_normalize_from_it(tmp_path, capsys):
    vocab = tmp_path / "v.tsv"
    vocab.write_text("X:1\tWilson disease\thepatolenticular degeneration\nX:2\tBreast cancer\tbreast neoplasm\n")
    assert main(["index", "build", str(tmp_path / "idx"), "--model", "sparse", "--vocabulary", str(vocab)]) == 0
    assert "index of 4 names (sparse only)" in capsys.readouterr().out
    assert main(["normalize", "--model", "sparse", "--index", str(tmp_path / "idx"), "--json", "-k", "1", "breast neoplasms"]) == 0, capsys.readouterr().err
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["ids"] == ["X:2"]


def test_pretrain_with_mentions_and_neighbours_then_reproduce_a_soup_of_two_seeds(real_data_dir, tmp_path, capsys):
    from biosyn.data.custom import write_jsonl_vocabulary
    from biosyn.data.pubtator import read_pubtator
    from biosyn.data.records import Vocabulary
    from biosyn.data.vocabularies import load_vocabulary
    from tiny import tiny_bert

    bert, tokenizer = tiny_bert(tmp_path / "bert")
    bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    # MEDIC cut down to the concepts of 40 training abstracts keeps every embedding pass short.
    medic = load_vocabulary("medic-2012", data_dir=real_data_dir)
    docs = read_pubtator(real_data_dir / "ncbi-disease" / "NCBItrainset_corpus.txt")[:40]
    wanted = {medic.resolve(i) for d in docs for m in d.mentions for i in m.ids} - {None}
    small = Vocabulary([medic.get(i) for i in sorted(wanted)])
    write_jsonl_vocabulary(small, tmp_path / "vocab.jsonl")
    data = ["--data-dir", str(real_data_dir), "--vocabulary", str(tmp_path / "vocab.jsonl"), "--quiet"]
    assert main(["pretrain", "--model", str(tmp_path / "bert"), "--mentions", "train", "--steps", "2", "--batch-size", "8",
                 "--neighbours", "4", "--output", str(tmp_path / "pre"), *data]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[0])
    assert 20 < summary["concepts_with_mentions"] <= len(small) and summary["config"]["mention_share"] == 0.5
    # With neighbour batches (only then) the summary reports the time spent finding the neighbours.
    assert summary["config"]["neighbours"] == 4 and isinstance(summary["neighbour_seconds"], float)
    out = tmp_path / "run"
    assert main(["reproduce", "--model", str(tmp_path / "pre"), "--no-pretrain", "--seeds", "0", "1", "--epochs", "1",
                 "--max-steps", "2", "--batch-size", "4", "--add-gold", "--schedule", "linear", "--device", "cpu", "--output", str(out),
                 *data]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["seeds"] == [0, 1] and [r["seed"] for r in result["runs"]] == [0, 1]
    assert result["machine"]["device"] == "cpu"
    assert all(r["test"]["queries"] == 960 for r in result["runs"]) and result["test"]["queries"] == 960
    assert result["training"]["config"]["add_gold"] and result["training"]["config"]["schedule"] == "linear"
    config = json.loads((out / "model" / "biosyn.json").read_text())
    assert config["soup_of"] == [str(out / "seeds" / f"seed-{s}" / "model") for s in (0, 1)]
    card = (out / "model" / "README.md").read_text()
    assert "model soup" in card and "seed [0, 1]" in card and "--add-gold" in card and "linear schedule" in card
    assert main(["soup", *config["soup_of"], "--output", str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "biosyn.json").read_text())["fingerprint"] == config["fingerprint"]


# -- hardening (issue 11) ----------------------------------------------------------------------


@pytest.fixture()
def vocab_file(tmp_path):
    path = tmp_path / "v.tsv"
    path.write_text("X:1\tWilson disease\thepatolenticular degeneration\nX:2\tBreast cancer\tbreast neoplasm\n")
    return path


def _normalize(vocab_file, *args):
    return main(["normalize", "--model", "sparse", "--vocabulary", str(vocab_file), *args])


def test_index_build_keeps_a_folder_that_is_not_an_index(tmp_path, vocab_file, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    assert main(["index", "build", str(folder), "--model", "sparse", "--vocabulary", str(vocab_file)]) == 2
    assert "is a non-empty folder that is not a biosyn index" in capsys.readouterr().err
    assert (folder / "notes.txt").read_text() == "precious"
    assert main(["index", "build", str(folder), "--model", "sparse", "--vocabulary", str(vocab_file), "--force"]) == 0
    assert (folder / "manifest.json").is_file() and not (folder / "notes.txt").exists()
    # An index is replaced without --force; so is an empty folder.
    assert main(["index", "build", str(folder), "--model", "sparse", "--vocabulary", str(vocab_file)]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["index", "build", str(tmp_path / "empty"), "--model", "sparse", "--vocabulary", str(vocab_file)]) == 0


@pytest.mark.parametrize("case", ["input folder", "output folder", "output under a file", "deep json", "bad port"])
def test_os_errors_are_one_line_and_name_the_path(tmp_path, vocab_file, cache, capsys, case):
    mentions = tmp_path / "m.tsv"
    mentions.write_text("Wilson disease\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_text("x")
    if case == "input folder":
        status, named = _normalize(vocab_file, "--input", str(tmp_path / "dir")), tmp_path / "dir"
    elif case == "output folder":
        status, named = _normalize(vocab_file, "--input", str(mentions), "--output", str(tmp_path / "dir")), tmp_path / "dir"
    elif case == "output under a file":
        named = tmp_path / "file" / "out.tsv"
        status = _normalize(vocab_file, "--input", str(mentions), "--output", str(named))
    elif case == "deep json":
        deep = tmp_path / "deep.jsonl"
        deep.write_text("[" * 200_000 + "\n")
        status, named = _normalize(vocab_file, "--input", str(deep)), f"{deep}: no mention to normalise: all 1 records were bad"
    else:
        status, named = main(["serve", "--model", "sparse", "--port", "99999"]), "--port 99999"
    err = capsys.readouterr().err
    assert status == 2
    (line,) = [x for x in err.splitlines() if x.startswith("biosyn: error:")]
    assert line.startswith(f"biosyn: error: {named}") and "Traceback" not in err


def test_a_full_disk_is_a_runtime_failure(tmp_path, vocab_file, cache, capsys, monkeypatch):
    import errno
    import os

    mentions = tmp_path / "m.tsv"
    mentions.write_text("Wilson disease\n")
    real_fsync = os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    status = _normalize(vocab_file, "--input", str(mentions), "--output", str(tmp_path / "out.tsv"))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert status == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"biosyn: error: {tmp_path / 'out.tsv'}: No space left on device"
    assert not (tmp_path / "out.tsv").exists() and not list(tmp_path.glob(".out.tsv.*"))


def test_normalize_reads_a_tsv_named_txt_and_fails_when_nothing_is_read(tmp_path, vocab_file, cache, capsys):
    txt = tmp_path / "mentions.txt"
    txt.write_text("mention\ttext\nwilson disease\t\nbreast neoplasms\t\n")
    out = tmp_path / "out.txt"
    assert _normalize(vocab_file, "--input", str(txt), "--output", str(out)) == 0
    assert [r.split("\t")[2] for r in out.read_text().splitlines()[1:]] == ["X:1", "X:2"]
    assert _normalize(vocab_file, "--input", str(txt), "--output", str(out), "--format", "pubtator") == 2
    err = capsys.readouterr().err
    assert "skipped: " in err and f"{txt}: no mention to normalise: all 3 records were bad (read as pubtator" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"mention": ""}\nnot json\n')
    assert _normalize(vocab_file, "--input", str(bad), "--output", str(tmp_path / "bad.out")) == 2
    assert "all 2 records were bad" in capsys.readouterr().err and not (tmp_path / "bad.out").exists()
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert _normalize(vocab_file, "--input", str(empty)) == 2
    assert "no mention to normalise: it holds none" in capsys.readouterr().err


def test_normalize_jsonl_rejects_nan_and_bom(tmp_path, vocab_file, cache, capsys):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('\ufeff{"mention": "wilson disease", "score": 1}\n{"mention": "breast cancer", "score": NaN}\n')
    out = tmp_path / "out.jsonl"
    assert _normalize(vocab_file, "--input", str(jsonl), "--output", str(out)) == 0
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["mention"] == "wilson disease" and record["ids"] == ["X:1"]
    err = capsys.readouterr().err
    assert f"skipped: {jsonl}:2: json: NaN is not a JSON number" in err and "skipped 1 bad records" in err


def test_normalize_pubtator_rejects_spans_past_the_text(tmp_path, vocab_file, cache, capsys):
    doc = tmp_path / "doc.txt"
    doc.write_text("1|t|Wilson disease.\n1|a|Rare.\n1\t0\t14\tWilson disease\tDisease\t-1\n1\t16\t99\tRare\tDisease\t-1\n")
    out = tmp_path / "out.txt"
    assert _normalize(vocab_file, "--input", str(doc), "--output", str(out)) == 0
    assert out.read_text().splitlines()[2:] == ["1\t0\t14\tWilson disease\tDisease\tX:1"]
    assert f"skipped: {doc}:4: start/end: span 16-99 ends past the document's 21 characters" in capsys.readouterr().err


def test_evaluate_on_an_empty_query_file_fails(tmp_path, real_data_dir, cache, capsys):
    empty = tmp_path / "q.concept"
    empty.write_text("")
    assert main(["evaluate", "--model", "sparse", "--data-dir", str(real_data_dir), "--queries", str(empty)]) == 2
    assert f"{empty}: no query with gold IDs to evaluate" in capsys.readouterr().err


def _first_documents(source, target, n: int) -> None:
    """The first n PubTator blocks of a real file (blocks end at a blank line)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n\n".join(source.read_text().split("\n\n")[:n]) + "\n\n")


def test_reproduce_without_a_test_split_and_with_an_added_corpus(real_data_dir, tmp_path, capsys):
    from biosyn.data.custom import write_jsonl_vocabulary
    from biosyn.data.locate import CORPORA
    from biosyn.data.pubtator import read_pubtator
    from biosyn.data.records import Vocabulary
    from biosyn.data.vocabularies import load_vocabulary
    from tiny import tiny_bert

    # A data folder like the real one, cut to a few abstracts, with BC5CDR's test split absent (as here).
    data = tmp_path / "data"
    for name, splits in (("bc5cdr-disease", ("train", "dev")), ("ncbi-disease", ("train",))):
        for split in splits:
            relative = CORPORA[name].splits[split]
            _first_documents(real_data_dir / relative, data / relative, 12)
    (data / "ncbi-disease" / "ncbi-spell-check.txt").symlink_to(real_data_dir / "ncbi-disease" / "ncbi-spell-check.txt")
    medic = load_vocabulary("medic-2012", data_dir=real_data_dir)
    docs = [d for path in data.rglob("*.txt") if "spell" not in path.name for d in read_pubtator(path)]
    small = Vocabulary([medic.get(i) for i in sorted({medic.resolve(i) for d in docs for m in d.mentions for i in m.ids} - {None})])
    write_jsonl_vocabulary(small, tmp_path / "vocab.jsonl")
    bert, tokenizer = tiny_bert(tmp_path / "bert")
    bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    out = tmp_path / "run"
    assert main(["reproduce", "bc5cdr-disease", "--model", str(tmp_path / "bert"), "--no-pretrain", "--epochs", "1", "--max-steps", "1",
                 "--batch-size", "4", "--device", "cpu", "--add-corpus", "ncbi-disease", "--output", str(out), "--data-dir", str(data),
                 "--vocabulary", str(tmp_path / "vocab.jsonl"), "--quiet",
                 "--rerank", "--rerank-base", str(tmp_path / "bert"), "--rerank-depth", "3"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["test"] is None and result["benchmark"] is None
    assert "CDR_TestSet" in result["test_missing"] and f"--split test --model {out / 'model'}" in result["test_missing"]
    per_source = result["training_queries"]["mentions_per_source"]
    assert list(per_source) == ["bc5cdr-disease:train", "bc5cdr-disease:dev", "ncbi-disease:train"] and min(per_source.values()) > 0
    assert sum(per_source.values()) == result["training_queries"]["mentions"]
    card = (out / "model" / "README.md").read_text()
    assert "plus the ncbi-disease corpus's train split (Doğan et al., 2014)" in card and "CDR_TestSet" in card
    # The reranker, trained on the saved model's own candidates for the same queries, is saved beside the model.
    reranker = json.loads((out / "reranker" / "biosyn_reranker.json").read_text())
    assert reranker["options"]["depth"] == 3 and reranker["trained_on"]["model"] == str(out / "model")
    assert result["rerank"]["lists"]["queries"] == result["training_queries"]["kept"] and result["rerank"]["test"] is None
    assert main(["reproduce", "bc5cdr-disease", "--add-corpus", "bc5cdr-disease", "--data-dir", str(data)]) == 2
    assert "that is the training corpus already" in capsys.readouterr().err
