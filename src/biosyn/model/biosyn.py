"""The BioSyn model: a dense encoder, a sparse encoder and a learned sparse weight.

score(query, name) = dense similarity + sparse_weight × sparse cosine, as `search.scoring`
defines it for serving and training alike. The dense similarity is BioSyn's raw inner product
of the pooled vectors (`dot`) or a scaled cosine (`cosine`: unit vectors, queries multiplied by
`scale`); the choice is saved with the model.

A model folder is a standard transformers folder (config, safetensors weights, tokenizer
files) plus `biosyn.json` and the sparse encoder as JSON + NumPy, so the model card's
`AutoModel.from_pretrained(folder)` works on it. The released BioSyn checkpoints
(`dmis-lab/biosyn-*`: encoder files, `sparse_weight.pt`, pickled `sparse_encoder.pk`) load
as published: the weight with `torch.load(weights_only=True)`, and the vectoriser is refit
from the vocabulary unless the caller trusts the pickle explicitly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.atomic import atomic_write
from ..data.records import Candidate, Dictionary, Vocabulary
from ..encoders.onnx import Backend, OnnxEncoder, choose_backend, remove_export
from ..encoders.sparse import SparseEncoder
from ..preprocess.pipeline import Preprocessor
from ..search.index import NameIndex
from ..search.scoring import Scorer, Similarity, check_mode

log = logging.getLogger(__name__)

CONFIG_FILE = "biosyn.json"
SPARSE_DIR = "sparse_encoder"
# A score at or below this is no match (see `is_match`): 0 is what a name sharing nothing with the mention gets.
NO_MATCH_SCORE = 0.0


@dataclass(frozen=True)
class EmbedOptions:
    batch_size: int = 256
    bf16: bool = False


@dataclass
class Normalization:
    """The result for one mention: its preprocessed parts and, per part, ranked candidates
    (none for a part that has no match)."""

    mention: str
    parts: tuple[str, ...]
    candidates: list[list[Candidate]] = field(default_factory=list)

    @property
    def top(self) -> list[Candidate]:
        """The best candidate of each part that has a match."""
        return [c[0] for c in self.candidates if c]

    @property
    def best_ids(self) -> tuple[str, ...]:
        """The concept ID of each part's best match, each once; none when no part has a match."""
        return tuple(dict.fromkeys(c.concept_id for c in self.top))


