"""A persistent name index: the dictionary embedded once, searched many times.

An index directory holds the dictionary (names with their IDs), the concepts they belong to,
the sparse encoder and the TF-IDF rows of every name, optionally the dense embeddings (and a
FAISS index over them), and `manifest.json`, which binds it to the model and vocabulary that
made it. Arrays are `.npy` files, memory-mapped on load so start-up costs little; nothing is
unpickled. The names are one JSON array, each name's concept IDs indices into another (as CSR
arrays), and the concepts one JSON object read as a whole but made `Concept`s only when asked
for: a CLI call reads the 73k-name MEDIC dictionary in tens of milliseconds, not the 0.6 s a
line-per-name file took. A build writes into a temporary folder and renames it into place, so an
interrupted build never leaves a half index that loads.

The manifest holds the SHA-256 of every other file, and its size and modification time. Loading
checks them (`verify=True`, the default): a file whose size and time are unchanged since saving is
taken as written, any other is hashed. The arrays' dtypes, shapes, monotone `indptr` and column
bounds are always checked, so a damaged file is a `CorruptIndexError` naming it, never a crash or
silently wrong scores.

Million-name vocabularies (docs/index.md): dense rows may be stored as float16 (half the disk
and page cache; scores are computed in float32), the FAISS part may be IVF-PQ (a few dozen
bytes a name in RAM), whose candidates are over-fetched and re-scored exactly from the
memory-mapped rows, and the sparse side may keep postings (the TF-IDF columns, an inverted
index) so that approximate search scores only the names sharing a query's rarest n-grams
instead of all of them. An index can also be built in parts (consecutive name ranges, e.g. on
Ray workers) and merged; the merged index equals the one built in one go.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from ..data.atomic import atomic_dir, atomic_write
from ..data.errors import FormatError
from ..data.records import Concept, Dictionary
from ..encoders.sparse import SparseEncoder
from .exact import as_csr32, batched_topk, csr_rows, sparse_scores
from .scoring import check_mode, hybrid

FORMAT = "biosyn.index"
VERSION = 3  # 2: the manifest lists every file's checksum; 3: the dictionary as arrays (names.json, name_concepts_*.npy)
MANIFEST = "manifest.json"
SPARSE_PARTS = {"data": np.float32, "indices": np.int32, "indptr": np.int32}
# Each name's concept IDs: positions in concept_ids.json, CSR-style.
NAME_CONCEPT_PARTS = {"indptr": np.int64, "indices": np.int32}
DICTIONARY_FILES = ("names.json", "concept_ids.json", *(f"name_concepts_{part}.npy" for part in NAME_CONCEPT_PARTS), "concepts.json")
# The TF-IDF matrix by column: for each n-gram, the names holding it and its weight there.
POSTINGS = {"indptr": np.int64, "rows": np.int32, "data": np.float32}
DENSE_DTYPES = ("float32", "float16")
APPROXIMATE_KINDS = ("hnsw", "ivf", "ivfpq")
# Approximate sparse search: n-grams are taken rarest first while their postings add up to at
# most `budget` names; the `pool` names with the best partial score are scored exactly, and the
# best `depth` are the candidates. In sparse mode the budget is a third of the names (at least
# 100,000), the pool 8,192 and the depth the search's candidates. In hybrid mode the dense
# candidates carry the score (the sparse weight is a fraction of the dense scale), so the sparse
# side only adds the names sharing nearly all the query's n-grams: a twentieth of the names (at
# least 20,000), a pool of 512 and a depth of 64. Tuned at 1M and 4M names (docs/results.md).
POSTINGS_POOL = 8192
HYBRID_POSTINGS_POOL = 512
HYBRID_POSTINGS_DEPTH = 64
IVF_NPROBE = 16  # IVF-flat lists searched a query
# IVF-PQ probes enough lists to scan about this many codes, and at most a quarter of its lists: at 1M
# and 4M names (√n lists) 250 and 132 lists, dense recall@20 0.98 in 3-5 ms (docs/results.md).
IVFPQ_CODES_SCANNED = 2**18
IVFPQ_CANDIDATES = 400  # names an IVF-PQ search fetches and re-scores exactly
_ROWS_AT_ONCE = 65536  # dense rows converted to float32 at a time (FAISS training and adding, checks)


class IndexMismatchError(ValueError):
    """An index used with a model or vocabulary other than the ones it was built with."""


class CorruptIndexError(FormatError):
    """A damaged or incomplete index file; the message names it. A cached index is rebuilt."""


def file_checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder` but the manifest, by path relative to it."""
    out = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        with open(file, "rb") as handle:
            out[file.relative_to(folder).as_posix()] = hashlib.file_digest(handle, "sha256").hexdigest()
    return out


def file_stats(folder: Path, names) -> dict[str, list[int]]:
    """Size and modification time (ns) of each named file under `folder`."""
    return {name: _stat(folder / name) for name in names}


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def fingerprint_dictionary(names: Sequence[str], ids: Sequence[Sequence[str]]) -> str:
    digest = hashlib.sha256()
    for name, cids in zip(names, ids):
        digest.update(f"{name}\t{'|'.join(cids)}\n".encode())
    return digest.hexdigest()


