"""The ONNX Runtime backend (issue 13): export round trip, stale exports, the backend choice, no torch when serving."""

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'biosyn[onnx]')")

from biosyn.encoders.dense import DenseEncoder  # noqa: E402
from biosyn.encoders.onnx import (  # noqa: E402
    INT8_SCHEME,
    INT8_SCHEME_BEFORE,
    SIDECAR,
    Backend,
    NoExportError,
    OnnxEncoder,
    StaleExportError,
    export,
    find_export,
)
from biosyn.interfaces import loading  # noqa: E402
from biosyn.interfaces.cli import main  # noqa: E402
from biosyn.model.biosyn import BioSyn  # noqa: E402
from biosyn.preprocess.pipeline import build_dictionary  # noqa: E402
from tiny import tiny_bert, tiny_vocabulary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMES = ["wilson disease", "x", "hereditary breast and ovarian cancer", "colon cancers", "lynch syndrome 2", ""]
# fp32 ONNX against torch on the tiny BERT: float rounding only.
ATOL = 1e-4


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOSYN_CACHE", str(tmp_path / "cache"))


def saved_model(folder: Path, seed: int = 0, pooling: str = "cls", similarity: str = "dot") -> BioSyn:
    bert, tokenizer = tiny_bert(folder.parent / f"base{seed}", seed=seed)
    model = BioSyn(DenseEncoder(bert, tokenizer, pooling=pooling), similarity=similarity, sparse_weight=0.5)
    model.fit_sparse(tiny_vocabulary())
    model.save_pretrained(folder)
    return model


def exported(tmp_path, **kwargs) -> tuple[BioSyn, Path]:
    folder = tmp_path / "model"
    model = saved_model(folder, **kwargs)
    export(model.encoder, folder, fingerprint=model.fingerprint, similarity=model.similarity, int8=True)
    return model, folder


@pytest.mark.parametrize("pooling,similarity", [("cls", "dot"), ("mean", "cosine")])
def test_export_round_trip_gives_torchs_vectors_and_fingerprint(tmp_path, pooling, similarity):
    torch_model, folder = exported(tmp_path, pooling=pooling, similarity=similarity)
    assert {"model.onnx", "model.int8.onnx", SIDECAR, "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    onnx_model = BioSyn.from_pretrained(folder, backend="onnx")
    assert isinstance(onnx_model.encoder, OnnxEncoder) and onnx_model.encoder.pooling == pooling
    assert onnx_model.fingerprint == torch_model.fingerprint == json.loads((folder / SIDECAR).read_text())["fingerprint"]
    want = torch_model.embed(NAMES * 3)
    got = onnx_model.embed(NAMES * 3)
    assert got.shape == want.shape == (18, 32) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=ATOL)
    # Batches of 2 pad differently; the vectors do not change.
    np.testing.assert_allclose(onnx_model.encoder.embed(NAMES, batch_size=2), torch_model.encoder.embed(NAMES), atol=ATOL)
    int8_model = BioSyn.from_pretrained(folder, backend="onnx-int8")
    int8 = int8_model.embed(NAMES)
    assert int8.shape == want[:6].shape and not np.allclose(int8, want[:6], atol=ATOL)  # other weights, near vectors
    # The int8 weights' scheme is recorded, and an index embedded with them is cached under it.
    assert int8_model.encoder.int8_scheme == json.loads((folder / SIDECAR).read_text())["int8_scheme"] == INT8_SCHEME
    keys = {loading._model_key(m) for m in (torch_model, onnx_model, int8_model)}
    sidecar = json.loads((folder / SIDECAR).read_text())
    del sidecar["int8_scheme"]  # as an export made before the scheme was recorded
    (folder / SIDECAR).write_text(json.dumps(sidecar))
    older = BioSyn.from_pretrained(folder, backend="onnx-int8")
    assert older.encoder.int8_scheme == INT8_SCHEME_BEFORE and len(keys | {loading._model_key(older)}) == 3
    # An index built on torch serves ONNX queries: the same fingerprint, the same ranking.
    vocab = tiny_vocabulary()
    torch_model.build_index(build_dictionary(vocab), vocab)
    onnx_model.use_index(torch_model.index)
    want_ranked = [[c.name for c in r] for r in torch_model.rank(NAMES[:5], k=3)]
    assert [[c.name for c in r] for r in onnx_model.rank(NAMES[:5], k=3)] == want_ranked


