"""Training layer: loss, labels, candidates, a short run on a tiny random BERT, resume."""

import json
import math

import numpy as np
import pytest
import torch

from biosyn.data.records import Query
from biosyn.encoders.dense import DenseEncoder
from biosyn.model.biosyn import BioSyn
from biosyn.preprocess.pipeline import Preprocessor, build_dictionary
from biosyn.search.scoring import SIMILARITIES
from biosyn.training.candidates import CandidateRetriever, add_gold_positives, candidate_labels, gold_rows, merge_candidates
from biosyn.training.loss import marginal_nll
from biosyn.training.pretrain import PairSampler, PretrainConfig, concept_names, multi_similarity_loss, nearest_sets, pretrain, synonym_sets
from biosyn.training.queries import TrainingQuery, select_queries
from biosyn.training.soup import average_models, soup
from biosyn.training.trainer import TrainConfig, Trainer
from tiny import tiny_bert, tiny_vocabulary

# -- loss ------------------------------------------------------------------------------------

def test_marginal_nll_known_values():
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, 0.0, 0.0]])
    labels = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    loss, n = marginal_nll(scores, labels)
    # query 0: p(pos) = 2/4; query 1: p(pos) = 3/6
    assert n == 2
    assert loss.item() == pytest.approx(-math.log(0.5), abs=1e-6)
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    loss, _ = marginal_nll(scores, torch.tensor([[0.0, 1.0, 1.0]]))
    expected = -math.log((math.e**2 + math.e**3) / (math.e + math.e**2 + math.e**3))
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_marginal_nll_skips_queries_without_positive():
    scores = torch.tensor([[0.0, 0.0], [5.0, -5.0]], requires_grad=True)
    loss, n = marginal_nll(scores, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    assert n == 1 and loss.item() == pytest.approx(math.log(2.0), abs=1e-6)
    loss.backward()
    assert torch.all(scores.grad[1] == 0)
    loss, n = marginal_nll(scores, torch.zeros(2, 2))
    assert n == 0 and loss.item() == 0.0


# -- labels and candidates ---------------------------------------------------------------------

def test_labels_use_id_set_membership():
    dictionary_ids = [("D001", "123"), ("D0012",), ("D002",), ("D001|123",)]
    cand = np.array([[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]])
    labels = candidate_labels([("D001",), ("D001", "123"), ("D00",)], cand, dictionary_ids)
    assert labels.tolist() == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_add_gold_puts_the_best_gold_name_last_only_where_no_positive():
    dictionary_ids = [("D1",), ("D2",), ("D3",), ("D1", "D4"), ("D4",), ("D5",)]
    gold = [("D1",), ("D4",), ("D9",), ("D1", "D4")]
    rows = gold_rows(gold, dictionary_ids)
    assert [r.tolist() for r in rows] == [[0, 3], [3, 4], [], [3]]
    cand = np.array([[0, 1, 2], [1, 2, 5], [0, 1, 2], [0, 1, 2]])
    labels = candidate_labels(gold, cand, dictionary_ids)
    dense_d = np.eye(6, dtype=np.float32)
    dense_q = np.zeros((4, 6), dtype=np.float32)
    dense_q[1, 4] = 1.0  # query 1 prefers row 4 over row 3
    out, added = add_gold_positives(cand, labels, rows, dense_q, dense_d)
    assert added == 2  # query 0 has a positive; query 2's gold is nowhere in the dictionary
    assert out.tolist() == [[0, 1, 2], [1, 2, 4], [0, 1, 2], [0, 1, 3]]
    assert candidate_labels(gold, out, dictionary_ids)[:, -1].tolist() == [0, 1, 0, 1]
    assert add_gold_positives(cand, labels, rows, None, None)[0][1].tolist() == [1, 2, 3]


def test_merge_candidates_counts_no_duplicates_and_split():
    sparse = np.array([[0, 1, 2, 3, 4, 5, 6, 7]])
    dense = np.array([[1, 9, 0, 8, 10, 11, 12, 13]])
    out = merge_candidates(sparse, dense, topk=6, n_sparse=3)
    assert out.tolist() == [[0, 1, 2, 9, 8, 10]]
    # dense list exhausted by duplicates: sparse fills in
    out = merge_candidates(sparse, np.array([[0, 1, 2, 3, 4, 5, 6, 7]]), topk=6, n_sparse=3)
    assert out.tolist() == [[0, 1, 2, 3, 4, 5]]


def _setup(tmp_path, seed=0):
    bert, tok = tiny_bert(tmp_path / "bert", seed=seed)
    vocab = tiny_vocabulary()
    model = BioSyn(DenseEncoder(bert, tok, pooling="cls", max_length=25), similarity="cosine", scale=5.0)
    pre = Preprocessor()
    dictionary = build_dictionary(vocab, pre)
    mentions = [Query("breast cancer", ("breast cancer",), ("D001943",)), Query("ovarian tumor", ("ovarian tumor",), ("D010051",)),
                Query("wilson's disease", ("wilson s disease",), ("D006527",)), Query("lynch", ("lynch",), ("D003123",)),
                Query("tumour", ("tumour",), ("D009369",)), Query("breast cancer", ("breast cancer",), ("D001943",)),
                Query("a and b", ("a", "b"), ("D009369", "D001943")), Query("x", ("x",), ("D999999",)),
                Query("hereditary nonpolyposis", ("hereditary nonpolyposis",), ("D003123",))]
    return model, vocab, dictionary, mentions


def test_query_filters(tmp_path):
    _, vocab, _, mentions = _setup(tmp_path)
    sel = select_queries(mentions, vocab)
    assert sel.counts == {"mentions": 9, "no_gold": 0, "composite": 1, "duplicate": 1, "unknown_ids": 1, "kept": 6}
    assert TrainingQuery("breast cancer", ("D001943",)) in sel.queries


def test_retriever_sparse_dense_split(tmp_path):
    model, vocab, dictionary, mentions = _setup(tmp_path)
    model.fit_sparse(vocab)
    queries = select_queries(mentions, vocab).queries
    sp = model.sparse_encoder
    r = CandidateRetriever(sp.transform([q.text for q in queries]), sp.transform(dictionary.names), topk=6, dense_ratio=0.5)
    dq = model.embed([q.text for q in queries], queries=True)
    dd = model.embed(dictionary.names)
    idx, scores = r.candidates(dq, dd)
    assert idx.shape == (len(queries), 6) == scores.shape
    for row, srow in zip(idx, r.sparse_idx):
        assert len(set(row)) == 6
        assert row[:3].tolist() == srow[:3].tolist()  # sparse half first, computed once
    dense_only = CandidateRetriever(r.query_csr, r.dictionary_csr, topk=6, dense_ratio=1.0)
    assert dense_only.n_sparse == 0 and dense_only.n_dense == 6


# -- training ---------------------------------------------------------------------------------

def _trainer(tmp_path, out, epochs, device="cpu", **kw):
    model, vocab, dictionary, mentions = _setup(tmp_path)
    model.encoder.model.to(device)
    config = TrainConfig(**{"epochs": epochs, "batch_size": 3, "lr": 1e-3, "topk": 6, "seed": 1, "bf16": False,
                            "log_every": 1, **kw})
    return Trainer(model, select_queries(mentions, vocab).queries, dictionary, vocab, config, out, progress=False)


def test_bf16_by_default_only_where_the_device_computes_it(tmp_path, monkeypatch):
    import biosyn.training.trainer as trainer_module

    for native in (False, True):
        monkeypatch.setattr(trainer_module, "native_bf16", lambda device, native=native: native)
        assert _trainer(tmp_path / str(native), tmp_path / f"run-{native}", 1, bf16=None).config.bf16 is native
    assert _trainer(tmp_path / "off", tmp_path / "run-off", 1, bf16=False).config.bf16 is False  # --no-bf16 wins


def test_two_steps_lower_the_loss(tmp_path):
    trainer = _trainer(tmp_path, tmp_path / "run", 1)
    cand, sparse, labels = trainer.retrieve()
    # Every query's candidates hold a positive (its gold name is among the sparse top names here), and labels are 0/1.
    assert labels.sum(1).min() >= 1 and set(np.unique(labels).tolist()) == {0.0, 1.0}
    batch = np.arange(len(trainer.queries))
    trainer.model.encoder.model.eval()  # no dropout: the comparison is exact

    def loss_now():
        with torch.no_grad():
            s = trainer.batch_scores([trainer.queries[i].text for i in batch],
                                     [[trainer.names[j] for j in cand[i]] for i in batch], torch.from_numpy(sparse))
            return marginal_nll(s, torch.from_numpy(labels))[0].item()

    before = loss_now()
    for _ in range(2):
        trainer.step(batch, cand, sparse, labels)
    assert loss_now() < before


def test_fast_and_slow_encoding_give_the_same_scores(tmp_path):
    fast = _trainer(tmp_path, tmp_path / "a", 1)
    cand, sparse, _ = fast.retrieve()
    texts = [q.text for q in fast.queries]
    names = [[fast.names[j] for j in row] for row in cand]
    with torch.no_grad():
        a = fast.batch_scores(texts, names, torch.from_numpy(sparse))
        fast.config.fast = False
        b = fast.batch_scores(texts, names, torch.from_numpy(sparse))
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_training_and_serving_score_alike(tmp_path, similarity):
    """The trainer's torch scores and the index's NumPy scores agree for the same model, queries and names."""
    trainer = _trainer(tmp_path, tmp_path / "run", 1, sparse_weight_init=0.7)
    model = trainer.model.configure(similarity=similarity)
    model.encoder.model.eval()
    texts, names = [q.text for q in trainer.queries], trainer.names
    every_name = np.tile(np.arange(len(names)), (len(texts), 1))
    with torch.no_grad():
        training = trainer.batch_scores(texts, [names] * len(texts),
                                        torch.from_numpy(trainer.retriever.sparse_scores(every_name))).numpy()
    assert model.sparse_weight == pytest.approx(0.7)
    model.build_index(trainer.dictionary, trainer.vocabulary)
    for row, ranked in zip(training, model.rank(texts, k=len(names), mode="hybrid")):
        assert len(ranked) == len(names)
        served = {c.name: c.score for c in ranked}
        assert [served[n] for n in names] == pytest.approx(row.tolist(), abs=1e-4)
        # The index ranked by the same score it reports.
        assert all(a.score >= b.score - 1e-6 for a, b in zip(ranked, ranked[1:]))


def test_linear_schedule_warms_up_then_decays_to_zero(tmp_path):
    trainer = _trainer(tmp_path, tmp_path / "run", 2, schedule="linear", warmup=0.25)
    per_epoch = trainer.steps_per_epoch()
    total = 2 * per_epoch
    warm = int(0.25 * total)
    factors = [trainer.lr_factor(s) for s in range(total)]
    assert factors[:warm] == [(s + 1) / warm for s in range(warm)]
    assert factors[warm] == 1.0 and factors[-1] == pytest.approx(1 / (total - warm))
    assert all(a >= b for a, b in zip(factors[warm:], factors[warm + 1:]))
    assert _trainer(tmp_path, tmp_path / "c", 2).lr_factor(5) == 1.0
    trainer.train()
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * factors[-1])


