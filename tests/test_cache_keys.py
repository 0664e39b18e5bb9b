"""A CLI call finds its cached index from the checksums of its input files and the model (issue 13)."""

import json

import pytest

from biosyn.encoders.dense import DenseEncoder
from biosyn.encoders.sparse import SparseEncoder
from biosyn.interfaces import loading, vocabulary_setup
from biosyn.interfaces.cli import main
from biosyn.model.biosyn import BioSyn
from tiny import tiny_bert

VOCAB = "X:1\tWilson disease\thepatolenticular degeneration\nX:2\tBreast cancer\tbreast neoplasm\n"


@pytest.fixture()
def counted(tmp_path, monkeypatch):
    """Counts dictionary reads and TF-IDF fits; the cache in a fresh folder."""
    monkeypatch.setenv("BIOSYN_CACHE", str(tmp_path / "cache"))
    calls = {"dictionary": 0, "fit": 0}
    read, fit = vocabulary_setup.dictionary_for, SparseEncoder.fit

    def counting_read(*args, **kwargs):
        calls["dictionary"] += 1
        return read(*args, **kwargs)

    def counting_fit(self, names):
        calls["fit"] += 1
        return fit(self, names)

    monkeypatch.setattr(vocabulary_setup, "dictionary_for", counting_read)
    monkeypatch.setattr(SparseEncoder, "fit", counting_fit)
    return calls


def test_a_second_call_reads_no_dictionary_and_fits_nothing(tmp_path, counted):
    vocab = tmp_path / "v.tsv"
    vocab.write_text(VOCAB)
    first = loading.load_linker("sparse", vocabulary=str(vocab))
    assert counted == {"dictionary": 1, "fit": 1}
    aliases = list((tmp_path / "cache" / "indexes" / "keys").glob("*.json"))
    assert len(aliases) == 1 and json.loads(aliases[0].read_text())["index"] == first.index.path.name
    again = loading.load_linker("sparse", vocabulary=str(vocab))
    assert counted == {"dictionary": 1, "fit": 1}
    assert again.index.path == first.index.path
    assert again.normalize(["wilson disease"], k=1)[0].best_ids == ("X:1",)
    # Other content under the same name is another key: read and fit again.
    vocab.write_text(VOCAB + "X:3\tLynch syndrome\tHNPCC\n")
    third = loading.load_linker("sparse", vocabulary=str(vocab))
    assert counted == {"dictionary": 2, "fit": 2} and third.index.path != first.index.path
    assert len(third.index) == len(first.index) + 2


def test_bf16_is_in_no_key_and_a_damaged_alias_is_passed_over(tmp_path, counted, caplog):
    vocab = tmp_path / "v.tsv"
    vocab.write_text(VOCAB)
    bert, tokenizer = tiny_bert(tmp_path / "base")
    BioSyn(DenseEncoder(bert, tokenizer)).save_pretrained(tmp_path / "model")
    args = ["normalize", "--model", str(tmp_path / "model"), "--vocabulary", str(vocab), "--json", "breast cancer"]
    assert main([*args, "--bf16"]) == 0
    assert counted["dictionary"] == 1
    assert main(args) == 0  # fp32 now: the index the bf16 call built serves
    assert counted["dictionary"] == 1
    (alias,) = (tmp_path / "cache" / "indexes" / "keys").glob("*.json")
    manifest = json.loads((tmp_path / "cache" / "indexes" / json.loads(alias.read_text())["index"] / "manifest.json").read_text())
    assert manifest["embedded_with"] == {"backend": "torch", "bf16": True}
    alias.write_text("{not json")
    assert main(args) == 0
    assert counted["dictionary"] == 2 and counted["fit"] == 1  # found again by its dictionary, not refit
    assert "not used" in caplog.text
    assert json.loads(alias.read_text())["index"] == manifest_dir_name(manifest, tmp_path)


def manifest_dir_name(manifest, tmp_path):
    (path,) = [p for p in (tmp_path / "cache" / "indexes").iterdir() if p.name != "keys"]
    assert json.loads((path / "manifest.json").read_text())["dictionary_fingerprint"] == manifest["dictionary_fingerprint"]
    return path.name


def test_torch_and_onnx_share_a_cached_index_and_int8_has_its_own(tmp_path, counted):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'biosyn[onnx]')")
    from biosyn.encoders.onnx import export

    vocab = tmp_path / "v.tsv"
    vocab.write_text(VOCAB)
    bert, tokenizer = tiny_bert(tmp_path / "base")
    model = BioSyn(DenseEncoder(bert, tokenizer))
    model.save_pretrained(tmp_path / "model")
    export(model.encoder, tmp_path / "model", fingerprint=model.fingerprint, similarity=model.similarity, int8=True)
    paths = {}
    for backend in ("onnx", "torch", "onnx-int8", None):
        paths[backend] = loading.load_linker(str(tmp_path / "model"), vocabulary=str(vocab), backend=backend).index.path
    assert counted["dictionary"] == 2  # onnx built, torch and the default (onnx) found it; int8 built its own
    assert paths["onnx"] == paths["torch"] == paths[None] != paths["onnx-int8"]