def test_the_optimised_graph_is_kept_reused_and_rebuilt_when_damaged(tmp_path, caplog):
    _, folder = exported(tmp_path)
    first = OnnxEncoder(folder).embed(NAMES)
    (kept,) = folder.glob("model.ort-*.onnx")  # the first session optimised the graph and kept it
    stamp = kept.stat().st_mtime_ns
    np.testing.assert_array_equal(OnnxEncoder(folder).embed(NAMES), first)
    assert kept.stat().st_mtime_ns == stamp  # read, not made again
    kept.write_bytes(b"not a graph")
    with caplog.at_level(logging.WARNING):
        np.testing.assert_array_equal(OnnxEncoder(folder).embed(NAMES), first)
    assert "not used" in caplog.text and kept.stat().st_size > 100
    os.utime(folder / "model.onnx")  # a new export: the graph kept for the old one is replaced
    assert OnnxEncoder(folder).session is not None  # the session is made in a thread; this waits for it
    assert [p.name for p in folder.glob("model.ort-*.onnx")] != [kept.name] and len(list(folder.glob("model.ort-*.onnx"))) == 1


def test_a_stale_export_is_refused_and_passed_over_by_default(tmp_path, caplog):
    _, folder = exported(tmp_path)
    other = saved_model(tmp_path / "other", seed=1)
    # Other weights copied over the folder's, the export left in place.
    shutil.copy(tmp_path / "other" / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(StaleExportError, match="exported from other weights"):
        BioSyn.from_pretrained(folder, backend="onnx")
    with caplog.at_level(logging.WARNING):
        fallback = BioSyn.from_pretrained(folder, backend=None)
    assert isinstance(fallback.encoder, DenseEncoder) and "using torch" in caplog.text
    np.testing.assert_allclose(fallback.embed(NAMES), other.embed(NAMES), atol=1e-6)


def test_a_copy_with_new_file_times_is_still_current(tmp_path):
    _, folder = exported(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, copy_function=shutil.copy)  # new modification times, same bytes
    os.utime(copy / "model.safetensors", ns=(1, 1))
    assert find_export(copy) == copy


def test_saving_new_weights_removes_the_old_export(tmp_path):
    model, folder = exported(tmp_path)
    model.save_pretrained(folder)
    assert not (folder / SIDECAR).exists() and not (folder / "model.onnx").exists()
    assert isinstance(BioSyn.from_pretrained(folder, backend=None).encoder, DenseEncoder)


def test_backend_default_is_onnx_when_exported_and_onnx_without_export_is_a_clear_error(tmp_path, capsys):
    folder = tmp_path / "model"
    saved_model(folder)
    assert isinstance(BioSyn.from_pretrained(folder, backend=None).encoder, DenseEncoder)
    with pytest.raises(NoExportError, match="biosyn export"):
        BioSyn.from_pretrained(folder, backend="onnx")
    vocab = tmp_path / "v.tsv"
    vocab.write_text("X:1\tWilson disease\thepatolenticular degeneration\nX:2\tBreast cancer\tbreast neoplasm\n")
    args = ["normalize", "--model", str(folder), "--vocabulary", str(vocab), "-k", "1", "wilson disease"]
    assert main([*args, "--backend", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "has no ONNX export" in err and f"biosyn export {folder}" in err
    with pytest.raises(SystemExit):
        main([*args, "--backend", "tensorflow"])
    assert main(["export", str(folder)]) == 0
    assert isinstance(BioSyn.from_pretrained(folder, backend=None).encoder, OnnxEncoder)
    capsys.readouterr()
    assert main(["export", str(folder)]) == 0  # current: nothing to do
    assert "is current" in capsys.readouterr().out
    assert main([*args, "--backend", "onnx", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["ids"] == ["X:1"]
    assert main([*args, "--backend", "onnx-int8"]) == 2  # exported without --int8
    assert "with int8 weights" in capsys.readouterr().err
    assert Backend("onnx") is Backend.ONNX


TEXTS = ["Hereditary nonpolyposis colorectal cancer (HNPCC) is also called Lynch syndrome.", "Wilson disease", ""]


def test_the_tagger_exports_and_tags_as_on_torch(tmp_path, capsys):
    from biosyn.ner.tagger import DiseaseTagger
    from tiny import tiny_tagger

    folder = tmp_path / "tagger"
    torch_tagger = tiny_tagger(folder, max_length=16, overlap=4)  # short windows: the first text needs several
    assert main(["export", str(folder), "--int8"]) == 0
    assert "exported the tagger" in capsys.readouterr().out
    assert main(["export", str(folder), "--int8"]) == 0 and "is current" in capsys.readouterr().out
    sidecar = json.loads((folder / SIDECAR).read_text())
    del sidecar["int8_scheme"]  # int8 weights made before the scheme was recorded: one scale per tensor
    (folder / SIDECAR).write_text(json.dumps(sidecar))
    assert main(["export", str(folder), "--int8"]) == 0 and "exported the tagger" in capsys.readouterr().out
    assert json.loads((folder / SIDECAR).read_text())["int8_scheme"] == INT8_SCHEME
    # A plain export after an int8 one leaves the int8 file, which its sidecar no longer lists: not used.
    assert main(["export", str(folder), "--force"]) == 0 and (folder / "model.int8.onnx").is_file()
    assert find_export(folder, Backend.ONNX_INT8) is None and find_export(folder, Backend.ONNX) == folder
    assert main(["export", str(folder), "--int8"]) == 0 and "exported the tagger" in capsys.readouterr().out
    onnx = DiseaseTagger.from_pretrained(folder, backend=None)
    assert onnx.onnx is not None and onnx.model is None
    for (tokens, got), (want_tokens, want) in zip(onnx.word_log_probs(TEXTS), torch_tagger.word_log_probs(TEXTS)):
        assert tokens == want_tokens
        np.testing.assert_allclose(got, want, atol=ATOL)
    assert onnx.tag(TEXTS) == torch_tagger.tag(TEXTS)
    assert DiseaseTagger.from_pretrained(folder, backend="onnx", int8=True).onnx is not None  # the int8 file
    with pytest.raises(NoExportError):
        OnnxEncoder(folder)  # a tagger's export is not an encoder's


def test_the_onnx_inference_path_imports_neither_torch_nor_transformers(tmp_path):
    from tiny import tiny_tagger

    model, folder = exported(tmp_path)
    tiny_tagger(tmp_path / "tagger").export_onnx(tmp_path / "tagger")
    vocab = tiny_vocabulary()
    model.build_index(build_dictionary(vocab), vocab).save(tmp_path / "index")
    code = f"""
import sys, json
import biosyn
from biosyn.interfaces.cli import build_parser
build_parser().parse_args(["normalize", "x"])
from biosyn.annotation.annotator import Annotator
from biosyn.interfaces.loading import load_tagger
from biosyn.model.specs import load_model
from biosyn.search.index import NameIndex
model = load_model({str(folder)!r}, backend=None)
model.use_index(NameIndex.load({str(tmp_path / "index")!r}))
top = model.normalize(["wilson disease"], k=2)[0].candidates[0][0].name
Annotator(load_tagger({str(tmp_path / "tagger")!r}), model).annotate(["Wilson disease runs in families."])
print(json.dumps([type(model.encoder).__name__, top, sorted(m for m in ("torch", "transformers") if m in sys.modules)]))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout.splitlines()[-1]) == ["OnnxEncoder", model.normalize(["wilson disease"], k=2)[0].candidates[0][0].name, []]


def test_without_onnxruntime_the_default_is_torch_and_onnx_says_what_to_install(tmp_path, monkeypatch):
    import importlib.util

    _, folder = exported(tmp_path)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "onnxruntime" else find_spec(name, *args))
    assert isinstance(BioSyn.from_pretrained(folder, backend=None).encoder, DenseEncoder)
    with pytest.raises(NoExportError, match=r"pip install 'biosyn\[onnx\]'"):
        BioSyn.from_pretrained(folder, backend="onnx")