def test_add_gold_leaves_no_query_without_positive(tmp_path):
    plain = _trainer(tmp_path, tmp_path / "a", 1, topk=2)
    with_gold = _trainer(tmp_path, tmp_path / "b", 1, topk=2, add_gold=True)
    for trainer in (plain, with_gold):  # a query whose top-2 cannot hold its gold concept
        trainer.queries[0] = TrainingQuery(trainer.queries[0].text, ("D006527",))
    labels = plain.retrieve()[2]
    assert labels[0].sum() == 0
    cand, _, gold_labels = with_gold.retrieve()
    assert (gold_labels.sum(1) > 0).all()
    assert "D006527" in with_gold.ids[cand[0, -1]] and gold_labels[0].tolist() == [0, 1]
    assert with_gold.without_positive == int((labels.sum(1) == 0).sum())


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_train_saves_logs_plots_and_resume_matches(tmp_path, schedule):
    full = _trainer(tmp_path, tmp_path / "full", 2, schedule=schedule)
    full.train("biosyn train --test")
    out = tmp_path / "full"
    assert (out / "model" / "biosyn.json").exists() and (out / "model" / "README.md").exists()
    assert (out / "training.png").stat().st_size > 0
    events = [json.loads(line)["event"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert events.count("epoch") == 2 and "step" in events
    card = (out / "model" / "README.md").read_text()
    assert card.startswith("---\n") and "base_model:" in card and "CTD" in card

    # interrupted after epoch 1, then resumed from disk
    part = _trainer(tmp_path, tmp_path / "part", 2, schedule=schedule)

    def interrupt(*_):  # the plot is drawn after epoch 1 is saved
        raise KeyboardInterrupt

    part.plot = interrupt
    with pytest.raises(KeyboardInterrupt):
        part.train()
    resumed_model = BioSyn.from_pretrained(tmp_path / "part" / "model", device="cpu")
    _, vocab, dictionary, mentions = _setup(tmp_path)
    config = TrainConfig(epochs=2, batch_size=3, lr=1e-3, topk=6, seed=1, bf16=False, log_every=1, schedule=schedule)
    resumed = Trainer(resumed_model, select_queries(mentions, vocab).queries, dictionary, vocab, config, tmp_path / "part",
                      progress=False)
    resumed.load_state()
    assert resumed.state.epoch == 1
    resumed.train()
    a = full.model.encoder.model.state_dict()
    b = resumed.model.encoder.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert full.model.sparse_weight == resumed.model.sparse_weight
    assert full.state.history[-1]["loss"] == resumed.state.history[-1]["loss"]
    sa, sb = full.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[p]["exp_avg"], sb[p]["exp_avg"]) for p in sa)