class ConceptIdLists(Sequence[tuple[str, ...]]):
    """Each name's concept IDs, kept as positions in one list of IDs and made tuples on access."""

    def __init__(self, concept_ids: list[str], indptr: np.ndarray, indices: np.ndarray):
        self.concept_ids, self.indptr, self.indices = concept_ids, indptr, indices

    @classmethod
    def pack(cls, ids: Sequence[Sequence[str]]) -> ConceptIdLists:
        if isinstance(ids, ConceptIdLists):
            return ids
        concept_ids = sorted({cid for cids in ids for cid in cids})
        position = {cid: i for i, cid in enumerate(concept_ids)}
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([len(cids) for cids in ids])
        indices = np.fromiter((position[cid] for cids in ids for cid in cids), dtype=np.int32, count=int(indptr[-1]))
        return cls(concept_ids, indptr, indices)

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, i):  # ints only: what callers take
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        return tuple(self.concept_ids[j] for j in self.indices[self.indptr[i] : self.indptr[i + 1]])

    def __eq__(self, other) -> bool:
        if not isinstance(other, Sequence):
            return NotImplemented
        return len(self) == len(other) and all(a == tuple(b) for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # mutable arrays inside, like a list

    def __iter__(self) -> Iterator[tuple[str, ...]]:
        ids, indices, indptr = self.concept_ids, self.indices.tolist(), self.indptr.tolist()
        for a, b in zip(indptr, indptr[1:]):
            yield tuple(ids[j] for j in indices[a:b])


class SavedConcepts(Mapping[str, Concept]):
    """concepts.json's records ({id: [name, alt IDs, synonyms]}), made Concepts (and checked) when
    asked for: a query reads a handful of the vocabulary's thousands."""

    def __init__(self, path: Path, records: dict):
        self.path, self._records = path, records
        self._made: dict[str, Concept] = {}

    def __getitem__(self, concept_id: str) -> Concept:
        if concept_id not in self._made:
            record = self._records[concept_id]
            if not (type(record) is list and len(record) == 3 and type(record[0]) is str and _strings(record[1]) and _strings(record[2])):
                raise CorruptIndexError(self.path, None, concept_id, "expected [name, [alt id, ...], [synonym, ...]]")
            self._made[concept_id] = Concept(concept_id, record[0], tuple(record[1]), tuple(record[2]))
        return self._made[concept_id]

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)


@dataclass
class SearchResult:
    indices: np.ndarray  # [n_queries, k] dictionary rows, best first
    scores: np.ndarray  # [n_queries, k] the ranking score
    dense: np.ndarray | None  # [n_queries, k] dense similarity of each hit, when the index has one
    sparse: np.ndarray  # [n_queries, k] sparse cosine of each hit


