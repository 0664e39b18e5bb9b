"""`biosyn index build --workers N`: parts embedded on local Ray actors, merged into one index."""

import json

import numpy as np
import pytest

from biosyn.data.custom import write_jsonl_vocabulary
from biosyn.encoders.dense import DenseEncoder
from biosyn.interfaces.cli import main
from biosyn.model.biosyn import BioSyn
from biosyn.search.index import NameIndex
from tiny import tiny_bert, tiny_vocabulary

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'biosyn[scale]')")


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module; the build uses it as it finds it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_parts_on_ray_workers_make_the_index_of_one_process(tmp_path):
    bert, tokenizer = tiny_bert(tmp_path / "bert")
    model = BioSyn(DenseEncoder(bert, tokenizer, pooling="cls"))
    model.fit_sparse(tiny_vocabulary())
    folder = str(model.save_pretrained(tmp_path / "model"))
    vocabulary = tmp_path / "vocabulary.jsonl"
    write_jsonl_vocabulary(tiny_vocabulary(), vocabulary)
    common = ["--model", folder, "--vocabulary", str(vocabulary), "--dense-dtype", "float16"]
    assert main(["index", "build", str(tmp_path / "one"), *common]) == 0
    assert main(["index", "build", str(tmp_path / "ray"), *common, "--workers", "2", "--part-size", "3"]) == 0
    one, parts = NameIndex.load(tmp_path / "one"), NameIndex.load(tmp_path / "ray")
    assert parts.names == one.names and parts.ids == one.ids and len(one) > 9
    # Each part sorts and pads its own embedding batches: the rows may differ in the last bit.
    np.testing.assert_allclose(parts.dense_matrix.astype(np.float32), one.dense_matrix.astype(np.float32), rtol=1e-3)
    for part in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(parts.sparse_matrix, part), getattr(one.sparse_matrix, part))
    manifest = lambda folder: {k: v for k, v in json.loads((folder / "manifest.json").read_text()).items() if k not in ("checksums", "file_stats")}  # noqa: E731
    assert manifest(tmp_path / "ray") == manifest(tmp_path / "one")
