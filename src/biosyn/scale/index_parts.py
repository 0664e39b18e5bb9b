"""An index built in parts: consecutive name ranges embedded on Ray workers, then merged.

The driver fits the sparse encoder on the vocabulary (its idf needs every name) and splits the
dictionary into ranges of `part_size` names. Each of `workers` Ray actors loads the model once
(by its spec, `BioSyn.spec`, which every worker must be able to resolve: a shared folder, a
packaged or hub model) and turns ranges into parts: the names' dense rows, in `dense_dtype`, and
TF-IDF rows. `NameIndex.merge` joins the parts in order, so the index equals the one
`BioSyn.build_index` makes in one go (tests/test_index_scale.py checks it file by file). Without
Ray (`workers=0`) the same parts are built one after another in this process.

`address` joins a running Ray cluster ("auto", or "ray://host:10001"); without it a local Ray
with this machine's CPUs (at least `workers`) starts, and stops when the build ends. A Ray that is already running in this
process (tests start one per module) is used as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..data.records import Dictionary, DictionaryEntry, Vocabulary
from ..encoders.sparse import SparseEncoder
from ..model.biosyn import BioSyn
from ..search.index import IndexMismatchError, NameIndex
from .cluster import ray_session

log = logging.getLogger(__name__)

PART_SIZE = 100_000  # names a part: about 5 min of MiniLM embedding on one core


def part_ranges(n: int, part_size: int = PART_SIZE) -> list[tuple[int, int]]:
    if part_size < 1:
        raise ValueError(f"part size must be at least 1, not {part_size}")
    return [(start, min(start + part_size, n)) for start in range(0, n, part_size)]


def build_part(model: BioSyn, names: Sequence[str], ids: Sequence[tuple[str, ...]], dense_dtype: str) -> NameIndex:
    """One part: the names' TF-IDF rows and, when the model has an encoder, their dense rows."""
    dense = model.embed(names) if model.encoder is not None else None
    part = NameIndex.build(Dictionary(DictionaryEntry(n, i) for n, i in zip(names, ids)), model.sparse_encoder, dense,
                           dense_dtype=dense_dtype)
    part.manifest["model_fingerprint"] = model.fingerprint
    return part


def build_index_in_parts(model: BioSyn, dictionary: Dictionary, vocabulary: Vocabulary, *, workers: int = 0,
                         address: str | None = None, part_size: int = PART_SIZE, dense_dtype: str = "float32",
                         manifest: dict | None = None) -> NameIndex:
    """`model.build_index(dictionary, vocabulary, ...)` in parts, on `workers` Ray actors (0: here).
    The index is kept on the model and returned."""
    if model.sparse_encoder is None:
        model.fit_sparse(vocabulary)
    names, ids = dictionary.names, dictionary.ids
    ranges = part_ranges(len(names), part_size)
    if workers:
        parts = _parts_on_ray(model, names, ids, ranges, workers, address, dense_dtype)
    else:
        parts = [build_part(model, names[a:b], ids[a:b], dense_dtype) for a, b in ranges]
    for number, part in enumerate(parts):
        if part.manifest["model_fingerprint"] != model.fingerprint:
            raise IndexMismatchError(f"part {number} was embedded by another model ({part.manifest['model_fingerprint']}) "
                                     f"than this one ({model.fingerprint}): do all workers resolve {model.spec!r} alike?")
    dense = model.encoder is not None
    if not parts:  # an empty dictionary: build what one-shot would
        return model.build_index(dictionary, vocabulary, dense=dense, manifest=manifest, dense_dtype=dense_dtype)
    model.index = NameIndex.merge(parts, list(vocabulary), model.index_manifest(vocabulary, dense, manifest))
    return model.index


def _parts_on_ray(model: BioSyn, names, ids, ranges, workers: int, address: str | None, dense_dtype: str) -> list[NameIndex]:
    with ray_session(address, workers) as ray:
        from ray.util import ActorPool

        actor = ray.remote(num_cpus=1)(_PartBuilder)
        options = {"bf16": model.embed_options.bf16, "backend": model.backend}
        pool = ActorPool([actor.remote(model.spec, options, model.sparse_encoder) for _ in range(workers)])
        log.info("embedding %d names in %d parts on %d Ray workers", len(names), len(ranges), workers)
        # ActorPool.map gives results in the order of its inputs: the merge order.
        return list(pool.map(lambda builder, r: builder.part.remote(names[r[0]:r[1]], ids[r[0]:r[1]], dense_dtype), ranges))


class _PartBuilder:
    """A Ray actor: the model, loaded once, with the driver's sparse encoder."""

    def __init__(self, spec: str, options: dict, sparse_encoder: SparseEncoder):
        from ..model.specs import load_model

        self.model = load_model(spec, **options)
        self.model.sparse_encoder = sparse_encoder

    def part(self, names: Sequence[str], ids: Sequence[tuple[str, ...]], dense_dtype: str) -> NameIndex:
        return build_part(self.model, names, ids, dense_dtype)