def test_resume_refuses_foreign_state(tmp_path):
    part = _trainer(tmp_path, tmp_path / "part", 1)
    part.train()
    other = _trainer(tmp_path / "other", tmp_path / "part", 2)
    other.model.encoder.model.embeddings.word_embeddings.weight.data += 1
    other.model.weights_changed()
    with pytest.raises(ValueError):
        other.load_state()


# -- pre-training -----------------------------------------------------------------------------

def test_multi_similarity_loss():
    labels = torch.tensor([0, 0, 1, 1])
    aligned = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    assert multi_similarity_loss(aligned, labels).item() < multi_similarity_loss(mixed, labels).item()


def test_pretrain_runs_and_saves(tmp_path):
    model, vocab, _, _ = _setup(tmp_path)
    assert len(synonym_sets(vocab)) == 5
    summary = pretrain(model, vocab, PretrainConfig(steps=3, batch_size=4, lr=1e-3, bf16=False), output_dir=tmp_path / "pre",
                       progress=False)
    assert summary["synonym_sets"] == 5 and "neighbour_seconds" not in summary  # random batches: no neighbours
    with pytest.raises(ValueError, match="at least 2"):
        pretrain(model, vocab, PretrainConfig(steps=1, neighbours=1, bf16=False), progress=False)
    assert BioSyn.from_pretrained(tmp_path / "pre").similarity == "cosine"


