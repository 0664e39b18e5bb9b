import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from biosyn.data.errors import FormatError
from biosyn.encoders.sparse import CONFIG_FILE, IDF_FILE, SparseEncoder
from biosyn.search.exact import dense_topk, sparse_scores, sparse_topk, topk

NAMES = [
    "breast cancer", "breast cancers", "colon cancer", "cancer of the breast", "lung cancer",
    "ovarian cancer", "hereditary breast and ovarian cancer", "tay sachs disease", "sandhoff disease",
    "gm2 gangliosidosis", "neurofibromatosis 1", "neurofibromatosis type 2", "von willebrand disease",
    "adenomatous polyposis coli", "familial adenomatous polyposis", "huntington disease",
    "myotonic dystrophy", "duchenne muscular dystrophy", "becker muscular dystrophy", "cystic fibrosis",
    "a", "", " ", "  double  spaces  ", "tab\tseparated", "tabs\t\tand  spaces \n newline",
    "trailing space ", " leading space", "UPPER Case", "ünïcödé naïve", "x" * 40, "3 methylglutaconic aciduria",
    "ab", "ba", "aa", "12 34",
]
QUERIES = ["breast  carcinoma", "Colon Cancer", "zzz", "", "dystrophy\t", "unseen ∆ symbol", "tab\tseparated"]


def _sklearn(ngram_range=(1, 2)):
    text = pytest.importorskip("sklearn.feature_extraction.text")
    return text.TfidfVectorizer(analyzer="char", ngram_range=ngram_range).fit(NAMES)


@pytest.mark.parametrize("ngram_range", [(1, 2), (1, 1), (2, 3), (1, 4)])
def test_matches_sklearn(ngram_range):
    reference = _sklearn(ngram_range)
    encoder = SparseEncoder(ngram_range).fit(NAMES)
    assert encoder.vocabulary == reference.vocabulary_
    np.testing.assert_allclose(encoder.idf, reference.idf_, rtol=0, atol=1e-12)
    for texts in (NAMES, QUERIES):
        ours, theirs = encoder.transform(texts), reference.transform(texts)
        assert isinstance(ours, sp.csr_matrix) and ours.dtype == np.float32
        np.testing.assert_allclose(ours.toarray(), theirs.toarray(), rtol=0, atol=1e-6)


def test_cosine_known_scores():
    encoder = SparseEncoder().fit(["ab", "cd", "ac"])
    assert list(encoder.vocabulary) == ["a", "ab", "ac", "b", "c", "cd", "d"]
    rare, common = 1 + np.log(4 / 2), 1 + np.log(4 / 3)  # smooth idf for df = 1 and df = 2 of n = 3
    np.testing.assert_allclose(encoder.idf, [common, rare, rare, rare, common, rare, rare])
    ab, cd, ba, aab, zz = encoder.transform(["ab", "cd", "ba", "aab", "zz"]).toarray()
    assert ab @ cd == 0 and zz.sum() == 0  # unknown n-grams ("ba", "aa", "z", "zz") are ignored
    assert ab @ ab == pytest.approx(1.0)
    # ab = (a: common, b: rare, ab: rare); ba = (a: common, b: rare)
    assert ab @ ba == pytest.approx((common**2 + rare**2) / np.sqrt(common**2 + 2 * rare**2) / np.sqrt(common**2 + rare**2))
    # aab counts "a" twice: raw term frequency, (a: 2 common, b: rare, ab: rare)
    expected = (2 * common**2 + 2 * rare**2) / np.sqrt(4 * common**2 + 2 * rare**2) / np.sqrt(common**2 + 2 * rare**2)
    assert ab @ aab == pytest.approx(expected)


def test_transform_requires_fit_and_list():
    with pytest.raises(RuntimeError):
        SparseEncoder().transform(["a"])
    with pytest.raises(TypeError):
        SparseEncoder().fit("single string")
    with pytest.raises(ValueError):
        SparseEncoder((2, 1))


