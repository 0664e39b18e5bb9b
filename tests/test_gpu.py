"""Training and pre-training on a CUDA GPU. Skipped where there is none (CI has none); run
`pytest tests/test_gpu.py` on a GPU machine after touching devices, autocast or the trainer."""

import numpy as np
import pytest
import torch

from biosyn.encoders.dense import DenseEncoder
from biosyn.model.biosyn import BioSyn
from biosyn.training.pretrain import PretrainConfig, pretrain
from biosyn.training.queries import select_queries
from biosyn.training.trainer import Trainer
from test_training import _setup, _trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_gpu_scores_match_the_cpu(tmp_path):
    cpu = _trainer(tmp_path, tmp_path / "a", 1)
    gpu = _trainer(tmp_path, tmp_path / "b", 1, device="cuda")
    cand, sparse, _ = cpu.retrieve()
    texts = [q.text for q in cpu.queries]
    names = [[cpu.names[j] for j in row] for row in cand]
    with torch.no_grad():
        a = cpu.batch_scores(texts, names, torch.from_numpy(sparse))
        b = gpu.batch_scores(texts, names, torch.from_numpy(sparse).cuda())
    assert b.device.type == "cuda"
    assert torch.allclose(a, b.cpu(), atol=1e-4)


@pytest.mark.parametrize("bf16", [False, True])
def test_training_on_the_gpu_lowers_the_loss_saves_and_resumes(tmp_path, bf16):
    trainer = _trainer(tmp_path, tmp_path / "run", 2, device="cuda", bf16=bf16)
    assert trainer.sparse_weight.device.type == "cuda"
    cand, sparse, labels = trainer.retrieve()
    batch = np.arange(len(trainer.queries))
    trainer.model.encoder.model.eval()
    before = trainer.step(batch, cand, sparse, labels)[0]
    for _ in range(3):
        trainer.step(batch, cand, sparse, labels)
    assert trainer.step(batch, cand, sparse, labels)[0] < before

    part = _trainer(tmp_path, tmp_path / "part", 2, device="cuda", bf16=bf16)

    def interrupt(*_):
        raise KeyboardInterrupt

    part.plot = interrupt
    with pytest.raises(KeyboardInterrupt):
        part.train()
    model = BioSyn.from_pretrained(tmp_path / "part" / "model", device="cuda")
    assert model.encoder.device.type == "cuda"
    _, vocab, dictionary, mentions = _setup(tmp_path)
    resumed = Trainer(model, select_queries(mentions, vocab).queries, dictionary, vocab, part.config, tmp_path / "part",
                      progress=False)
    resumed.load_state()
    assert resumed.sparse_weight.device.type == "cuda"
    state = resumed.train()
    assert state.epoch == 2 and np.isfinite(state.history[-1]["loss"])
    assert BioSyn.from_pretrained(tmp_path / "part" / "model", device="cpu").encoder.device.type == "cpu"


def test_pretraining_with_neighbours_on_the_gpu(tmp_path):
    model, vocab, _, _ = _setup(tmp_path)
    model.encoder.model.to("cuda")
    before = {k: v.clone() for k, v in model.encoder.model.state_dict().items()}
    summary = pretrain(model, vocab, PretrainConfig(steps=3, batch_size=4, lr=1e-3, neighbours=2), output_dir=tmp_path / "pre",
                       progress=False)
    assert np.isfinite(summary["last_loss"])
    after = model.encoder.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert isinstance(BioSyn.from_pretrained(tmp_path / "pre", device="cpu").encoder, DenseEncoder)