class BioSyn:
    """Not thread-safe: one call at a time (the server funnels requests through one worker)."""

    def __init__(
        self,
        encoder=None,
        sparse_encoder: SparseEncoder | None = None,
        *,
        sparse_weight: float = 1.0,
        similarity: str = "dot",
        scale: float = 1.0,
        preprocessor: Preprocessor | None = None,
    ):
        self.scorer = Scorer(Similarity(similarity), scale)
        self.encoder = encoder  # biosyn.encoders.dense.DenseEncoder, or None for a sparse-only model
        self.sparse_encoder = sparse_encoder
        self.sparse_weight = float(sparse_weight)
        # The fingerprint of the vocabulary a sparse encoder was fit on here (or taken from an index for);
        # None for one the model came with. Cache keys stand a vocabulary's fit by its vocabulary.
        self.sparse_fit_here: str | None = None
        self.preprocessor = preprocessor or Preprocessor()
        self.index: NameIndex | None = None
        self.spec = "sparse" if encoder is None else getattr(encoder, "name_or_path", "")  # what the user named
        self.base_model: str | None = None  # the encoder training started from, recorded in saved folders
        self.embed_options = EmbedOptions()
        self.reranker = None  # a `rerank.CrossEncoderReranker` that re-scores the top candidates, when set
        self._fingerprint: str | None = None

    # -- declared state ----------------------------------------------------------------------

    @property
    def similarity(self) -> Similarity:
        return self.scorer.similarity

    @property
    def scale(self) -> float:
        return self.scorer.scale

    @property
    def backend(self) -> str:
        """What runs the encoder (`encoders.onnx.Backend`'s values); torch for a sparse-only model."""
        return str(getattr(self.encoder, "backend", "torch"))

    @property
    def int8_scheme(self) -> str | None:
        """How the int8 weights that run the encoder were made (`encoders.onnx.INT8_SCHEMES`); None off int8."""
        return getattr(self.encoder, "int8_scheme", None)

    def configure(self, *, similarity: str | None = None, scale: float | None = None, pooling: str | None = None,
                  max_length: int | None = None) -> BioSyn:
        """Changes what the dense rows depend on; the fingerprint follows."""
        if similarity is not None or scale is not None:
            self.scorer = Scorer(Similarity(similarity or self.scorer.similarity), self.scorer.scale if scale is None else scale)
        if pooling is not None:
            self.encoder.pooling = pooling
        if max_length is not None:
            self.encoder.max_length = int(max_length)
        self.weights_changed()
        return self

    def configure_embedding(self, *, batch_size: int | None = None, bf16: bool | None = None) -> BioSyn:
        """How `embed` runs (speed and precision, not what the vectors mean)."""
        self.embed_options = EmbedOptions(self.embed_options.batch_size if batch_size is None else int(batch_size),
                                          self.embed_options.bf16 if bf16 is None else bool(bf16))
        return self

    def weights_changed(self) -> None:
        """To be called after the encoder's weights were changed in place (training, averaging)."""
        self._fingerprint = None

    # -- loading and saving ----------------------------------------------------------------

    @classmethod
    def from_encoder(cls, name_or_path: str | os.PathLike, *, pooling: str | None = None, max_length: int = 25,
                     device: str | None = None, backend: str | None = "torch", **kwargs) -> BioSyn:
        """A fresh model around a base encoder (no sparse encoder yet: it is fit on the vocabulary)."""
        return cls(load_encoder(name_or_path, backend=backend, pooling=pooling, max_length=max_length, device=device), **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, *, trust_pickle: bool = False, device: str | None = None,
                        backend: str | None = "torch", **hub_kwargs) -> BioSyn:
        """A biosyn model folder, a released BioSyn checkpoint, or a hub id of either. `backend`: see
        `encoders.onnx.Backend` (None: ONNX when the folder has a current export, else torch)."""
        folder = _local_or_download(str(name_or_path), hub_kwargs)
        config = json.loads((folder / CONFIG_FILE).read_text()) if (folder / CONFIG_FILE).exists() else {}
        encoder = load_encoder(folder, backend=backend, device=device)
        sparse = None
        if (folder / SPARSE_DIR).is_dir():
            sparse = SparseEncoder.load(folder / SPARSE_DIR)
        elif (folder / "sparse_encoder.pk").exists():
            if trust_pickle:
                sparse = SparseEncoder.from_sklearn_pickle(folder / "sparse_encoder.pk", trusted=True)
            else:
                log.warning("%s: sparse_encoder.pk was not unpickled (it could run code); the sparse encoder "
                            "will be refit from the vocabulary's names, which BioSyn fit it on", folder / "sparse_encoder.pk")
        weight = config.get("sparse_weight")
        if weight is None and (folder / "sparse_weight.pt").exists():
            import torch

            weight = float(torch.load(folder / "sparse_weight.pt", map_location="cpu", weights_only=True).detach().reshape(-1)[0])
        model = cls(encoder, sparse, sparse_weight=1.0 if weight is None else weight,
                    similarity=config.get("similarity", "dot"), scale=config.get("scale", 1.0))
        model._fingerprint = config.get("fingerprint")
        model.base_model = config.get("base_model")
        return model

    def save_pretrained(self, directory: str | os.PathLike, *, extra: dict | None = None) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.encoder is None:
            raise ValueError("a sparse-only model has no encoder to save; save its index instead")
        self.encoder.save_pretrained(directory)
        remove_export(directory)  # made from the weights just replaced
        if self.sparse_encoder is not None:
            self.sparse_encoder.save(directory / SPARSE_DIR)
        self.weights_changed()
        config = {**self.config(), **({"base_model": self.base_model} if self.base_model else {}), **(extra or {})}
        with atomic_write(directory / CONFIG_FILE) as out:
            json.dump(config, out, indent=2)
        return directory

    def config(self) -> dict:
        import torch
        import transformers

        from .._version import __version__

        return {
            "format": "biosyn.model", "version": 1,
            "sparse_weight": self.sparse_weight, "similarity": self.similarity, "scale": self.scale,
            "pooling": getattr(self.encoder, "pooling", None), "max_length": getattr(self.encoder, "max_length", None),
            "fingerprint": self.fingerprint,
            "versions": {"biosyn": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()},
        }

    @property
    def fingerprint(self) -> str | None:
        """Identifies what the dense rows of an index depend on: weights, pooling, length, similarity."""
        if self.encoder is None:
            return None
        if self._fingerprint is None:
            self._fingerprint = self.encoder.fingerprint(self.similarity)
        return self._fingerprint

    # -- embedding and indexing ------------------------------------------------------------

    def embed(self, texts: Sequence[str], *, queries: bool = False, progress: bool = False) -> np.ndarray:
        """Dense vectors as the similarity wants them: raw, or unit length (queries × scale)."""
        vectors = self.encoder.embed(list(texts), progress=progress, batch_size=self.embed_options.batch_size,
                                     bf16=self.embed_options.bf16)
        return self.scorer.vectors(vectors, queries=queries)

    def fit_sparse(self, vocabulary: Vocabulary) -> SparseEncoder:
        """Fits the sparse encoder on the vocabulary's preprocessed names, as BioSyn does."""
        names = sorted({self.preprocessor.name(n) for c in vocabulary for n in c.names} - {""})
        self.sparse_encoder = SparseEncoder().fit(names)
        self.sparse_fit_here = vocabulary_fingerprint(vocabulary)
        return self.sparse_encoder

    def build_index(self, dictionary: Dictionary, vocabulary: Vocabulary, *, dense: bool = True,
                    progress: bool = False, manifest: dict | None = None, dense_dtype: str = "float32") -> NameIndex:
        """Embeds every dictionary name once; the index is kept on the model and returned.
        (`biosyn.scale.index_parts` builds the same index in parts.)"""
        if self.sparse_encoder is None or self.sparse_fit_here not in (None, vocabulary_fingerprint(vocabulary)):
            self.fit_sparse(vocabulary)  # none yet, or one fit here on another vocabulary
        matrix = self.embed(dictionary.names, progress=progress) if dense and self.encoder is not None else None
        self.index = NameIndex.build(dictionary, self.sparse_encoder, matrix, list(vocabulary),
                                     self.index_manifest(vocabulary, matrix is not None, manifest), dense_dtype)
        return self.index

    def _embedded_with(self) -> dict:
        scheme = {"int8_scheme": self.int8_scheme} if self.int8_scheme else {}
        return {"backend": self.backend, "bf16": self.embed_options.bf16, **scheme}

    def index_manifest(self, vocabulary: Vocabulary, dense: bool, manifest: dict | None = None) -> dict:
        """What an index built by this model records about it (beside the index's own fields)."""
        return {"model_fingerprint": self.fingerprint if dense else None,
                # How the rows were computed; not part of what they mean, so in no cache key.
                "embedded_with": self._embedded_with() if dense else None,
                "vocabulary_fingerprint": vocabulary_fingerprint(vocabulary),
                "similarity": self.similarity, **(manifest or {})}

    def use_index(self, index: NameIndex) -> BioSyn:
        """Attaches a saved index, refusing one built with another model."""
        index.check_model(self.fingerprint if index.has_dense else None)
        self.index = index
        if self.sparse_encoder is None:
            self.sparse_encoder = index.sparse_encoder
            self.sparse_fit_here = index.manifest.get("vocabulary_fingerprint") or "index"
        return self

    # -- normalising -----------------------------------------------------------------------

    @property
    def default_mode(self) -> str:
        return "hybrid" if self.encoder is not None and self.index is not None and self.index.has_dense else "sparse"

    def use_reranker(self, reranker) -> BioSyn:
        """Re-score the top candidates of every ranking with a `rerank.CrossEncoderReranker` (None: stop)."""
        self.reranker = reranker
        return self

    def rank(self, texts: Sequence[str], k: int = 5, *, mode: str | None = None, approximate: bool = False,
             rerank: bool = True) -> list[list[Candidate]]:
        """Ranked candidates for already preprocessed texts (one list per text), re-ranked when a reranker is set
        (and `rerank`)."""
        if self.reranker is None or not rerank:
            return self._rank(texts, k, mode=mode, approximate=approximate)
        distinct = list(dict.fromkeys(texts))  # each text's pairs are read once
        ranked = self._rank(distinct, max(k, self.reranker.options.depth), mode=mode, approximate=approximate)
        reranked = dict(zip(distinct, self.reranker.rerank(distinct, ranked, k)))
        return [list(reranked[t]) for t in texts]

    def _rank(self, texts: Sequence[str], k: int, *, mode: str | None, approximate: bool) -> list[list[Candidate]]:
        if self.index is None:
            raise RuntimeError("no index: call build_index(...) or use_index(NameIndex.load(...)) first")
        mode = mode or self.default_mode
        check_mode(mode)
        if mode != "sparse" and self.encoder is None:
            raise ValueError(f"mode {mode!r} needs a dense encoder; this model is sparse only")
        if not texts:
            return []
        # Each distinct text is embedded and searched once; one that preprocessing emptied ("!!!") has no candidates.
        distinct = list(dict.fromkeys(texts))
        if len(distinct) < len(texts) or not all(distinct):
            ranked = dict(zip((t for t in distinct if t), self._rank([t for t in distinct if t], k, mode=mode, approximate=approximate)))
            return [list(ranked[t]) if t else [] for t in texts]
        index = self.index
        dense_q = self.embed(texts, queries=True) if mode != "sparse" else None
        sparse_q = index.sparse_encoder.transform(texts) if mode != "dense" else None
        result = index.search(k, mode=mode, dense_queries=dense_q, sparse_queries=sparse_q,
                              sparse_weight=self.sparse_weight, approximate=approximate)
        out = []
        for row in range(len(texts)):
            cands = []
            for col, i in enumerate(result.indices[row]):
                ids = index.ids[i]
                concepts = self._concepts_of(index.names[i], ids)
                cands.append(Candidate(
                    name=index.names[i], ids=ids, score=float(result.scores[row, col]),
                    dense=None if result.dense is None else float(result.dense[row, col]),
                    sparse=float(result.sparse[row, col]),
                    concepts=concepts, preferred_names=tuple(index.concepts[c].name for c in concepts),
                ))
            out.append(cands)
        return out

    def _concepts_of(self, name: str, ids: Sequence[str]) -> tuple[str, ...]:
        """The concepts a name stands for, the one it answers with first. A name shared by several
        concepts ("aniridia": Aniridia, and a synonym of Aniridia, type 2) answers with the concept
        it is the preferred name of, then with a MeSH descriptor (D…), a MeSH supplementary concept (C…),
        an OMIM number, in that order, as the NCBI corpus prefers them (dev: docs/results.md)."""
        assert self.index is not None
        concepts = {c.id: c for c in map(self.index.concept, ids) if c is not None}
        if len(concepts) < 2:
            return tuple(concepts)
        return tuple(sorted(concepts, key=lambda c: (self.preprocessor.name(concepts[c].name) != name, c.isdigit(), c.startswith("C"))))

    def normalize(self, mentions: Sequence[str], k: int = 5, *, mode: str | None = None,
                  texts: Sequence[str | None] | None = None, approximate: bool = False) -> list[Normalization]:
        """Ranked concepts for raw mentions. `texts` (the document of each mention), when given,
        lets abbreviations be resolved as in evaluation; composite mentions are split."""
        return self.normalize_parts(mentions, self.split(mentions, texts), k, mode=mode, approximate=approximate)

    def split(self, mentions: Sequence[str], texts: Sequence[str | None] | None = None) -> list[tuple[str, ...]]:
        """The preprocessed single-concept parts of each mention (abbreviations of its text resolved; a
        composite that is itself one of the index's names stays whole)."""
        if isinstance(mentions, str):
            raise TypeError("normalize takes a list of mentions; wrap a single mention in a list")
        abbreviations: dict[str, dict] = {}
        parts = []
        for i, mention in enumerate(mentions):
            text = texts[i] if texts else None
            if text and text not in abbreviations:
                abbreviations[text] = self.preprocessor.text_abbreviations(text)
            parts.append(self.preprocessor.parts(mention, abbreviations=abbreviations.get(text) if text else None,
                                                 is_name=self.index.has_name if self.index is not None else None))
        return parts

    def normalize_parts(self, mentions: Sequence[str], parts: Sequence[tuple[str, ...]], k: int = 5, *,
                        mode: str | None = None, approximate: bool = False) -> list[Normalization]:
        """`normalize` for mentions already `split`; candidates that are no match are left out."""
        flat = [p for ps in parts for p in ps]
        ranked = iter(self.rank(flat, k, mode=mode, approximate=approximate))
        return [Normalization(m, ps, [[c for c in next(ranked) if is_match(c)] for _ in ps]) for m, ps in zip(mentions, parts)]