def test_topk_order_and_ties():
    scores = np.array([[0.1, 0.5, 0.5, 0.9, 0.5], [1.0, 1.0, 1.0, 1.0, 1.0], [-1.0, -2.0, -3.0, 0.0, 2.0]])
    idx, val = topk(scores, 3)
    assert idx.tolist() == [[3, 1, 2], [0, 1, 2], [4, 3, 0]]
    np.testing.assert_array_equal(val, [[0.9, 0.5, 0.5], [1, 1, 1], [2, 0, -1]])
    idx, _ = topk(scores, 10)  # k larger than the row: all columns
    assert idx.shape == (3, 5) and idx[0].tolist() == [3, 1, 2, 4, 0]


def test_topk_matches_full_sort_with_many_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(50, 1000)).astype(np.float32)  # heavy ties
    for k in (1, 7, 64, 200):
        idx, val = topk(scores, k)
        expected = np.lexsort((np.broadcast_to(np.arange(1000), scores.shape), -scores), axis=1)[:, :k]
        np.testing.assert_array_equal(idx, expected)
        np.testing.assert_array_equal(val, np.take_along_axis(scores, expected, axis=1))


def test_sparse_and_dense_topk_agree_with_brute_force():
    encoder = SparseEncoder().fit(NAMES)
    dictionary = encoder.transform(NAMES * 3)  # duplicates force ties across threads and batches
    query = encoder.transform(QUERIES + NAMES[:10])
    full = (query @ dictionary.T).toarray()
    want_idx, want_val = topk(full, 5)
    for batch_size, n_threads in ((2, 1), (128, 3)):
        idx, val = sparse_topk(query, dictionary, 5, batch_size=batch_size, n_threads=n_threads)
        assert idx.dtype == np.int64 and val.dtype == np.float32
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_allclose(val, want_val, atol=1e-6)
        np.testing.assert_allclose(sparse_scores(query, dictionary, idx, batch_size=batch_size), val, atol=1e-6)
    idx, val = dense_topk(query.toarray(), dictionary.toarray(), 5, batch_size=4)
    np.testing.assert_array_equal(idx, want_idx)
    np.testing.assert_allclose(val, want_val, atol=1e-6)


def test_save_load_round_trip(tmp_path):
    encoder = SparseEncoder((1, 3)).fit(NAMES)
    encoder.save(tmp_path)
    loaded = SparseEncoder.load(tmp_path)
    assert loaded.ngram_range == (1, 3) and loaded.vocabulary == encoder.vocabulary
    np.testing.assert_array_equal(loaded.idf, encoder.idf)
    assert (loaded.transform(QUERIES) != encoder.transform(QUERIES)).nnz == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([CONFIG_FILE, IDF_FILE])  # no temp files left


def test_load_errors_name_the_file(tmp_path):
    SparseEncoder().fit(NAMES).save(tmp_path)
    (tmp_path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(FormatError, match=CONFIG_FILE):
        SparseEncoder.load(tmp_path)
    SparseEncoder().fit(NAMES).save(tmp_path)
    (tmp_path / IDF_FILE).write_bytes(b"garbage")
    with pytest.raises(FormatError, match=IDF_FILE):
        SparseEncoder.load(tmp_path)
    np.save(tmp_path / IDF_FILE, np.ones(3))  # wrong length for the vocabulary
    with pytest.raises(FormatError, match=IDF_FILE):
        SparseEncoder.load(tmp_path)
    (tmp_path / IDF_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=IDF_FILE):
        SparseEncoder.load(tmp_path)


def test_from_sklearn_pickle(tmp_path):
    reference = _sklearn()
    path = tmp_path / "sparse_encoder.pk"
    path.write_bytes(pickle.dumps(reference))
    with pytest.raises(PermissionError, match="arbitrary code"):
        SparseEncoder.from_sklearn_pickle(path)
    encoder = SparseEncoder.from_sklearn_pickle(path, trusted=True)
    assert encoder.vocabulary == reference.vocabulary_ and encoder.ngram_range == (1, 2)
    np.testing.assert_allclose(encoder.transform(QUERIES).toarray(), reference.transform(QUERIES).toarray(), atol=1e-6)