def test_pair_sampler_pairs_mentions_with_their_concepts_names(tmp_path):
    _, vocab, _, mentions = _setup(tmp_path)
    queries = select_queries(mentions, vocab).queries
    concepts = concept_names(vocab, Preprocessor(), queries)
    by_name = {n: names for names, extra in concepts for n in names + extra}
    mention_texts = {q.text for q in queries} - {n for names, _ in concepts for n in names}
    assert mention_texts == {"ovarian tumor", "wilson s disease", "lynch", "tumour", "hereditary nonpolyposis"}
    sampler = PairSampler(concepts, batch_size=4, mention_share=0.5)
    assert sampler.n_mention == 2 and len(sampler.with_mentions) == 4
    texts, labels = sampler.draw(np.random.default_rng(0))
    assert len(texts) == 8 and labels[0::2] == labels[1::2]
    assert {texts[0], texts[2]} <= mention_texts  # the mention share comes first
    for a, b in zip(texts[0::2], texts[1::2]):
        assert a != b and by_name[a] is by_name[b]  # both names of one concept
    without = PairSampler(concept_names(vocab, Preprocessor(), ()), batch_size=4)
    assert without.n_mention == 0 and not set(without.draw(np.random.default_rng(0))[0]) & mention_texts


class _AngleEncoder:
    """Embeds "c<k> ..." at angle k degrees, so concept k's nearest are k ± 1, k ± 2, ..."""

    def embed(self, texts, bf16=False):
        angles = np.radians([float(t.split()[0][1:]) for t in texts])
        return np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def test_nearest_sets_and_neighbour_groups():
    sets = [[f"c{k} a", f"c{k} b"] for k in (0, 10, 20, 30, 100, 110, 120, 130)]
    nearest = nearest_sets(_AngleEncoder(), sets, 3, bf16=False)
    assert nearest[0].tolist() == [1, 2, 3] and nearest[4].tolist() == [5, 6, 7] and nearest[3].tolist() == [2, 1, 0]
    sampler = PairSampler([(s, []) for s in sets], batch_size=4, mention_share=0.0)
    with pytest.raises(ValueError, match="8 synonym sets"):
        sampler.group_neighbours(nearest[:5], 2)
    sampler.group_neighbours(nearest, 4)
    set_of = {name: i for i, names in enumerate(sets) for name in names}
    for seed in range(5):
        texts, labels = sampler.draw(np.random.default_rng(seed))
        drawn = [set_of[t] for t in texts]
        # one group of four: a random concept (drawn first) and its three nearest, two names each
        assert labels[0::2] == labels[1::2] and drawn[0::2] == drawn[1::2]
        assert drawn[0::2] == [drawn[0], *nearest[drawn[0]]]


