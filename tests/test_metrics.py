from biosyn.data.records import Candidate, Query
from biosyn.evaluation.metrics import evaluate_predictions, query_rank_lenient, query_rank_strict


def cand(*ids):
    return Candidate(name="x", ids=tuple(ids), score=0.0)


def test_lenient_rank_is_the_worst_part():
    q = Query("breast and ovarian cancer", ("breast cancer", "ovarian cancer"), ("D001943", "D010051"))
    # part 1 right at rank 1, part 2 right at rank 3 (any gold ID counts for any part)
    preds = [[cand("D001943")], [cand("X"), cand("Y"), cand("D001943")]]
    assert query_rank_lenient(q, preds) == 3
    assert query_rank_lenient(q, [[cand("D001943")], [cand("X")]]) is None


def test_intersection_with_multi_id_candidates():
    q = Query("cep", ("cep",), ("263700",))
    assert query_rank_lenient(q, [[cand("D1"), cand("D017092", "263700")]]) == 2


def test_strict_needs_exactly_the_gold_concept():
    resolve = {"D017092": "D017092", "263700": "D017092", "D2": "D2"}.get
    q = Query("cep", ("cep",), ("D017092",))
    # a name carried by two concepts does not count in strict mode; main + alternative ID does
    preds = [[cand("D017092", "D2"), cand("D017092", "263700")]]
    assert query_rank_lenient(q, preds) == 1
    assert query_rank_strict(q, preds, resolve) == 2


def test_strict_aligns_parts_with_gold():
    q = Query("a and b", ("a", "b"), ("A", "B"))
    swapped = [[cand("B")], [cand("A")]]
    assert query_rank_lenient(q, swapped) == 1
    assert query_rank_strict(q, swapped) is None
    assert query_rank_strict(q, [[cand("A")], [cand("X"), cand("B")]]) == 2


def test_accuracy_and_types():
    queries = [Query("a", ("a",), ("A",), "T1"), Query("b", ("b",), ("B",), "T2"), Query("c", ("c",), ("C",), "T2")]
    preds = [[[cand("A")]], [[cand("X"), cand("B")]], [[cand("X"), cand("Y")]]]
    result = evaluate_predictions(queries, preds, ks=(1, 2))
    assert result.accuracy == {1: 1 / 3, 2: 2 / 3}
    assert result.ranks == [1, 2, None]
    assert result.by_type == {"T1": {"queries": 1, "acc@1": 100.0, "acc@2": 100.0},
                              "T2": {"queries": 2, "acc@1": 0.0, "acc@2": 50.0}}
