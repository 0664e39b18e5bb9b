"""A model with an index, and the tagger: what the CLI and the server load.

Model specs are resolved by `biosyn.model.specs.load_model` (re-exported here). An index built here is cached under
`$BIOSYN_CACHE/indexes` (default `~/.cache/biosyn/indexes`), keyed by the model, vocabulary
and dictionary, so only the first run pays for embedding the vocabulary. A damaged cached index
is rebuilt with a warning; a cache that cannot be written only costs the next run a rebuild.

A command that names its dictionary by files (`load_linker`: a vocabulary, a corpus's mentions) finds
the cached index from a cheaper key first: the checksums of those files and the model's fingerprint
(`indexes/keys/<key>.json` points at the index). Then it reads no corpus, runs no Ab3P and fits no
TF-IDF. Neither bf16 nor ONNX is in a key: an index's rows are the model's vectors whichever way they
were computed (to float error), and its manifest records how (`embedded_with`). ONNX int8 rows,
further off, are cached apart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from ..data.atomic import atomic_write
from ..data.locate import cache_root
from ..data.records import Dictionary, Vocabulary
from ..encoders.onnx import Backend
from ..encoders.sparse import SparseEncoder
from ..model.biosyn import BioSyn, vocabulary_fingerprint
from ..model.presets import MIN_LINK_SHARE, SURE_SPAN_CONFIDENCE
from ..model.specs import load_model
from ..search.index import IndexMismatchError, NameIndex, fingerprint_dictionary, sparse_fingerprint

__all__ = ["load_model", "load_linker", "load_tagger", "attach_index", "attach_cached_index", "cache_dir", "default_tagger_spec",
           "with_reranker"]

log = logging.getLogger(__name__)

ENV_TAGGER = "BIOSYN_TAGGER"
# Where `biosyn tagger train` puts its tagger by default.
TAGGER_DEFAULT = Path("runs") / "ncbi-disease" / "tagger"


def default_tagger_spec() -> str:
    if os.environ.get(ENV_TAGGER):
        return os.environ[ENV_TAGGER]
    if (TAGGER_DEFAULT / "config.json").exists():
        return str(TAGGER_DEFAULT)
    raise FileNotFoundError(f"no disease tagger: train one with `biosyn tagger train --output {TAGGER_DEFAULT}` "
                            f"(about 20 min on 2 cores), or name one with --tagger or ${ENV_TAGGER}")


def load_tagger(spec: str | None = None, options: dict | None = None, backend: str | None = None, **hub_kwargs):
    """A tagger folder or hub id; default: $BIOSYN_TAGGER, else the trained runs/ncbi-disease/tagger.
    `options` override its saved `TaggerOptions` (window, propagation, int8). `backend`: None runs its
    ONNX export when it has a current one, else torch."""
    from ..ner.tagger import DiseaseTagger

    spec = spec or default_tagger_spec()
    tagger = DiseaseTagger.from_pretrained(tagger_folder(spec, **hub_kwargs), backend=backend, **(options or {}))
    tagger.spec = spec
    return tagger


def tagger_folder(spec: str | None = None, **hub_kwargs) -> Path:
    """The folder of a tagger folder or hub id (downloaded); default as `load_tagger`'s."""
    from ..model.biosyn import _local_or_download

    spec = spec or default_tagger_spec()
    try:
        return _local_or_download(spec, hub_kwargs)
    except Exception as error:  # the hub's errors (offline, no such repo, a bad id) all mean the same here
        raise FileNotFoundError(f"tagger {spec!r} is neither a folder here nor a hub model that could be "
                                f"downloaded ({type(error).__name__}: {error})") from error


def load_linker(spec: str | None = None, *, index: str | os.PathLike | None = None, vocabulary: str = "medic-2012",
                add_mentions: str | None = None, data_dir: str | os.PathLike | None = None, trust_pickle: bool = False,
                bf16: bool = False, backend: str | None = None) -> BioSyn:
    """A model with its index: a saved `index` folder, else one built (or cached) for `vocabulary`
    (MEDIC 2012 also gets the NCBI disease train and dev mentions when present, as BioSyn's test dictionary).
    `backend`: None runs the encoder on ONNX when the model has a current export, else on torch."""
    model = load_model(spec, trust_pickle=trust_pickle, bf16=bf16, backend=backend)
    if index:
        model.use_index(NameIndex.load(index))
    else:
        attach_cached_index(model, vocabulary, add_mentions, data_dir)
    return model


RERANK_HELP = ("a reranker folder (`biosyn rerank train`): a cross-encoder re-scores the model's top candidates "
               "(slower, see docs/rerank.md)")


def with_reranker(model: BioSyn, spec: str | os.PathLike | None) -> BioSyn:
    """`model`, re-ranked by the reranker folder `spec` when one is given."""
    if spec:
        from ..model.rerank import CrossEncoderReranker

        model.use_reranker(CrossEncoderReranker.from_pretrained(spec))
    return model


def cache_dir() -> Path:
    return cache_root() / "indexes"