def is_match(candidate: Candidate) -> bool:
    """The one rule for "no match": a candidate whose score is not above NO_MATCH_SCORE has no
    evidence (e.g. no character n-gram shared with the mention, in sparse mode) and is no answer."""
    return candidate.score > NO_MATCH_SCORE


def vocabulary_fingerprint(vocabulary: Vocabulary) -> str:
    digest = hashlib.sha256()
    for c in vocabulary:
        digest.update(json.dumps([c.id, c.name, c.alt_ids, c.synonyms]).encode())
    return digest.hexdigest()[:16]


def load_encoder(name_or_path: str | os.PathLike, *, backend: str | None = "torch", pooling: str | None = None,
                 max_length: int | None = None, device: str | None = None):
    """The dense encoder of a folder or hub id on `backend` (None: ONNX when the folder has a current export
    made for the same pooling and length, else torch)."""
    folder = Path(name_or_path)
    chosen, where = choose_backend(folder if folder.is_dir() else None, backend)
    if chosen is not Backend.TORCH and where is not None:
        encoder = OnnxEncoder(where, int8=chosen is Backend.ONNX_INT8)
        wanted = {"pooling": pooling or encoder.pooling, "max_length": max_length or encoder.max_length}
        if wanted == {"pooling": encoder.pooling, "max_length": encoder.max_length}:
            return encoder
        if backend is not None:
            raise ValueError(f"the ONNX export in {where} was made for pooling {encoder.pooling} and length "
                             f"{encoder.max_length}, not {wanted}; export again, or use --backend torch")
    from ..encoders.dense import DenseEncoder

    return DenseEncoder.from_pretrained(str(name_or_path), pooling=pooling, max_length=max_length, device=device)


def _local_or_download(name_or_path: str, hub_kwargs: dict) -> Path:
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download  # real code path for users with network

    return Path(snapshot_download(name_or_path, **hub_kwargs))