class NameIndex:
    def __init__(
        self,
        names: list[str],
        ids: Sequence[tuple[str, ...]],
        sparse_encoder: SparseEncoder,
        sparse_matrix: sp.csr_matrix,
        dense_matrix: np.ndarray | None = None,
        concepts: Mapping[str, Concept] | None = None,
        manifest: dict | None = None,
        path: Path | None = None,
    ):
        if sparse_matrix.shape[0] != len(names) or (dense_matrix is not None and dense_matrix.shape[0] != len(names)):
            raise ValueError("names, sparse rows and dense rows must have one entry per name")
        self.names = names
        self.ids = ids
        self.sparse_encoder = sparse_encoder
        self.sparse_matrix = sparse_matrix
        self.dense_matrix = dense_matrix
        self.concepts = concepts or {}
        self.manifest = manifest or {}
        self.path = path
        self._faiss: Any = None  # a faiss.Index (untyped library)
        self.postings: dict[str, np.ndarray] | None = None  # POSTINGS arrays, from `add_postings`
        self._name_set: frozenset[str] | None = None

    def __len__(self) -> int:
        return len(self.names)

    def has_name(self, name: str) -> bool:
        """Whether `name` (preprocessed) is one of the index's names. The set is built on first use
        (about 100 B a name)."""
        if self._name_set is None:
            self._name_set = frozenset(self.names)
        return name in self._name_set

    @property
    def has_dense(self) -> bool:
        return self.dense_matrix is not None

    @property
    def dense_dtype(self) -> str | None:
        return None if self.dense_matrix is None else str(self.dense_matrix.dtype)

    def concept(self, concept_id: str) -> Concept | None:
        if concept_id in self.concepts:
            return self.concepts[concept_id]
        return self.concepts.get(self.manifest.get("aliases", {}).get(concept_id))

    # -- building and persistence ----------------------------------------------------------

    @classmethod
    def build(
        cls,
        dictionary: Dictionary,
        sparse_encoder: SparseEncoder | None = None,
        dense_matrix: np.ndarray | None = None,
        concepts: Sequence[Concept] = (),
        manifest: dict | None = None,
        dense_dtype: str = "float32",
    ) -> NameIndex:
        """An in-memory index; fits a sparse encoder on the names when none is given. Dense rows
        are stored as `dense_dtype` (one of DENSE_DTYPES)."""
        names, ids = dictionary.names, dictionary.ids
        sparse_encoder = sparse_encoder or SparseEncoder().fit(names)
        dense = None if dense_matrix is None else as_dense_dtype(dense_matrix, dense_dtype)
        return cls._assemble(names, ids, sparse_encoder, sparse_encoder.transform(names), dense, concepts, manifest)

    @classmethod
    def merge(cls, parts: Sequence[NameIndex], concepts: Sequence[Concept] = (), manifest: dict | None = None) -> NameIndex:
        """One index from parts built (`build`) on consecutive ranges of one dictionary's names with
        one sparse encoder; it equals the index `build` makes of all the names at once."""
        if not parts:
            raise ValueError("merging needs at least one part")
        first = parts[0]
        for number, part in enumerate(parts):
            if sparse_fingerprint(part.sparse_encoder) != sparse_fingerprint(first.sparse_encoder):
                raise IndexMismatchError(f"part {number} was built with another sparse encoder than part 0")
            if part.dense_dtype != first.dense_dtype or (part.has_dense and part.dense_matrix.shape[1] != first.dense_matrix.shape[1]):  # type: ignore[union-attr]
                raise IndexMismatchError(f"part {number} has dense rows {part.dense_dtype} of another width or type than part 0")
        names = [name for part in parts for name in part.names]
        if len(set(names)) != len(names):
            raise ValueError("the parts overlap: a name is in more than one part")
        ids = [i for part in parts for i in part.ids]
        sparse = sp.vstack([as_csr32(part.sparse_matrix) for part in parts], format="csr")
        dense = None if first.dense_matrix is None else np.concatenate([part.dense_matrix for part in parts])
        return cls._assemble(names, ids, first.sparse_encoder, sparse, dense, concepts, manifest)

    @classmethod
    def _assemble(cls, names, ids, sparse_encoder, sparse_matrix, dense, concepts, manifest) -> NameIndex:
        aliases = {alt: c.id for c in concepts for alt in c.alt_ids}
        info = {
            "format": FORMAT, "version": VERSION, "names": len(names),
            "dictionary_fingerprint": fingerprint_dictionary(names, ids),
            "sparse_fingerprint": sparse_fingerprint(sparse_encoder),
            "dense_dim": None if dense is None else int(dense.shape[1]),
            "dense_dtype": None if dense is None else str(dense.dtype),
            **(manifest or {}), "aliases": aliases,
        }
        return cls(names, ids, sparse_encoder, sparse_matrix, dense, {c.id: c for c in concepts}, info)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the index to `path` atomically (temporary folder, then rename)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            ids = ConceptIdLists.pack(self.ids)
            _write_json(tmp / "names.json", list(self.names))
            _write_json(tmp / "concept_ids.json", ids.concept_ids)
            for part in NAME_CONCEPT_PARTS:
                np.save(tmp / f"name_concepts_{part}.npy", getattr(ids, part), allow_pickle=False)
            _write_json(tmp / "concepts.json", {c.id: [c.name, list(c.alt_ids), list(c.synonyms)] for c in self.concepts.values()})
            self.sparse_encoder.save(tmp / "sparse_encoder")
            m = as_csr32(self.sparse_matrix)
            if m.nnz >= 2**31:
                raise ValueError(f"{m.nnz} sparse entries: more than an index's int32 row pointers hold")
            for part, dtype in SPARSE_PARTS.items():
                np.save(tmp / f"sparse_{part}.npy", np.asarray(getattr(m, part), dtype=dtype), allow_pickle=False)
            if self.postings is not None:
                for part, array in self.postings.items():
                    np.save(tmp / f"postings_{part}.npy", array, allow_pickle=False)
            if self.dense_matrix is not None:
                np.save(tmp / "dense.npy", self.dense_matrix, allow_pickle=False)
            if self._faiss is not None:
                import faiss

                faiss.write_index(self._faiss, str(tmp / "dense.faiss"))
            self.manifest["checksums"] = file_checksums(tmp)
            self.manifest["file_stats"] = file_stats(tmp, self.manifest["checksums"])
            # The manifest goes last: a folder without it is never taken for an index.
            with atomic_write(tmp / MANIFEST) as out:
                json.dump(self.manifest, out, indent=1)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True, verify: bool = True) -> NameIndex:
        """Loads a saved index. `verify=False` skips the checksums (the structural checks stay)."""
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{path}: not a biosyn index (no {MANIFEST}; an interrupted build leaves none)")
        manifest = _read_manifest(manifest_path)
        files = [*DICTIONARY_FILES, *(f"sparse_{part}.npy" for part in SPARSE_PARTS)]
        with_postings = "postings" in manifest
        files += [f"postings_{part}.npy" for part in POSTINGS] if with_postings else []
        files += [f for f in ("dense.npy", "dense.faiss") if (path / f).exists()]
        if verify:
            _verify_checksums(path, manifest["checksums"], files, manifest.get("file_stats"))
        # The checksums stand for the dictionary's fingerprint: recomputing it costs more than reading.
        names, ids = _read_dictionary(path, manifest.get("names"))
        concepts = _read_concepts(path / "concepts.json")
        try:
            sparse_encoder = SparseEncoder.load(path / "sparse_encoder")
        except FormatError as error:
            raise CorruptIndexError(error.path, error.line, error.field, error.message) from None
        except FileNotFoundError as error:
            raise CorruptIndexError(path / "sparse_encoder", None, None, str(error)) from None
        load = lambda name: _load_array(path / name, "r" if mmap else None)  # noqa: E731
        n_columns = len(sparse_encoder.vocabulary) or 1
        parts = {part: load(f"sparse_{part}.npy") for part in SPARSE_PARTS}
        _check_sparse(path, parts, len(names), n_columns)
        sparse = sp.csr_matrix((parts["data"], parts["indices"], parts["indptr"]), shape=(len(names), n_columns))
        dense = load("dense.npy") if "dense.npy" in files else None
        if dense is not None:
            # Indexes from before float16 rows have no dense_dtype: theirs are float32.
            _check_array(path / "dense.npy", dense, np.dtype(manifest.get("dense_dtype") or "float32"), (len(names), manifest.get("dense_dim")))
        elif manifest.get("dense_dim") is not None:
            raise CorruptIndexError(path / "dense.npy", None, None, "missing, though the manifest has dense embeddings")
        index = cls(names, ids, sparse_encoder, sparse, dense, concepts, manifest, path)
        if with_postings:
            index.postings = {part: load(f"postings_{part}.npy") for part in POSTINGS}
            _check_postings(path, index.postings, len(names), n_columns, sparse.nnz)
            # Indexes saved before the hybrid settings existed take their defaults.
            manifest["postings"] = _postings_settings(len(names), manifest["postings"])
        if "dense.faiss" in files:
            index._faiss = _read_faiss(path / "dense.faiss", len(names), manifest.get("dense_dim"), manifest.get("faiss"))
        return index

    def check_model(self, model_fingerprint: str | None, sparse_encoder: SparseEncoder | None = None) -> None:
        """Refuses an index built with another model than the one about to query it."""
        built = self.manifest.get("model_fingerprint")
        if model_fingerprint is not None and built != model_fingerprint:
            raise IndexMismatchError(
                f"index {self.path or ''} was built with model {built or '(none: sparse only)'}, "
                f"not with this model ({model_fingerprint}); rebuild it with `biosyn index build`"
            )
        if sparse_encoder is not None and sparse_fingerprint(sparse_encoder) != self.manifest.get("sparse_fingerprint"):
            raise IndexMismatchError(f"index {self.path or ''} was built with another sparse encoder; rebuild it")

    def check_vocabulary(self, vocabulary_fingerprint: str) -> None:
        built = self.manifest.get("vocabulary_fingerprint")
        if built != vocabulary_fingerprint:
            raise IndexMismatchError(
                f"index {self.path or ''} was built from vocabulary {built}, not {vocabulary_fingerprint}; rebuild it"
            )

    # -- approximate search ----------------------------------------------------------------

    def add_faiss(self, kind: str = "hnsw", *, hnsw_m: int = 32, ef_search: int = 128, nlist: int | None = None,
                  nprobe: int | None = None, pq_m: int | None = None, candidates: int | None = None):
        """An approximate FAISS index over the dense rows (inner product), for millions of names.

        `ivfpq` keeps FAISS's fast-scan codes, `pq_m` 4-bit codes a name (default one per 4
        dimensions: d/8 bytes), scanned with SIMD: at 1M names several times faster than 8-bit
        codes of the same size for the same recall (docs/results.md). Its ranking is rough, so
        search over-fetches `candidates` names (default IVFPQ_CANDIDATES for ivfpq, else max(4k, 64)) and
        re-scores them exactly from the stored rows. IVF lists: `nlist` (default 4√n for ivf, √n
        for ivfpq), `nprobe` of them searched (default 16 for ivf; for ivfpq `ivfpq_nprobe`).
        Training uses at most 64 rows a list, a seeded sample.
        """
        import faiss

        if self.dense_matrix is None:
            raise ValueError("an approximate index needs dense embeddings")
        if kind not in APPROXIMATE_KINDS:
            raise ValueError(f"unknown FAISS index kind {kind!r}; choose one of {', '.join(APPROXIMATE_KINDS)}")
        n, d = self.dense_matrix.shape
        settings: dict[str, Any] = {"kind": kind}
        index: Any
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            settings |= {"hnsw_m": hnsw_m, "ef_search": ef_search}
        else:
            nlist = nlist or max(1, int((4 if kind == "ivf" else 1) * np.sqrt(n)))
            quantizer = faiss.IndexFlatIP(d)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                pq_m = pq_m or _pq_codes(d)
                if d % pq_m or pq_m % 2:
                    raise ValueError(f"ivfpq: {d} dimensions do not split into {pq_m} sub-vectors (an even number)")
                if n < 256:
                    raise ValueError(f"ivfpq needs at least 256 names to train its codes, not {n}; use hnsw or ivf")
                index = faiss.IndexIVFPQFastScan(quantizer, d, nlist, pq_m, 4, faiss.METRIC_INNER_PRODUCT)
                settings["pq_m"] = pq_m
            sample = np.sort(np.random.default_rng(0).choice(n, min(n, max(64 * nlist, 256 * 39)), replace=False))
            index.train(np.asarray(self.dense_matrix[sample], dtype=np.float32))
            settings |= {"nlist": nlist, "nprobe": nprobe or (IVF_NPROBE if kind == "ivf" else ivfpq_nprobe(n, nlist))}
        settings["candidates"] = candidates or (IVFPQ_CANDIDATES if kind == "ivfpq" else None)
        for start in range(0, n, _ROWS_AT_ONCE):
            index.add(np.asarray(self.dense_matrix[start : start + _ROWS_AT_ONCE], dtype=np.float32))
        _configure_faiss(index, settings)
        self._faiss = index
        self.manifest["faiss"] = settings
        return index

    def add_postings(self, *, budget: int | None = None, pool: int | None = None, hybrid_budget: int | None = None) -> None:
        """The sparse rows by n-gram (an inverted index), for approximate sparse and hybrid search
        over millions of names; the settings as described at POSTINGS_POOL."""
        columns = sp.csc_matrix(as_csr32(self.sparse_matrix))
        columns.sort_indices()
        self.postings = {part: np.asarray(array, dtype=POSTINGS[part])
                         for part, array in (("indptr", columns.indptr), ("rows", columns.indices), ("data", columns.data))}
        self.manifest["postings"] = _postings_settings(len(self), {"budget": budget, "pool": pool, "hybrid_budget": hybrid_budget})

    # -- search ----------------------------------------------------------------------------

    def search(
        self,
        k: int,
        *,
        mode: str = "hybrid",
        dense_queries: np.ndarray | None = None,
        sparse_queries: sp.csr_matrix | None = None,
        sparse_weight: float = 1.0,
        approximate: bool = False,
        batch_size: int = 128,
        candidates: int | None = None,
    ) -> SearchResult:
        """Top-k names for each query: the hybrid score (`scoring.hybrid`), or either half alone.
        Dense queries and rows come prepared by `scoring.Scorer.vectors`.

        `approximate` takes `candidates` dense candidates from the FAISS index and sparse candidates
        from the postings (`add_postings`: as many in sparse mode, the hybrid settings' few in hybrid
        mode; without postings, from the exact sparse search), then re-scores their union exactly.
        Sparse mode is approximate only with postings.
        """
        check_mode(mode)
        if mode != "sparse" and (dense_queries is None or self.dense_matrix is None):
            raise ValueError(f"mode {mode!r} needs dense embeddings in the index and for the queries")
        if mode != "dense" and sparse_queries is None:
            raise ValueError(f"mode {mode!r} needs sparse query vectors")
        n_queries = dense_queries.shape[0] if dense_queries is not None else sparse_queries.shape[0]  # type: ignore[union-attr]
        approximate = approximate and (mode != "sparse" or self.postings is not None)
        if approximate:
            indices = self._approximate_candidates(k, mode, dense_queries, sparse_queries, candidates)
        else:
            indices = self._exact(k, mode, dense_queries, sparse_queries, sparse_weight, batch_size)
        valid = indices >= 0  # approximate candidate lists are padded with -1
        safe = np.where(valid, indices, 0)
        dense = self._dense_scores(dense_queries, safe) if dense_queries is not None and self.has_dense else None
        sparse = (sparse_scores(sparse_queries, self.sparse_matrix, safe) if sparse_queries is not None
                  else np.zeros(indices.shape, np.float32))
        if mode == "sparse":
            scores = sparse
        else:
            assert dense is not None  # checked above: these modes need dense queries and rows
            scores = dense if mode == "dense" else hybrid(dense, sparse, sparse_weight)
        if approximate:
            scores = np.where(valid, scores, -np.inf)
            order = np.stack([np.lexsort((row_i, -row_s))[:k] for row_i, row_s in zip(indices, scores)]) if n_queries else np.zeros((0, k), np.int64)
            take = lambda a: np.take_along_axis(a, order, axis=1)  # noqa: E731
            indices, scores, sparse = take(indices), take(scores), take(sparse)
            dense = None if dense is None else take(dense)
        return SearchResult(indices, scores.astype(np.float32), dense, sparse)

    def _exact(self, k, mode, dense_q, sparse_q, weight, batch_size) -> np.ndarray:
        # Any: each is None exactly in the modes that do not read it.
        matrix: Any = self.dense_matrix
        sparse: Any = as_csr32(self.sparse_matrix) if mode != "dense" else None
        query: Any = np.ascontiguousarray(dense_q, dtype=np.float32) if mode != "sparse" else None
        sq: Any = as_csr32(sparse_q) if mode != "dense" else None
        n = len(self)

        def make_scorer(rows: np.ndarray):
            d_q: Any = query[rows] if query is not None else None
            s_t: Any = sq[rows].toarray().T if sq is not None else None

            def score(a, b):
                if mode == "sparse":
                    return csr_rows(sparse, a, b) @ s_t
                out = np.asarray(matrix[a:b], dtype=np.float32) @ d_q.T
                return hybrid(out, csr_rows(sparse, a, b) @ s_t, weight) if mode == "hybrid" else out

            return score

        rows = np.arange(query.shape[0] if query is not None else sq.shape[0])
        indices, _ = batched_topk(rows, n, k, batch_size, None, make_scorer)
        return indices

    def _approximate_candidates(self, k, mode, dense_q, sparse_q, candidates) -> np.ndarray:
        settings = self.manifest.get("faiss") or {}
        depth = min(candidates or settings.get("candidates") or max(4 * k, 64), len(self))
        found = []
        if mode != "sparse":
            if self._faiss is None:
                raise ValueError("this index has no approximate (FAISS) part; build it with --approximate-kind")
            found.append(self._faiss.search(np.ascontiguousarray(dense_q, dtype=np.float32), depth)[1])
        if mode != "dense":
            if self.postings is None:
                found.append(self._exact(depth, "sparse", None, sparse_q, 1.0, 128))
            else:
                postings = self.manifest["postings"]
                found.append(self._sparse_candidates(sparse_q, depth, postings["budget"], postings["pool"]) if mode == "sparse" else
                             self._sparse_candidates(sparse_q, min(depth, postings["hybrid_depth"]), postings["hybrid_budget"],
                                                     postings["hybrid_pool"]))
        joined = np.concatenate(found, axis=1)
        # Union per query; duplicates and FAISS's own fillers become -1.
        out = np.full_like(joined, -1)
        for i, row in enumerate(joined):
            row = row[row >= 0]
            _, first = np.unique(row, return_index=True)
            out[i, : len(first)] = row[np.sort(first)]  # in the order found
        return out

    def _sparse_candidates(self, sparse_q, depth: int, budget: int, pool: int) -> np.ndarray:
        """Per query, the `depth` best names by exact sparse score among those sharing its rarest
        n-grams (see POSTINGS_POOL); padded with -1. Its recall against the exact top-k is
        measured by benchmarks/index_scale.py (docs/results.md)."""
        assert self.postings is not None
        indptr, rows, data = self.postings["indptr"], self.postings["rows"], self.postings["data"]
        queries = as_csr32(sparse_q)
        out = np.full((queries.shape[0], depth), -1, dtype=np.int64)
        for i in range(queries.shape[0]):
            terms = queries.indices[queries.indptr[i] : queries.indptr[i + 1]]
            weights = queries.data[queries.indptr[i] : queries.indptr[i + 1]]
            if not len(terms):
                continue
            lengths = indptr[terms + 1] - indptr[terms]
            rarest = np.argsort(lengths, kind="stable")
            taken = rarest[: max(1, int(np.searchsorted(np.cumsum(lengths[rarest]), budget, side="right")))]
            hit = np.concatenate([rows[indptr[t] : indptr[t + 1]] for t in terms[taken]])
            partial = np.concatenate([w * data[indptr[t] : indptr[t + 1]] for t, w in zip(terms[taken], weights[taken])])
            # The partial score per name: few hits are summed by sorting them, many by counting into an
            # array of all the names (at 4M names sorting is the faster below about n/4 hits).
            if len(hit) * 4 < len(self):
                names, partial = _sum_by_name(hit, partial)
            else:
                partial = np.bincount(hit, weights=partial, minlength=len(self))
                names = np.flatnonzero(partial)
                partial = partial[names]
            if len(names) > pool:
                names = np.sort(names[np.argpartition(-partial, pool)[:pool]])
            exact = sparse_scores(queries[i], self.sparse_matrix, names[None, :])[0]
            best = np.lexsort((names, -exact))[:depth]
            out[i, : len(best)] = names[best]
        return out

    def _dense_scores(self, dense_q: np.ndarray, indices: np.ndarray) -> np.ndarray:
        assert self.dense_matrix is not None
        rows = np.asarray(self.dense_matrix[indices.ravel()], dtype=np.float32).reshape(*indices.shape, -1)
        return np.einsum("qkd,qd->qk", rows, np.asarray(dense_q, dtype=np.float32))


