"""The cross-encoder reranker: residual scores, save/load, training that fixes a known wrong order, --rerank."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from biosyn.interfaces.cli import main
from biosyn.model.biosyn import BioSyn
from biosyn.model.rerank import CrossEncoderReranker, RerankerOptions
from biosyn.preprocess.pipeline import build_dictionary
from biosyn.training.queries import TrainingQuery
from biosyn.training.rerank import RerankTrainingConfig, train_reranker, training_lists
from tiny import tiny_bert, tiny_vocabulary

# Sparse BioSyn ranks "tumor" (Neoplasms) first for these; the right concept is 4th.
WRONG_FIRST = [TrainingQuery("tumor of the ovary", ("D010051",)), TrainingQuery("hereditary cancer", ("D003123",))]


@pytest.fixture()
def linker():
    vocabulary = tiny_vocabulary()
    model = BioSyn()
    model.build_index(build_dictionary(vocabulary), vocabulary)
    return model


def tiny_reranker(folder, depth: int = 5, seed: int = 0) -> CrossEncoderReranker:
    _, tokenizer = tiny_bert(folder, seed=seed)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=1)
    return CrossEncoderReranker(BertForSequenceClassification(config).eval(), tokenizer, RerankerOptions(depth=depth, max_length=48))


def test_an_untrained_head_with_zero_logits_keeps_the_order_and_the_scores(tmp_path, linker):
    reranker = tiny_reranker(tmp_path / "r")
    torch.nn.init.zeros_(reranker.model.classifier.weight)
    torch.nn.init.zeros_(reranker.model.classifier.bias)
    plain = linker.rank(["tumor of the ovary", "breast tumor"], 5)
    reranked = linker.use_reranker(reranker).rank(["tumor of the ovary", "breast tumor", "tumor of the ovary"], 3)
    assert [[c.name for c in r] for r in reranked] == [[c.name for c in r[:3]] for r in plain + plain[:1]]
    # BioSyn's score is kept (no-match rules and thresholds mean the same); the residual score is beside it.
    assert [c.score for c in reranked[0]] == [c.score for c in plain[0][:3]]
    assert [c.rerank for c in reranked[0]] == pytest.approx([c.score for c in plain[0][:3]])


def test_save_and_load_through_plain_transformers(tmp_path):
    reranker = tiny_reranker(tmp_path / "base")
    reranker.save_pretrained(tmp_path / "saved", trained_on={"corpus": "x"})
    again = CrossEncoderReranker.from_pretrained(tmp_path / "saved")
    assert again.options == reranker.options and again.trained_on == {"corpus": "x"}
    pairs = (["tumor of the ovary", "wilson"], ["ovarian neoplasms", "wilson disease"])
    assert np.allclose(again.pair_logits(*pairs), reranker.pair_logits(*pairs), atol=1e-6)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    batch = reranker.tokenizer(*pairs, padding=True, return_tensors="pt")
    with torch.no_grad():
        assert np.allclose(plain(**batch).logits[:, 0].numpy(), reranker.pair_logits(*pairs), atol=1e-5)
    with pytest.raises(FileNotFoundError, match="biosyn_reranker.json"):
        CrossEncoderReranker.from_pretrained(tmp_path / "base")


def test_training_on_the_models_own_candidates_fixes_the_order_it_got_wrong(tmp_path, linker):
    before = linker.rank([q.text for q in WRONG_FIRST], 5)
    assert [r[0].concept_id for r in before] == ["D009369", "D009369"]
    lists, counts = training_lists(linker, WRONG_FIRST, depth=5)
    assert counts == {"queries": 2, "no_positive": 0, "only_positives": 0, "lists": 2}
    reranker = tiny_reranker(tmp_path / "r")
    record = train_reranker(reranker, linker, WRONG_FIRST, RerankTrainingConfig(epochs=40, lr=2e-3, batch_size=2, warmup=0.0),
                            progress=False)
    assert record["epochs"][-1]["loss"] < record["epochs"][0]["loss"]
    after = linker.use_reranker(reranker).rank([q.text for q in WRONG_FIRST], 5)
    assert [r[0].concept_id for r in after] == ["D010051", "D003123"]
    # Candidates are the same five, re-ordered.
    assert [sorted(c.name for c in r) for r in after] == [sorted(c.name for c in r) for r in before]
    # The gate: BioSyn's top two are 0.013-0.014 apart for both, so 0.01 leaves its (wrong) order and 0.02 re-scores.
    reranker.options = replace(reranker.options, gate=0.01)
    assert [[c.name for c in r] for r in linker.rank([q.text for q in WRONG_FIRST], 5)] == [[c.name for c in r] for r in before]
    reranker.options = replace(reranker.options, gate=0.02)
    assert [r[0].concept_id for r in linker.rank([q.text for q in WRONG_FIRST], 5)] == ["D010051", "D003123"]


def test_rerank_option_on_normalize(tmp_path, linker, capsys):
    linker.index.save(tmp_path / "idx")
    tiny_reranker(tmp_path / "base").save_pretrained(tmp_path / "reranker")
    args = ["normalize", "--model", "sparse", "--index", str(tmp_path / "idx"), "--json", "-k", "2", "tumor of the ovary"]
    assert main([*args, "--rerank", str(tmp_path / "reranker")]) == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out.splitlines()[0])
    assert len(result["candidates"][0]) == 2
    assert main([*args, "--rerank", str(tmp_path / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().err
