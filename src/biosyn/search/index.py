"""A persistent name index: the dictionary embedded once, searched many times.

An index directory holds the dictionary (names with their IDs), the concepts they belong to,
the sparse encoder and the TF-IDF rows of every name, optionally the dense embeddings (and a
FAISS index over them), and `manifest.json`, which binds it to the model and vocabulary that
made it. Arrays are `.npy` files, memory-mapped on load so start-up costs little; nothing is
unpickled. A build writes into a temporary folder and renames it into place, so an
interrupted build never leaves a half index that loads.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..data.atomic import atomic_dir, atomic_write
from ..data.records import Concept, Dictionary
from ..encoders.sparse import SparseEncoder
from .exact import as_csr32, batched_topk, sparse_scores
from .scoring import check_mode, hybrid

FORMAT = "biosyn.index"
VERSION = 1
MANIFEST = "manifest.json"


class IndexMismatchError(ValueError):
    """An index used with a model or vocabulary other than the ones it was built with."""


def fingerprint_dictionary(names: Sequence[str], ids: Sequence[Sequence[str]]) -> str:
    digest = hashlib.sha256()
    for name, cids in zip(names, ids):
        digest.update(f"{name}\t{'|'.join(cids)}\n".encode())
    return digest.hexdigest()


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
        ids: list[tuple[str, ...]],
        sparse_encoder: SparseEncoder,
        sparse_matrix: sp.csr_matrix,
        dense_matrix: np.ndarray | None = None,
        concepts: dict[str, Concept] | None = None,
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
        self._faiss = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def has_dense(self) -> bool:
        return self.dense_matrix is not None

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
    ) -> NameIndex:
        """An in-memory index; fits a sparse encoder on the names when none is given."""
        names, ids = dictionary.names, dictionary.ids
        sparse_encoder = sparse_encoder or SparseEncoder().fit(names)
        aliases = {alt: c.id for c in concepts for alt in c.alt_ids}
        info = {
            "format": FORMAT, "version": VERSION, "names": len(names),
            "dictionary_fingerprint": fingerprint_dictionary(names, ids),
            "sparse_fingerprint": sparse_fingerprint(sparse_encoder),
            "dense_dim": None if dense_matrix is None else int(dense_matrix.shape[1]),
            **(manifest or {}), "aliases": aliases,
        }
        return cls(names, ids, sparse_encoder, sparse_encoder.transform(names), dense_matrix,
                   {c.id: c for c in concepts}, info)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the index to `path` atomically (temporary folder, then rename)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            with open(tmp / "dictionary.jsonl", "w", encoding="utf-8") as out:
                for name, cids in zip(self.names, self.ids):
                    out.write(json.dumps([name, list(cids)], ensure_ascii=False) + "\n")
            with open(tmp / "concepts.jsonl", "w", encoding="utf-8") as out:
                for c in self.concepts.values():
                    out.write(json.dumps({"id": c.id, "name": c.name, "alt_ids": list(c.alt_ids), "synonyms": list(c.synonyms)}, ensure_ascii=False) + "\n")
            self.sparse_encoder.save(tmp / "sparse_encoder")
            m = as_csr32(self.sparse_matrix)
            for part in ("data", "indices", "indptr"):
                np.save(tmp / f"sparse_{part}.npy", getattr(m, part), allow_pickle=False)
            if self.dense_matrix is not None:
                np.save(tmp / "dense.npy", np.ascontiguousarray(self.dense_matrix, dtype=np.float32), allow_pickle=False)
            if self._faiss is not None:
                import faiss

                faiss.write_index(self._faiss, str(tmp / "dense.faiss"))
            # The manifest goes last: a folder without it is never taken for an index.
            with atomic_write(tmp / MANIFEST) as out:
                json.dump(self.manifest, out, indent=1)
        self.path = path
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True) -> NameIndex:
        path = Path(path)
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{path}: not a biosyn index (no {MANIFEST}; an interrupted build leaves none)")
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise IndexMismatchError(f"{manifest_path}: not a {FORMAT} version {VERSION} manifest")
        names, ids = [], []
        with open(path / "dictionary.jsonl", encoding="utf-8") as handle:
            for line in handle:
                name, cids = json.loads(line)
                names.append(name)
                ids.append(tuple(cids))
        concepts = {}
        with open(path / "concepts.jsonl", encoding="utf-8") as handle:
            for line in handle:
                r = json.loads(line)
                concepts[r["id"]] = Concept(r["id"], r["name"], tuple(r["alt_ids"]), tuple(r["synonyms"]))
        mode = "r" if mmap else None
        load = lambda name: np.load(path / name, mmap_mode=mode, allow_pickle=False)  # noqa: E731
        sparse_encoder = SparseEncoder.load(path / "sparse_encoder")
        sparse = sp.csr_matrix((load("sparse_data.npy"), load("sparse_indices.npy"), load("sparse_indptr.npy")),
                               shape=(len(names), len(sparse_encoder.vocabulary) or 1))
        dense = load("dense.npy") if (path / "dense.npy").exists() else None
        index = cls(names, ids, sparse_encoder, sparse, dense, concepts, manifest, path)
        if (path / "dense.faiss").exists():
            import faiss

            index._faiss = faiss.read_index(str(path / "dense.faiss"))
        if index.manifest.get("dictionary_fingerprint") != fingerprint_dictionary(names, ids):
            raise IndexMismatchError(f"{path}: dictionary.jsonl does not match the manifest's fingerprint")
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

    def add_faiss(self, kind: str = "hnsw", *, hnsw_m: int = 32, ef_search: int = 128, nlist: int | None = None, nprobe: int = 16):
        """An approximate FAISS index over the dense rows (inner product), for millions of names."""
        import faiss

        if self.dense_matrix is None:
            raise ValueError("an approximate index needs dense embeddings")
        x = np.ascontiguousarray(self.dense_matrix, dtype=np.float32)
        d = x.shape[1]
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = ef_search
        elif kind == "ivf":
            nlist = nlist or max(1, int(4 * np.sqrt(len(x))))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(x)
            index.nprobe = nprobe
        else:
            raise ValueError(f"unknown FAISS index kind {kind!r}; choose hnsw or ivf")
        index.add(x)
        self._faiss = index
        self.manifest["faiss"] = {"kind": kind}
        return index

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
    ) -> SearchResult:
        """Top-k names for each query: the hybrid score (`scoring.hybrid`), or either half alone.
        Dense queries and rows come prepared by `scoring.Scorer.vectors`.

        `approximate` takes dense candidates from the FAISS index and sparse candidates from the
        exact sparse search, then re-scores their union exactly.
        """
        check_mode(mode)
        if mode != "sparse" and (dense_queries is None or self.dense_matrix is None):
            raise ValueError(f"mode {mode!r} needs dense embeddings in the index and for the queries")
        if mode != "dense" and sparse_queries is None:
            raise ValueError(f"mode {mode!r} needs sparse query vectors")
        n_queries = (dense_queries if dense_queries is not None else sparse_queries).shape[0]
        if approximate and mode != "sparse":
            indices = self._approximate_candidates(k, mode, dense_queries, sparse_queries)
        else:
            indices = self._exact(k, mode, dense_queries, sparse_queries, sparse_weight, batch_size)
        valid = indices >= 0  # approximate candidate lists are padded with -1
        safe = np.where(valid, indices, 0)
        dense = self._dense_scores(dense_queries, safe) if dense_queries is not None and self.has_dense else None
        sparse = (sparse_scores(sparse_queries, self.sparse_matrix, safe) if sparse_queries is not None
                  else np.zeros(indices.shape, np.float32))
        scores = {"dense": dense, "sparse": sparse}.get(mode)
        if scores is None:
            scores = hybrid(dense, sparse, sparse_weight)
        if approximate and mode != "sparse":
            scores = np.where(valid, scores, -np.inf)
            order = np.stack([np.lexsort((row_i, -row_s))[:k] for row_i, row_s in zip(indices, scores)]) if n_queries else np.zeros((0, k), np.int64)
            take = lambda a: None if a is None else np.take_along_axis(a, order, axis=1)  # noqa: E731
            indices, scores, dense, sparse = take(indices), take(scores), take(dense), take(sparse)
        return SearchResult(indices, scores.astype(np.float32), dense, sparse)

    def _exact(self, k, mode, dense_q, sparse_q, weight, batch_size) -> np.ndarray:
        matrix, sparse = self.dense_matrix, as_csr32(self.sparse_matrix) if mode != "dense" else None
        query = np.ascontiguousarray(dense_q, dtype=np.float32) if mode != "sparse" else None
        sq = as_csr32(sparse_q) if mode != "dense" else None
        n = len(self)

        def make_scorer(rows: np.ndarray):
            d_q = query[rows] if query is not None else None
            s_t = sq[rows].toarray().T if sq is not None else None

            def score(a, b):
                if mode == "sparse":
                    return sparse[a:b] @ s_t
                out = matrix[a:b] @ d_q.T
                return hybrid(out, sparse[a:b] @ s_t, weight) if mode == "hybrid" else out

            return score

        rows = np.arange(query.shape[0] if query is not None else sq.shape[0])
        indices, _ = batched_topk(rows, n, k, batch_size, None, make_scorer)
        return indices

    def _approximate_candidates(self, k, mode, dense_q, sparse_q) -> np.ndarray:
        if self._faiss is None:
            raise ValueError("this index has no approximate (FAISS) part; build it with --approximate hnsw|ivf")
        depth = max(4 * k, 64)
        _, dense_idx = self._faiss.search(np.ascontiguousarray(dense_q, dtype=np.float32), min(depth, len(self)))
        if mode == "hybrid":
            sparse_idx = self._exact(depth, "sparse", None, sparse_q, 1.0, 128)
            dense_idx = np.concatenate([dense_idx, sparse_idx], axis=1)
        # Union per query; duplicates and FAISS's own fillers become -1.
        out = np.full_like(dense_idx, -1)
        for i, row in enumerate(dense_idx):
            uniq = list(dict.fromkeys(int(x) for x in row if x >= 0))
            out[i, : len(uniq)] = uniq
        return out

    def _dense_scores(self, dense_q: np.ndarray, indices: np.ndarray) -> np.ndarray:
        rows = np.asarray(self.dense_matrix[indices.ravel()], dtype=np.float32).reshape(*indices.shape, -1)
        return np.einsum("qkd,qd->qk", rows, np.asarray(dense_q, dtype=np.float32))


def sparse_fingerprint(encoder: SparseEncoder) -> str:
    digest = hashlib.sha256(json.dumps([encoder.ngram_range, sorted(encoder.vocabulary.items())]).encode())
    digest.update(np.asarray(encoder.idf, dtype=np.float64).tobytes())
    return digest.hexdigest()[:16]
