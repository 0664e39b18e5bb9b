"""The million-name index path on tiny data: float16 rows, IVF-PQ and HNSW saved and loaded, the
sparse postings pre-filter, and an index built in parts equal to the one built in one go."""

import json

import faiss
import numpy as np
import pytest

import biosyn.encoders.sparse as sparse_module
from biosyn.data.records import Dictionary, DictionaryEntry
from biosyn.encoders.dense import DenseEncoder
from biosyn.encoders.sparse import SparseEncoder
from biosyn.interfaces.cli import main
from biosyn.model.biosyn import BioSyn
from biosyn.preprocess.pipeline import build_dictionary
from biosyn.scale.index_parts import build_index_in_parts, part_ranges
from biosyn.search.index import MANIFEST, CorruptIndexError, IndexMismatchError, NameIndex, ivfpq_nprobe
from tiny import tiny_bert, tiny_vocabulary

QUERIES = ["breast tumour", "wilsons disease", "lynch syndrome", "ovarian cancer", "hnpcc"]


def tiny_model(tmp_path, **kwargs):
    bert, tokenizer = tiny_bert(tmp_path / "bert")
    return BioSyn(DenseEncoder(bert, tokenizer, pooling="cls"), **kwargs)


def folder_bytes(folder):
    """Every file's bytes; the manifest's record of this copy's file times left out."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    manifest = json.loads(files["manifest.json"])
    assert set(manifest.pop("file_stats")) == set(manifest["checksums"])
    files["manifest.json"] = json.dumps(manifest).encode()
    return files


def random_index(n=1000, d=32, seed=0):
    """n random names over a small alphabet with random unit rows."""
    rng = np.random.default_rng(seed)
    names = list(dict.fromkeys("".join(rng.choice(list("abcdefgh "), 8)) for _ in range(2 * n)))[:n]
    dense = rng.standard_normal((n, d)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    return NameIndex.build(Dictionary(DictionaryEntry(s, (f"C{i}",)) for i, s in enumerate(names)), dense_matrix=dense), rng


def test_float16_rows_round_trip_and_rank_like_float32(tmp_path):
    model = tiny_model(tmp_path, sparse_weight=0.5)
    vocab = tiny_vocabulary()
    dictionary = build_dictionary(vocab)
    wide = model.build_index(dictionary, vocab)
    expected = model.rank(QUERIES, k=4)
    half = model.build_index(dictionary, vocab, dense_dtype="float16").save(tmp_path / "half")
    loaded = NameIndex.load(half)
    assert loaded.dense_matrix.dtype == np.float16 and loaded.manifest["dense_dtype"] == "float16"
    np.testing.assert_array_equal(loaded.dense_matrix, wide.dense_matrix.astype(np.float16))
    got = model.use_index(loaded).rank(QUERIES, k=4)
    for want_row, got_row in zip(expected, got):
        np.testing.assert_allclose([c.score for c in got_row], [c.score for c in want_row], rtol=5e-4)  # float16: 11-bit mantissa
        assert got_row[0].name == want_row[0].name
    with pytest.raises(ValueError, match="overflow float16"):
        NameIndex.build(dictionary, dense_matrix=np.full((len(dictionary), 4), 1e6, np.float32), dense_dtype="float16")


def test_ivfpq_recovers_the_exact_top_k_by_rescoring_and_is_saved_with_its_settings(tmp_path):
    index, rng = random_index()
    index.add_faiss("ivfpq", nlist=4, nprobe=4, candidates=200)
    queries = index.dense_matrix[:20] + 0.1 * rng.standard_normal((20, 32)).astype(np.float32)
    exact = index.search(5, mode="dense", dense_queries=queries)
    approx = index.search(5, mode="dense", dense_queries=queries, approximate=True)
    np.testing.assert_array_equal(approx.indices, exact.indices)
    np.testing.assert_allclose(approx.scores, exact.scores, rtol=1e-6)
    # The codes alone rank roughly: re-scoring is what makes the top 5 exact.
    assert index._faiss.search(queries, 5)[1].tolist() != exact.indices.tolist()
    loaded = NameIndex.load(index.save(tmp_path / "idx"))
    assert loaded.manifest["faiss"] == {"kind": "ivfpq", "pq_m": 8, "nlist": 4, "nprobe": 4, "candidates": 200}
    assert faiss.extract_index_ivf(loaded._faiss).nprobe == 4
    np.testing.assert_array_equal(loaded.search(5, mode="dense", dense_queries=queries, approximate=True).indices, exact.indices)
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    (tmp_path / "idx" / MANIFEST).write_text(json.dumps({**manifest, "faiss": {**manifest["faiss"], "kind": "hnsw"}}))
    with pytest.raises(CorruptIndexError, match="dense.faiss: a FAISS index of another kind"):
        NameIndex.load(tmp_path / "idx")


def test_hnsw_keeps_its_search_setting(tmp_path):
    index, rng = random_index(300)
    index.add_faiss("hnsw", hnsw_m=8, ef_search=77)
    loaded = NameIndex.load(index.save(tmp_path / "idx"))
    assert loaded._faiss.hnsw.efSearch == 77 and loaded.manifest["faiss"]["ef_search"] == 77
    queries = index.dense_matrix[:5]
    np.testing.assert_array_equal(loaded.search(3, mode="dense", dense_queries=queries, approximate=True).indices,
                                  index.search(3, mode="dense", dense_queries=queries).indices)


def test_ivfpq_refuses_too_few_names():
    index, _ = random_index(100)
    with pytest.raises(ValueError, match="at least 256 names"):
        index.add_faiss("ivfpq")


def test_the_postings_prefilter_finds_the_exact_sparse_top_k_among_few_names(tmp_path):
    fillers = [f"{a}{b}{c}{d}" for a in "ab" for b in "ab " for c in "abc" for d in "ab "]
    rare = ["xyz abab", "xyz", "xyza", "bxyz", "ab xyz ab"]
    names = fillers + rare
    index = NameIndex.build(Dictionary(DictionaryEntry(s, (f"C{i}",)) for i, s in enumerate(names)))
    index.add_postings(budget=7, pool=100)
    query = index.sparse_encoder.transform(["xyz ab"])
    # Rarest first, 7 postings take "z " (2 names) and one of x, y, z, xy, yz (5): the rare names, no filler.
    candidates = index._sparse_candidates(query, 20, budget=7, pool=100)
    assert {names[i] for i in candidates[0] if i >= 0} == set(rare)
    exact = index.search(3, mode="sparse", sparse_queries=query)
    approx = index.search(3, mode="sparse", sparse_queries=query, approximate=True)
    np.testing.assert_array_equal(approx.indices, exact.indices)
    np.testing.assert_array_equal(approx.scores, exact.scores)
    loaded = NameIndex.load(index.save(tmp_path / "idx"))
    assert loaded.manifest["postings"] == {"budget": 7, "pool": 100, "hybrid_budget": 20_000, "hybrid_pool": 512, "hybrid_depth": 64}
    np.testing.assert_array_equal(loaded.search(3, mode="sparse", sparse_queries=query, approximate=True).indices, exact.indices)
    np.save(tmp_path / "idx" / "postings_rows.npy", np.full(index.sparse_matrix.nnz, len(names), np.int32))
    with pytest.raises(CorruptIndexError, match="postings_rows.npy: name numbers outside"):
        NameIndex.load(tmp_path / "idx", verify=False)
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    for field, value, message in (("postings", {"budget": 7, "pool": "many"}, "postings: expected a mapping"),
                                  ("dense_dtype", "int8", "dense_dtype: expected one of float32, float16")):
        (tmp_path / "idx" / MANIFEST).write_text(json.dumps({**manifest, field: value}))
        with pytest.raises(CorruptIndexError, match=message):
            NameIndex.load(tmp_path / "idx")


def test_hybrid_approximate_search_adds_the_name_only_the_sparse_side_finds(tmp_path):
    fillers, rng = random_index(2000)
    target = "xyzzy qx"
    query = fillers.dense_matrix[0]
    dense = np.vstack([fillers.dense_matrix, -query])  # the target is the dense side's very last name
    names = [*fillers.names, target]
    index = NameIndex.build(Dictionary(DictionaryEntry(s, (f"C{i}",)) for i, s in enumerate(names)), dense_matrix=dense)
    index.add_faiss("hnsw", candidates=4)
    sparse_q = index.sparse_encoder.transform([target])
    search = lambda **kw: index.search(1, mode="hybrid", dense_queries=query[None, :], sparse_queries=sparse_q,  # noqa: E731
                                       sparse_weight=3.0, **kw).indices[0, 0]
    assert search() == len(fillers)  # exact: the sparse match outweighs the dense one
    # Without postings the sparse side is searched exactly; with them, n-grams rarest first. A budget of 5
    # postings takes only the target's rare n-grams (few hits: summed by sorting), the default all of them
    # (many: counted into an array of all the names).
    assert search(approximate=True) == len(fillers)
    for budget in (5, None):
        index.add_postings(hybrid_budget=budget)
        assert search(approximate=True) == len(fillers)
        loaded = NameIndex.load(index.save(tmp_path / f"idx-{budget}"))
        assert loaded.manifest["postings"]["hybrid_budget"] == (budget or 20_000)
        assert loaded.search(1, mode="hybrid", dense_queries=query[None, :], sparse_queries=sparse_q, sparse_weight=3.0,
                             approximate=True).indices[0, 0] == len(fillers)


def test_the_sparse_encoder_counts_in_chunks_alike(monkeypatch):
    names = [n.lower() for c in tiny_vocabulary() for n in c.names]
    whole = SparseEncoder().fit(names)
    monkeypatch.setattr(sparse_module, "_CHUNK", 3)
    chunked = SparseEncoder().fit(names)
    assert chunked.vocabulary == whole.vocabulary
    np.testing.assert_array_equal(chunked.idf, whole.idf)
    monkeypatch.setattr(sparse_module, "_CHUNK", 10**6)
    expected = whole.transform(names)
    monkeypatch.setattr(sparse_module, "_CHUNK", 3)
    got = chunked.transform(names)
    for part in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(got, part), getattr(expected, part))


def test_parts_merged_equal_the_index_built_in_one_go(tmp_path):
    """Exactly, file by file, given the same dense rows."""
    index, _ = random_index(50)
    entries = [DictionaryEntry(n, i) for n, i in zip(index.names, index.ids)]
    build = lambda a, b, **kw: NameIndex.build(Dictionary(entries[a:b]), index.sparse_encoder, index.dense_matrix[a:b],  # noqa: E731
                                               dense_dtype="float16", **kw)
    one = build(0, 50, manifest={"note": "x"}).save(tmp_path / "one")
    merged = NameIndex.merge([build(a, b) for a, b in part_ranges(50, 7)], manifest={"note": "x"})
    assert folder_bytes(merged.save(tmp_path / "parts")) == folder_bytes(one)


@pytest.mark.parametrize("dense_dtype", ["float32", "float16"])
def test_a_model_builds_in_parts_the_index_it_builds_in_one_go(tmp_path, dense_dtype):
    """Every file is equal but the dense rows, which may differ in the last bit: a part sorts and
    pads its own embedding batches, and the float sums run in another order."""
    model = tiny_model(tmp_path)
    vocab = tiny_vocabulary()
    dictionary = build_dictionary(vocab)
    one = folder_bytes(model.build_index(dictionary, vocab, dense_dtype=dense_dtype, manifest={"note": "x"}).save(tmp_path / "one"))
    whole = model.index
    assert len(part_ranges(len(dictionary), 4)) > 2
    merged = build_index_in_parts(model, dictionary, vocab, part_size=4, dense_dtype=dense_dtype, manifest={"note": "x"})
    assert model.index is merged
    np.testing.assert_allclose(merged.dense_matrix.astype(np.float32), whole.dense_matrix.astype(np.float32), rtol=1e-6 if dense_dtype == "float32" else 1e-3)
    merged.dense_matrix = whole.dense_matrix  # the rest must be equal byte for byte
    files = folder_bytes(merged.save(tmp_path / "parts"))
    assert files == one


def test_merge_refuses_parts_that_do_not_fit():
    entries = [DictionaryEntry(s, ("C",)) for s in ("alpha", "beta", "gamma")]
    encoder = SparseEncoder().fit(e.name for e in entries)
    part = lambda lo, hi, enc=encoder: NameIndex.build(Dictionary(entries[lo:hi]), enc)  # noqa: E731
    with pytest.raises(IndexMismatchError, match="part 1 was built with another sparse encoder"):
        NameIndex.merge([part(0, 1), part(1, 3, SparseEncoder().fit(["other"]))])
    with pytest.raises(ValueError, match="the parts overlap"):
        NameIndex.merge([part(0, 2), part(1, 3)])
    assert NameIndex.merge([part(0, 1), part(1, 3)]).names == ["alpha", "beta", "gamma"]


def test_the_cli_builds_postings_and_searches_them(tmp_path, capsys):
    vocabulary = tmp_path / "v.tsv"
    vocabulary.write_text("X:1\tWilson disease\nX:2\tBreast cancer\nX:3\tOvarian cancer\nX:4\tLynch syndrome\n")
    assert main(["index", "build", str(tmp_path / "idx"), "--model", "sparse", "--vocabulary", str(vocabulary), "--postings"]) == 0
    assert NameIndex.load(tmp_path / "idx").postings is not None
    answers = []
    for extra in ([], ["--approximate"]):
        capsys.readouterr()
        assert main(["normalize", "--model", "sparse", "--index", str(tmp_path / "idx"), "--json", "-k", "2", "breast cancers", *extra]) == 0
        answers.append(json.loads(capsys.readouterr().out))
    assert answers[0] == answers[1] and answers[0]["ids"] == ["X:2"]


def test_ivfpq_probes_a_fixed_number_of_codes_and_at_most_a_quarter_of_the_lists():
    assert [ivfpq_nprobe(n, nlist) for n, nlist in ((1_000_000, 1000), (4_000_000, 2000), (73_000, 270), (300, 17))] == [250, 132, 67, 4]
    assert ivfpq_nprobe(300, 3) == 1