def _sum_by_name(hit: np.ndarray, partial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct names among `hit` and each one's summed `partial`. Each posting list is sorted by
    name, so `hit` is a few sorted runs, which a stable sort (timsort) merges in about linear time:
    at 4M names 2-3 times faster than np.unique's sort (docs/results.md)."""
    order = np.argsort(hit, kind="stable")
    ordered = hit[order]
    first = np.empty(len(ordered), dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first], np.bincount(np.cumsum(first) - 1, weights=partial[order])


def as_dense_dtype(matrix: np.ndarray, dtype: str) -> np.ndarray:
    """Dense rows as one of DENSE_DTYPES; float16 must keep every value finite."""
    if dtype not in DENSE_DTYPES:
        raise ValueError(f"dense dtype must be one of {', '.join(DENSE_DTYPES)}, not {dtype!r}")
    with np.errstate(over="ignore"):  # reported below, naming the remedy
        out = np.ascontiguousarray(matrix, dtype=dtype)
    if dtype == "float16" and not _all_finite(out):
        raise ValueError("the dense rows overflow float16 (|value| > 65504); store them as float32")
    return out


def _all_finite(array: np.ndarray) -> bool:
    # By blocks: a memory-mapped 4M x 384 array checked at once would take a 1.5 GB temporary.
    return all(np.isfinite(array[start : start + _ROWS_AT_ONCE]).all() for start in range(0, len(array), _ROWS_AT_ONCE))


def ivfpq_nprobe(n: int, nlist: int) -> int:
    """The default IVF-PQ lists probed: IVFPQ_CODES_SCANNED codes, at most a quarter of the lists."""
    return max(1, min(nlist // 4, -(-IVFPQ_CODES_SCANNED * nlist // n)))


def _pq_codes(d: int) -> int:
    """One 4-bit code (a 16-centroid sub-quantizer) per 4 dimensions, or the largest even divisor of d below that."""
    return next((m for m in range(max(2, d // 4), 1, -1) if d % m == 0 and m % 2 == 0), 2)


def _postings_settings(n: int, given: dict) -> dict[str, int]:
    """The postings' search settings (see POSTINGS_POOL) for n names: `given`'s, and the defaults for the rest."""
    defaults = {"budget": max(100_000, n // 3), "pool": POSTINGS_POOL, "hybrid_budget": max(20_000, n // 20),
                "hybrid_pool": HYBRID_POSTINGS_POOL, "hybrid_depth": HYBRID_POSTINGS_DEPTH}
    return {key: given.get(key) or default for key, default in defaults.items()}


def _configure_faiss(index, settings: dict) -> None:
    """Search-time settings, which a saved FAISS file does not keep: from the manifest on load."""
    import faiss

    if "ef_search" in settings:
        index.hnsw.efSearch = settings["ef_search"]
    if "nprobe" in settings:
        faiss.extract_index_ivf(index).nprobe = settings["nprobe"]


def sparse_fingerprint(encoder: SparseEncoder) -> str:
    digest = hashlib.sha256(json.dumps([encoder.ngram_range, sorted(encoder.vocabulary.items())]).encode())
    digest.update(np.asarray(encoder.idf, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]


def _read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"), parse_constant=lambda name: None)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CorruptIndexError(path, None, None, f"not a JSON manifest ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CorruptIndexError(path, None, "format", f"not a {FORMAT} manifest")
    if manifest.get("version") != VERSION:
        raise IndexMismatchError(f"{path}: a {FORMAT} of version {manifest.get('version')}, not {VERSION}; "
                                 "rebuild it with `biosyn index build`")
    checksums = manifest.get("checksums")
    if not isinstance(checksums, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in checksums.items()):
        raise CorruptIndexError(path, None, "checksums", "missing or not a mapping of file names to SHA-256 digests")
    if not isinstance(manifest.get("names"), int) or not isinstance(manifest.get("aliases", {}), dict):
        raise CorruptIndexError(path, None, "names/aliases", "missing or of the wrong type")
    dim = manifest.get("dense_dim")
    if dim is not None and (type(dim) is not int or dim < 1):
        raise CorruptIndexError(path, None, "dense_dim", f"expected a positive integer, got {dim!r}")
    if manifest.get("dense_dtype") not in (None, *DENSE_DTYPES):
        raise CorruptIndexError(path, None, "dense_dtype", f"expected one of {', '.join(DENSE_DTYPES)}, got {manifest['dense_dtype']!r}")
    for field, ints in (("faiss", ("nlist", "nprobe", "candidates", "pq_m", "hnsw_m", "ef_search")), ("postings", ("budget", "pool", "hybrid_budget", "hybrid_pool", "hybrid_depth"))):
        settings = manifest.get(field, {})
        if not isinstance(settings, dict) or any(settings.get(key) is not None and (type(settings[key]) is not int or settings[key] < 1)
                                                 for key in ints):
            raise CorruptIndexError(path, None, field, f"expected a mapping with positive integers for {', '.join(ints)}")
    if "postings" in manifest and not all(key in manifest["postings"] for key in ("budget", "pool")):
        raise CorruptIndexError(path, None, "postings", "needs a budget and a pool")
    return manifest


def _verify_checksums(folder: Path, checksums: dict[str, str], needed: list[str], stats: dict | None = None) -> None:
    """Every file against its SHA-256; one whose size and modification time are still those recorded at
    saving is taken as written, as make and rsync do (reading 112 MB of MiniLM rows is a tenth of a second
    of every start-up). A copy that did not keep the times is hashed."""
    for name in needed:
        if name not in checksums:
            raise CorruptIndexError(folder / name, None, None, f"has no checksum in {MANIFEST}")
    for name, digest in checksums.items():
        file = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise CorruptIndexError(folder / MANIFEST, None, "checksums", f"file name {name!r} outside the index")
        try:
            if isinstance(stats, dict) and stats.get(name) == _stat(file):
                continue
            with open(file, "rb") as handle:
                actual = hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as error:
            raise CorruptIndexError(file, None, None, f"unreadable ({error.strerror or error})") from None
        if actual != digest:
            raise CorruptIndexError(file, None, None, f"content does not match its checksum in {MANIFEST}: the file is damaged")


def _read_json(path: Path, valid, expected: str):
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as error:
        raise CorruptIndexError(path, None, None, f"unreadable ({error.strerror or error})") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CorruptIndexError(path, None, None, f"not JSON ({error})") from None
    if not valid(value):
        raise CorruptIndexError(path, None, None, f"expected {expected}")
    return value


def _write_json(path: Path, value) -> None:
    with open(path, "w", encoding="utf-8") as out:
        json.dump(value, out, ensure_ascii=False, separators=(",", ":"))


def _strings(value) -> bool:
    return type(value) is list and all(type(v) is str for v in value)


def _read_dictionary(path: Path, n_names) -> tuple[list[str], ConceptIdLists]:
    names = _read_json(path / "names.json", _strings, "a JSON array of names")
    if n_names != len(names):
        raise CorruptIndexError(path / "names.json", None, None, f"holds {len(names)} names, the manifest {n_names}")
    concept_ids = _read_json(path / "concept_ids.json", _strings, "a JSON array of concept IDs")
    parts = {part: _load_array(path / f"name_concepts_{part}.npy", None) for part in NAME_CONCEPT_PARTS}
    indptr, indices = parts["indptr"], parts["indices"]
    for part, dtype in NAME_CONCEPT_PARTS.items():
        _check_array(path / f"name_concepts_{part}.npy", parts[part], dtype, (len(names) + 1,) if part == "indptr" else (parts[part].size,))
    if indptr[0] != 0 or indptr[-1] != len(indices) or np.any(np.diff(indptr) < 0):
        raise CorruptIndexError(path / "name_concepts_indptr.npy", None, None, "not a monotone row pointer over the indices")
    if len(indices) and (indices.min() < 0 or indices.max() >= len(concept_ids)):
        raise CorruptIndexError(path / "name_concepts_indices.npy", None, None, f"a position outside the {len(concept_ids)} concept IDs")
    return names, ConceptIdLists(concept_ids, indptr, indices)


def _read_concepts(path: Path) -> SavedConcepts:
    return SavedConcepts(path, _read_json(path, lambda v: type(v) is dict, "a JSON object of concepts by ID"))


def _load_array(path: Path, mmap_mode: Literal["r"] | None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise CorruptIndexError(path, None, None, f"not a readable .npy array ({error})") from None


def _check_array(path: Path, array: np.ndarray, dtype, shape: tuple) -> None:
    if array.dtype != dtype or array.shape != shape:
        raise CorruptIndexError(path, None, None, f"expected {np.dtype(dtype)} of shape {shape}, found {array.dtype} {array.shape}")
    if array.dtype.kind == "f" and not _all_finite(array):
        raise CorruptIndexError(path, None, None, "holds values that are not finite")


def _check_sparse(folder: Path, parts: dict[str, np.ndarray], n_rows: int, n_columns: int) -> None:
    """What scipy and the search kernels take on trust: out-of-range values crash them."""
    data, indices, indptr = parts["data"], parts["indices"], parts["indptr"]
    nnz = len(indices) if indices.ndim == 1 else -1
    _check_array(folder / "sparse_indices.npy", indices, np.int32, (nnz,))
    _check_array(folder / "sparse_data.npy", data, np.float32, (nnz,))
    _check_array(folder / "sparse_indptr.npy", indptr, np.int32, (n_rows + 1,))
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise CorruptIndexError(folder / "sparse_indptr.npy", None, None, f"row pointers do not rise from 0 to {nnz}")
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= n_columns):
        raise CorruptIndexError(folder / "sparse_indices.npy", None, None, f"column numbers outside 0..{n_columns - 1}")


def _check_postings(folder: Path, parts: dict[str, np.ndarray], n_rows: int, n_columns: int, nnz: int) -> None:
    for part, dtype in POSTINGS.items():
        shape = (n_columns + 1,) if part == "indptr" else (nnz,)
        _check_array(folder / f"postings_{part}.npy", parts[part], dtype, shape)
    indptr, rows = parts["indptr"], parts["rows"]
    if indptr[0] != 0 or indptr[-1] != nnz or np.any(np.diff(indptr) < 0):
        raise CorruptIndexError(folder / "postings_indptr.npy", None, None, f"column pointers do not rise from 0 to {nnz}")
    if nnz and (int(rows.min()) < 0 or int(rows.max()) >= n_rows):
        raise CorruptIndexError(folder / "postings_rows.npy", None, None, f"name numbers outside 0..{n_rows - 1}")


def _read_faiss(path: Path, n_rows: int, dim: int | None, settings: dict | None):
    import faiss

    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise CorruptIndexError(path, None, None, f"not a readable FAISS index ({str(error).splitlines()[0]})") from None
    if index.ntotal != n_rows or index.d != dim:
        raise CorruptIndexError(path, None, None, f"holds {index.ntotal} vectors of {index.d} dimensions, not {n_rows} of {dim}")
    # Indexes from before the settings were kept say nothing: FAISS's own search settings stay.
    settings = settings or {}
    kind = {faiss.IndexHNSWFlat: "hnsw", faiss.IndexIVFFlat: "ivf", faiss.IndexIVFPQFastScan: "ivfpq"}.get(type(faiss.downcast_index(index)))
    if index.metric_type != faiss.METRIC_INNER_PRODUCT or kind is None or kind != settings.get("kind", kind):
        raise CorruptIndexError(path, None, None, f"a FAISS index of another kind or metric than the manifest's {settings.get('kind')} (inner product)")
    _configure_faiss(index, settings)
    return index