# -- weight averaging -------------------------------------------------------------------------

def test_soup_averages_weights_and_refuses_mismatches(tmp_path):
    a, vocab, _, _ = _setup(tmp_path / "a", seed=0)
    b, _, _, _ = _setup(tmp_path / "b", seed=1)
    for m, w in ((a, 0.5), (b, 1.5)):
        m.fit_sparse(vocab)
        m.sparse_weight = w
    expected = {k: (v + b.encoder.model.state_dict()[k]) / 2 for k, v in a.encoder.model.state_dict().items()
                if v.is_floating_point()}
    a.save_pretrained(tmp_path / "ma")
    b.save_pretrained(tmp_path / "mb")
    averaged = soup([tmp_path / "ma", tmp_path / "mb"], tmp_path / "soup")
    assert averaged.sparse_weight == 1.0
    loaded = BioSyn.from_pretrained(tmp_path / "soup", device="cpu")
    state = loaded.encoder.model.state_dict()
    assert all(torch.allclose(state[k], v) for k, v in expected.items())
    assert loaded.sparse_weight == 1.0 and loaded.fingerprint not in (a.fingerprint, b.fingerprint)
    # Weighted (WiSE-FT): three quarters of the way to b.
    weighted = soup([tmp_path / "ma", tmp_path / "mb"], tmp_path / "wise", weights=[1, 3])
    assert weighted.sparse_weight == 1.25
    state = BioSyn.from_pretrained(tmp_path / "wise", device="cpu").encoder.model.state_dict()
    assert all(torch.allclose(state[k], (a.encoder.model.state_dict()[k] + 3 * b.encoder.model.state_dict()[k]) / 4, atol=1e-6)
               for k in expected)
    with pytest.raises(ValueError, match="one non-negative weight per model"):
        average_models([a, b], [1.0])
    b.configure(scale=10.0)
    with pytest.raises(ValueError, match="scale"):
        average_models([a, b])
    b.sparse_weight = 9.0
    kept = average_models([a, b], [1, 1], encoder_only=True)  # other scoring: only the encoders are averaged
    assert kept.scale == a.scale and kept.sparse_weight == 0.5
    with pytest.raises(ValueError):
        average_models([])


def test_dev_evaluation_gives_the_index_and_precision_back_even_when_it_fails(tmp_path, monkeypatch):
    import biosyn.evaluation.evaluate as evaluate
    from biosyn.evaluation.protocol import custom_benchmark

    trainer = _trainer(tmp_path, tmp_path / "run", 1, eval_bf16=True)
    model = trainer.model
    before_index, before_options = model.index, model.embed_options
    benchmark = custom_benchmark([Query("tumour", ("tumour",), ("D009369",))], trainer.vocabulary)
    assert trainer.evaluate(benchmark)["queries"] == 1
    assert model.index is before_index and model.embed_options == before_options

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation failed")

    monkeypatch.setattr(evaluate, "run_evaluation", broken)
    with pytest.raises(RuntimeError, match="evaluation failed"):
        trainer.evaluate(benchmark)
    assert model.index is before_index and model.embed_options == before_options and not model.embed_options.bf16
