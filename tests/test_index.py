"""A saved index is validated on load: every damage is a CorruptIndexError naming the file."""

import json
import logging
import os
import time

import numpy as np
import pytest

from biosyn.data.custom import write_jsonl_vocabulary
from biosyn.encoders.dense import DenseEncoder
from biosyn.interfaces.cli import main
from biosyn.interfaces.loading import attach_index
from biosyn.model.biosyn import BioSyn
from biosyn.preprocess.pipeline import build_dictionary
from biosyn.search.index import MANIFEST, CorruptIndexError, IndexMismatchError, NameIndex
from tiny import tiny_bert, tiny_vocabulary


@pytest.fixture()
def saved(tmp_path):
    """A dense + sparse index of the tiny vocabulary, saved, with the model that built it."""
    bert, tokenizer = tiny_bert(tmp_path / "bert")
    model = BioSyn(DenseEncoder(bert, tokenizer, pooling="cls"))
    vocab = tiny_vocabulary()
    model.build_index(build_dictionary(vocab), vocab).save(tmp_path / "idx")
    return tmp_path / "idx", model


def _npy(name, change):
    def damage(folder):
        array = np.load(folder / name)
        np.save(folder / name, change(array), allow_pickle=False)
    return damage


def _indptr_past_the_end(a):
    a = a.copy()
    a[-1] = 10**9
    return a


def _falling_indptr(a):
    a = a.copy()
    a[1], a[2] = a[2], a[1] - 1
    return a


def _column_out_of_range(a):
    a = a.copy()
    a[0] = 10**6
    return a


def _rewrite(name, text):
    def damage(folder):
        (folder / name).write_text(text)
    return damage


def _truncate(name):
    def damage(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 2])
    return damage


STRUCTURAL = {
    "indptr past the end": ("sparse_indptr.npy", _npy("sparse_indptr.npy", _indptr_past_the_end)),
    "falling indptr": ("sparse_indptr.npy", _npy("sparse_indptr.npy", _falling_indptr)),
    "indptr of int64": ("sparse_indptr.npy", _npy("sparse_indptr.npy", lambda a: a.astype(np.int64))),
    "column out of range": ("sparse_indices.npy", _npy("sparse_indices.npy", _column_out_of_range)),
    "data of float64": ("sparse_data.npy", _npy("sparse_data.npy", lambda a: a.astype(np.float64))),
    "NaN in the data": ("sparse_data.npy", _npy("sparse_data.npy", lambda a: np.full_like(a, np.nan))),
    "dense rows cut": ("dense.npy", _npy("dense.npy", lambda a: a[:-1])),
    "dense of 2 dims more": ("dense.npy", _npy("dense.npy", lambda a: np.pad(a, ((0, 0), (0, 2))))),
    "truncated array": ("sparse_data.npy", _truncate("sparse_data.npy")),
    "names not names": ("names.json: expected a JSON array of names", _rewrite("names.json", '["a", ["D1"]]')),
    "a name too few": ("names.json: holds", _rewrite("names.json", '["a"]')),
    "name concept out of range": ("name_concepts_indices.npy", _npy("name_concepts_indices.npy", _column_out_of_range)),
    "concepts not JSON": ("concepts.json: not JSON", _rewrite("concepts.json", "{oops\n")),
    "sparse encoder config": ("sparse_encoder.json", _rewrite("sparse_encoder/sparse_encoder.json", "[]")),
}


@pytest.mark.parametrize("case", STRUCTURAL)
def test_damaged_index_files_are_named_with_and_without_checksums(saved, case):
    folder, _ = saved
    name, damage = STRUCTURAL[case]
    damage(folder)
    with pytest.raises(CorruptIndexError, match=name.split(":")[0]) as checked:
        NameIndex.load(folder)
    assert "checksum" in str(checked.value)
    with pytest.raises((CorruptIndexError, IndexMismatchError), match=name):
        NameIndex.load(folder, verify=False)


def test_checksums_catch_what_looks_valid(saved):
    folder, model = saved
    data = np.load(folder / "sparse_data.npy")
    saved_stat = (folder / "sparse_data.npy").stat()
    time.sleep(0.02)  # file clocks tick in milliseconds: the rewrite below gets a new modification time
    np.save(folder / "sparse_data.npy", data[::-1].copy(), allow_pickle=False)  # same shape and dtype: wrong scores
    NameIndex.load(folder, verify=False)  # nothing structural to see
    with pytest.raises(CorruptIndexError, match=r"sparse_data.npy: content does not match its checksum"):
        NameIndex.load(folder)
    # A file with the size and time recorded at saving is taken as written, unhashed (the start-up's shortcut).
    os.utime(folder / "sparse_data.npy", ns=(saved_stat.st_atime_ns, saved_stat.st_mtime_ns))
    NameIndex.load(folder)


