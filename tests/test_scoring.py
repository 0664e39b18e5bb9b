"""The one score: known values, and the NumPy and torch forms agree."""

import numpy as np
import pytest
import torch

from biosyn.search.scoring import MODES, SIMILARITIES, Scorer, Similarity, check_mode, hybrid


def test_known_values_for_each_similarity():
    q, n = np.array([[3.0, 4.0]]), np.array([[1.0, 0.0], [0.0, 2.0]])
    dot = Scorer(Similarity.DOT, scale=20.0)
    assert (dot.vectors(q, queries=True) @ dot.vectors(n).T).tolist() == [[3.0, 8.0]]  # scale is cosine's only
    cos = Scorer(Similarity.COSINE, scale=20.0)
    assert (cos.vectors(q, queries=True) @ cos.vectors(n).T) == pytest.approx(np.array([[12.0, 16.0]]))
    assert cos.vectors(np.zeros((1, 2))).tolist() == [[0.0, 0.0]]  # no NaN for an empty vector
    scores = hybrid(np.array([[1.0]], np.float32), np.array([[0.5]], np.float32), 0.2)
    assert scores.dtype == np.float32 and scores[0, 0] == pytest.approx(1.1)  # stays float32 for the index


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_numpy_and_torch_forms_agree(similarity):
    rng = np.random.default_rng(0)
    q, c, sparse = rng.normal(size=(3, 8)), rng.normal(size=(3, 5, 8)), rng.random((3, 5))
    scorer = Scorer(Similarity(similarity), scale=7.0)
    numpy = hybrid(np.einsum("bh,bkh->bk", scorer.vectors(q, queries=True), scorer.vectors(c)), sparse, 0.3)
    weight = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))
    torched = hybrid(scorer.dense_torch(torch.from_numpy(q), torch.from_numpy(c)), torch.from_numpy(sparse), weight)
    assert torched.detach().numpy() == pytest.approx(numpy, abs=1e-5)


def test_names_are_checked_and_converted():
    assert Scorer("cosine", 2).similarity is Similarity.COSINE  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="similarity must be one of"):
        Similarity("euclid")
    assert check_mode("dense") == "dense" and MODES == ("hybrid", "dense", "sparse")
    with pytest.raises(ValueError, match="unknown mode"):
        check_mode("best")