def attach_index(model: BioSyn, dictionary: Dictionary, vocabulary: Vocabulary, *, index_dir: str | os.PathLike | None = None,
                 cache: bool = True, progress: bool = True) -> NameIndex:
    """Loads `index_dir` (checking it fits), or a cached index, or builds (and caches) one."""
    dict_fp = fingerprint_dictionary(dictionary.names, dictionary.ids)
    if index_dir is not None:
        index = NameIndex.load(index_dir)
        if index.manifest.get("dictionary_fingerprint") != dict_fp:
            raise IndexMismatchError(f"{index_dir} was built from another dictionary than the one asked for; rebuild it")
        index.check_vocabulary(vocabulary_fingerprint(vocabulary))
        model.use_index(index)
        return index
    # A sparse encoder that is not the model's own is fit on the vocabulary: the vocabulary's fingerprint stands for it.
    own = _own_sparse(model)
    sparse = sparse_fingerprint(own) if own is not None else "fit"
    key = hashlib.sha256(f"{_model_key(model)}|{sparse}|{vocabulary_fingerprint(vocabulary)}|{dict_fp}".encode()).hexdigest()[:20]
    path = cache_dir() / key
    if cache and (path / "manifest.json").exists():
        try:
            index = NameIndex.load(path)
            index.check_model(model.fingerprint if index.has_dense else None, own)
            model.use_index(index)
            return index
        except (IndexMismatchError, OSError, ValueError) as error:
            log.warning("rebuilding cached index %s: %s", path, error)
    index = model.build_index(dictionary, vocabulary, progress=progress)
    if cache:
        try:
            index.save(path)
        except OSError as error:  # read-only or full cache: the index in memory serves all the same
            log.warning("could not cache the index at %s (%s); going on without the cache", path, error.strerror or error)
    return index


def _own_sparse(model: BioSyn) -> SparseEncoder | None:
    """The sparse encoder a model came with (a trained folder's), not one fit here on a vocabulary."""
    return model.sparse_encoder if model.sparse_fit_here is None else None


def _model_key(model: BioSyn) -> str:
    """The model's part of a cache key. int8 rows are cached apart, by how the int8 weights were made: they are
    further from the model's vectors than bf16 or ONNX fp32 ones (docs/results.md), and an index serves every
    later call."""
    if model.backend != Backend.ONNX_INT8:
        return str(model.fingerprint)
    return f"{model.fingerprint}|int8|{model.int8_scheme}"


def dictionary_key(model: BioSyn, vocabulary: str, vocabulary_format: str | None, mentions: str | None,
                   data_dir: str | os.PathLike | None) -> str:
    """The cheap key of a dictionary named by files: their checksums, the model, and biosyn's version
    (the preprocessing that turns the files into names is its code)."""
    from .._version import __version__
    from .vocabulary_setup import input_files

    files = []
    for path in input_files(vocabulary, mentions, data_dir):
        with open(path, "rb") as handle:
            files.append([path.name, hashlib.file_digest(handle, "sha256").hexdigest()])
    own = _own_sparse(model)
    own_sparse = sparse_fingerprint(own) if own is not None else None
    key = [__version__, _model_key(model), own_sparse, vocabulary, vocabulary_format, mentions, files]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:20]


def attach_cached_index(model: BioSyn, vocabulary: str, mentions: str | None, data_dir: str | os.PathLike | None, *,
                        vocabulary_format: str | None = None, default_mentions: bool = True, progress: bool = True) -> NameIndex:
    """`attach_index` for a dictionary named by files, found by `dictionary_key` before any file is parsed."""
    from .vocabulary_setup import dictionary_for, resolve_mentions

    mentions = resolve_mentions(vocabulary, mentions, data_dir, default_mentions=default_mentions)
    alias = cache_dir() / "keys" / f"{dictionary_key(model, vocabulary, vocabulary_format, mentions, data_dir)}.json"
    if alias.is_file():
        try:
            index = NameIndex.load(cache_dir() / json.loads(alias.read_text(encoding="utf-8"))["index"])
            index.check_model(model.fingerprint if index.has_dense else None, _own_sparse(model))
            model.use_index(index)
            return index
        except (IndexMismatchError, OSError, ValueError, KeyError, TypeError) as error:
            log.warning("cached index of %s not used (%s); looking for it by its dictionary", alias, error)
    vocab, dictionary = dictionary_for(vocabulary, vocabulary_format, mentions, data_dir)
    index = attach_index(model, dictionary, vocab, progress=progress)
    if index.path is not None and index.path.parent == cache_dir():
        try:
            alias.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(alias) as out:
                json.dump({"index": index.path.name, "vocabulary": vocabulary, "mentions": mentions}, out)
        except OSError as error:  # as for the index itself: the next run only looks for it the slow way
            log.warning("could not write %s (%s)", alias, error.strerror or error)
    return index


MIN_SCORE_HELP = ("keep a found span only when its link score reaches this (the linker's scale; default: "
                  f"{MIN_LINK_SHARE:.3f} of the highest score a hybrid cosine linker gives, i.e. 1.0 for the packaged MiniLM, "
                  "chosen on NCBI dev; none for other linkers)")
MIN_CONFIDENCE_HELP = ("keep a found span whose link score is under --min-score, without concept IDs, when the tagger's "
                       f"probability of its tags is at least this (default {SURE_SPAN_CONFIDENCE}, chosen on NCBI dev; over 1: never)")


def default_min_score(linker: BioSyn, given: float | None = None, mode: str | None = None) -> float | None:
    """The link score a found span needs: `given`, else MIN_LINK_SHARE of the highest score the linker
    gives in hybrid mode with cosine similarity (the case chosen on dev), else none."""
    if given is not None:
        return given
    top = linker.scorer.max_hybrid(linker.sparse_weight)
    if top is None or (mode or linker.default_mode) != "hybrid":
        return None
    return round(MIN_LINK_SHARE * top, 4)