def test_manifest_damage_and_old_versions(saved):
    folder, _ = saved
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "checksums": {**manifest["checksums"], "../x": "0"}}))
    with pytest.raises(CorruptIndexError, match=r"manifest.json: checksums: file name '../x' outside the index"):
        NameIndex.load(folder)
    (folder / MANIFEST).write_text(json.dumps({**manifest, "version": 1}))
    with pytest.raises(IndexMismatchError, match="version 1, not 3; rebuild it"):
        NameIndex.load(folder)
    (folder / MANIFEST).write_text("{\"format\": \"biosyn.ind")
    with pytest.raises(CorruptIndexError, match=r"manifest.json: not a JSON manifest"):
        NameIndex.load(folder)


def test_a_sound_index_loads_and_answers_as_before(saved):
    folder, model = saved
    before = model.rank(["breast tumour"], k=3)
    model.use_index(NameIndex.load(folder))
    assert model.rank(["breast tumour"], k=3) == before
    assert set(json.loads((folder / MANIFEST).read_text())["checksums"]) == {
        "concept_ids.json", "concepts.json", "dense.npy", "name_concepts_indices.npy", "name_concepts_indptr.npy", "names.json",
        "sparse_data.npy", "sparse_indices.npy", "sparse_indptr.npy",
        "sparse_encoder/sparse_encoder.json", "sparse_encoder/sparse_encoder_idf.npy"}


def test_a_damaged_cached_index_is_rebuilt(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("BIOSYN_CACHE", str(tmp_path / "cache"))
    vocab = tiny_vocabulary()
    dictionary = build_dictionary(vocab)
    model = BioSyn()
    attach_index(model, dictionary, vocab, progress=False)
    before = model.rank(["breast tumour"], k=3)
    (cached,) = (tmp_path / "cache" / "indexes").iterdir()
    _npy("sparse_indptr.npy", _indptr_past_the_end)(cached)
    with caplog.at_level(logging.WARNING):
        attach_index(model, dictionary, vocab, progress=False)
    assert "rebuilding cached index" in caplog.text and "sparse_indptr.npy" in caplog.text
    assert model.rank(["breast tumour"], k=3) == before
    NameIndex.load(cached)  # the cache holds a sound index again


def test_an_unwritable_cache_does_not_stop_normalize(tmp_path, monkeypatch, capsys, caplog):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("BIOSYN_CACHE", str(blocker))
    vocab = tmp_path / "v.jsonl"
    write_jsonl_vocabulary(tiny_vocabulary(), vocab)
    with caplog.at_level(logging.WARNING):
        assert main(["normalize", "--model", "sparse", "--vocabulary", str(vocab), "--json", "-k", "1", "wilson disease"]) == 0
    assert json.loads(capsys.readouterr().out)["ids"] == ["D006527"]
    assert "could not cache the index" in caplog.text


def test_a_damaged_explicit_index_is_a_one_line_error(tmp_path, capsys):
    vocab = tmp_path / "v.tsv"
    vocab.write_text("X:1\tWilson disease\nX:2\tBreast cancer\n")
    assert main(["index", "build", str(tmp_path / "idx"), "--model", "sparse", "--vocabulary", str(vocab)]) == 0
    _npy("sparse_indptr.npy", _indptr_past_the_end)(tmp_path / "idx")
    capsys.readouterr()
    assert main(["normalize", "--model", "sparse", "--index", str(tmp_path / "idx"), "wilson"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"biosyn: error: {tmp_path / 'idx' / 'sparse_indptr.npy'}: content does not match")


def test_a_damaged_concept_record_is_named_when_it_is_read(saved):
    folder, _ = saved
    records = json.loads((folder / "concepts.json").read_text())
    damaged, sound = list(records)[:2]
    records[damaged] = ["a name without alternative IDs or synonyms"]
    (folder / "concepts.json").write_text(json.dumps(records))
    index = NameIndex.load(folder, verify=False)  # records are checked when read, not all at start-up
    assert index.concept(sound).id == sound and len(index.concepts) == len(records)
    with pytest.raises(CorruptIndexError, match=f"concepts.json: {damaged}: expected \\[name, "):
        index.concept(damaged)


def test_each_names_concept_ids_survive_the_round_trip(saved):
    folder, model = saved
    loaded = NameIndex.load(folder)
    assert list(loaded.ids) == [tuple(ids) for ids in model.index.ids] and loaded.names == list(model.index.names)
    assert loaded.ids[-1] == tuple(model.index.ids[-1])
    with pytest.raises(IndexError):
        loaded.ids[len(loaded.ids)]
