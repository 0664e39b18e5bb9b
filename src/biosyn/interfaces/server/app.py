"""The HTTP API and its web page: `create_app(model)` serves a BioSyn model that has an index.

Model calls never run on the event loop. A micro-batcher gathers the mentions of concurrent
requests for a few milliseconds and runs them through one `model.normalize` call in a worker
thread, so concurrent requests share forward passes (and the sparse matrix products) instead of
queueing for the model one by one. Every error, including FastAPI's own, is answered as
`{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import platform
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ...data.bioc import bioc_collection
from ...data.errors import FormatError
from ...data.ids import normalize_id
from ...data.pubtator import format_pubtator, parse_pubtator
from ...data.records import Document, Mention
from ...search.index import MODES
from ...annotation.annotator import LinkedMention
from ..annotate_files import mention_json
from ..normalize_files import result_json, top_ids

PAGE = Path(__file__).with_name("page.html")


@dataclass(frozen=True)
class Limits:
    max_mentions: int = 256  # per request, over all its documents
    max_mention_chars: int = 300
    max_text_chars: int = 20_000  # a document's text
    max_documents: int = 64
    max_k: int = 50
    max_body_bytes: int = 1_000_000
    max_batch: int = 256  # mentions per model call
    batch_wait_ms: float = 5.0  # how long the first request of a batch waits for company
    max_pending: int = 1024  # queued requests before new ones get 503


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers or None)


# -- request and response bodies ------------------------------------------------------------

Mode = Literal["hybrid", "dense", "sparse"]


class NormalizeRequest(BaseModel):
    mentions: list[str] = Field(description="mentions to normalise, e.g. [\"breast and ovarian cancer\", \"HNPCC\"]")
    text: str | None = Field(None, description="the document the mentions come from; its abbreviations are resolved")
    k: int = Field(5, ge=1, description="candidates per mention part")
    mode: Mode | None = Field(None, description="scoring; default: hybrid when the model has an encoder, else sparse")


class CandidateOut(BaseModel):
    ids: list[str]
    concepts: list[str]
    preferred_names: list[str]
    name: str
    score: float
    dense: float | None
    sparse: float | None


class ResultOut(BaseModel):
    mention: str
    parts: list[str] = Field(description="the preprocessed single-concept parts (a composite mention has several)")
    ids: list[str] = Field(description="the best concept of each part")
    candidates: list[list[CandidateOut]] = Field(description="per part, the ranked candidates")


class NormalizeResponse(BaseModel):
    mode: str
    k: int
    results: list[ResultOut]


class SpanIn(BaseModel):
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    type: str = "Disease"


class DocumentIn(BaseModel):
    id: str
    text: str
    mentions: list[SpanIn] | None = Field(None, description="mention spans; omitted or null: the server's tagger finds them")


class AnnotateRequest(BaseModel):
    documents: list[DocumentIn] | None = Field(None, description="documents with mention spans (character offsets)")
    pubtator: str | None = Field(None, description="PubTator text: title and abstract lines plus annotation lines")
    output: Literal["json", "pubtator", "bioc"] | None = Field(None, description="default: the input's format")
    find: bool = Field(False, description="find mentions with the tagger even in documents that give spans")
    mode: Mode | None = None


class SpanOut(BaseModel):
    start: int
    end: int
    text: str
    type: str
    ids: list[str]
    names: list[str]
    scores: list[float]


class DocumentOut(BaseModel):
    id: str
    text: str
    mentions: list[SpanOut]


class AnnotateResponse(BaseModel):
    documents: list[DocumentOut] | None = None
    pubtator: str | None = None
    bioc: dict | None = Field(None, description="a BioC JSON collection")


class ConceptOut(BaseModel):
    id: str
    name: str
    alt_ids: list[str]
    synonyms: list[str]


# -- batching -------------------------------------------------------------------------------


@dataclass
class _Job:
    mentions: list[str]
    texts: list[str | None]
    k: int
    mode: str | None
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """One worker task; each batch is one `model.normalize` call per scoring mode, in a thread."""

    def __init__(self, model, *, max_batch: int, wait_s: float, max_pending: int):
        self.model, self.max_batch, self.wait_s = model, max_batch, wait_s
        self.queue: asyncio.Queue[_Job] = asyncio.Queue(max_pending)
        self._held: _Job | None = None  # a job that did not fit the last batch, first in the next
        self._worker: asyncio.Task | None = None
        self.batches = self.mentions = 0

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)

    async def normalize(self, mentions: list[str], texts: list[str | None], k: int, mode: str | None) -> list:
        job = _Job(mentions, texts, k, mode, asyncio.get_running_loop().create_future())
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise ApiError(503, "overloaded", "too many requests are waiting for the model; retry shortly") from None
        return await job.future

    async def _run(self) -> None:
        while True:
            jobs = await self._gather()
            for mode in dict.fromkeys(j.mode for j in jobs):
                await self._call([j for j in jobs if j.mode == mode and not j.future.done()])

    async def _gather(self) -> list[_Job]:
        jobs = [self._held or await self.queue.get()]
        self._held = None
        if self.queue.empty():  # alone: wait a moment for concurrent requests to join
            await asyncio.sleep(self.wait_s)
        size = len(jobs[0].mentions)
        while size < self.max_batch and not self.queue.empty():
            job = self.queue.get_nowait()
            if size + len(job.mentions) > self.max_batch:
                self._held = job
                break
            jobs.append(job)
            size += len(job.mentions)
        return jobs

    async def _call(self, jobs: list[_Job]) -> None:
        if not jobs:  # every client of this mode went away
            return
        # One call at the largest k; each job keeps its own top k (a prefix of the larger ranking).
        k = max(j.k for j in jobs)
        mentions = [m for j in jobs for m in j.mentions]
        texts = [t for j in jobs for t in j.texts]
        try:
            results = await asyncio.to_thread(self.model.normalize, mentions, k, mode=jobs[0].mode, texts=texts)
        except Exception as error:  # the requests fail, the worker goes on
            for j in jobs:
                if not j.future.done():
                    j.future.set_exception(error)
            return
        self.batches += 1
        self.mentions += len(mentions)
        start = 0
        for j in jobs:
            mine = results[start:start + len(j.mentions)]
            start += len(j.mentions)
            for r in mine:
                r.candidates = [c[:j.k] for c in r.candidates]
            if not j.future.done():  # a client that disconnected has cancelled its future
                j.future.set_result(mine)


class TaggerRunner:
    """Runs the tagger on its own single worker thread: one call at a time (it is not thread-safe),
    never on the event loop, and still one at a time when a waiting client goes away. Requests
    beyond `max_pending` waiting for it get 503."""

    def __init__(self, tagger, *, max_pending: int):
        self.tagger, self.max_pending = tagger, max_pending
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="biosyn-tagger")
        self.waiting = self.calls = self.documents = 0

    async def tag(self, texts: list[str]) -> list:
        if self.waiting >= self.max_pending:
            raise ApiError(503, "overloaded", "too many requests are waiting for the tagger; retry shortly")
        self.waiting += 1
        try:
            found = await asyncio.get_running_loop().run_in_executor(self.executor, self.tagger.tag, texts)
        finally:
            self.waiting -= 1
        self.calls += 1
        self.documents += len(texts)
        return found

    def stop(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


# -- the request body limit -----------------------------------------------------------------


class BodyLimit:
    """Answers 413 to a body over `limit` bytes, declared or streamed, before anything parses it."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._too_large(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return await self._too_large(scope, receive, send)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope, receive, send):
        response = error_response(413, "body_too_large", f"the request body is over {self.limit} bytes")
        await response(scope, receive, send)


# -- the app --------------------------------------------------------------------------------


def create_app(model, tagger=None, *, limits: Limits = Limits(), vocabulary: str | None = None) -> FastAPI:
    """The API over `model` (a BioSyn with an index); `vocabulary` names its vocabulary in GET /info.
    `tagger` (a DiseaseTagger, or anything with its `tag(texts)`) finds mentions for /annotate."""
    if model.index is None:
        raise ValueError("the model has no index: build or attach one before serving it")
    modes = MODES if model.default_mode == "hybrid" else ("sparse",)
    page = PAGE.read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.batcher = MicroBatcher(model, max_batch=limits.max_batch, wait_s=limits.batch_wait_ms / 1000,
                                         max_pending=limits.max_pending)
        app.state.batcher.start()
        app.state.tagging = TaggerRunner(tagger, max_pending=limits.max_pending) if tagger is not None else None
        yield
        await app.state.batcher.stop()
        if app.state.tagging is not None:
            app.state.tagging.stop()

    app = FastAPI(title="biosyn", version=_version("biosyn"), lifespan=lifespan,
                  description="Biomedical entity normalisation with BioSyn: mentions → ranked concept IDs.")
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    _add_error_handlers(app)

    def check_mode(mode: str | None) -> str:
        mode = mode or model.default_mode
        if mode not in modes:
            raise ApiError(422, "unsupported_mode",
                           f"mode {mode!r} needs a dense model; this server offers {', '.join(modes)}")
        return mode

    def check_k(k: int) -> None:
        if k > limits.max_k:
            raise ApiError(422, "k_too_large", f"k is {k}; at most {limits.max_k}")

    def check_mentions(mentions: list[str]) -> None:
        if not mentions:
            raise ApiError(422, "no_mentions", "give at least one mention")
        if len(mentions) > limits.max_mentions:
            raise ApiError(422, "too_many_mentions", f"{len(mentions)} mentions; at most {limits.max_mentions} per request")
        for i, m in enumerate(mentions):
            if not m.strip():
                raise ApiError(422, "empty_mention", f"mention {i} is empty")
            if len(m) > limits.max_mention_chars:
                raise ApiError(422, "mention_too_long",
                               f"mention {i} has {len(m)} characters; at most {limits.max_mention_chars}")

    def check_text(text: str | None, what: str) -> None:
        if text is not None and len(text) > limits.max_text_chars:
            raise ApiError(422, "text_too_long", f"{what} has {len(text)} characters; at most {limits.max_text_chars}")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index_page():
        # The page is self-contained; the policy keeps it so (no CDN, no other origin).
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                                                      "script-src 'unsafe-inline'; connect-src 'self'"})

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/info")
    async def info(request: Request):
        index = model.index
        batcher = request.app.state.batcher
        manifest = {k: v for k, v in index.manifest.items() if k != "aliases"}
        return {
            "model": model.spec, "modes": list(modes), "default_mode": model.default_mode,
            "similarity": model.similarity, "sparse_weight": model.sparse_weight,
            "index": {"names": len(index), "dense": index.has_dense, "path": str(index.path) if index.path else None,
                      "manifest": manifest},
            "vocabulary": {"name": vocabulary or manifest.get("vocabulary"), "concepts": len(index.concepts)},
            "tagger": {"loaded": tagger is not None, "spec": getattr(tagger, "spec", None)},
            "limits": asdict(limits), "batches": {"calls": batcher.batches, "mentions": batcher.mentions},
            "versions": {"python": platform.python_version(),
                         **{p: _version(p) for p in ("biosyn", "torch", "transformers", "fastapi", "uvicorn")}},
        }

    @app.get("/concepts/{concept_id}", response_model=ConceptOut, responses={404: {"description": "unknown ID"}})
    async def concept(concept_id: str):
        """A concept by its main or alternative ID (`D001943`, `MESH:D001943`, `OMIM:114480`)."""
        c = model.index.concept(normalize_id(concept_id))
        if c is None:
            raise ApiError(404, "unknown_concept", f"no concept with ID {concept_id!r} in this index")
        return ConceptOut(id=c.id, name=c.name, alt_ids=list(c.alt_ids), synonyms=list(c.synonyms))

    @app.post("/normalize", response_model=NormalizeResponse)
    async def normalize(body: NormalizeRequest, request: Request):
        """Ranked candidates for each mention, as `BioSyn.normalize` gives them."""
        check_mentions(body.mentions)
        check_text(body.text, "text")
        check_k(body.k)
        mode = check_mode(body.mode)
        results = await request.app.state.batcher.normalize(body.mentions, [body.text] * len(body.mentions), body.k, mode)
        return {"mode": mode, "k": body.k, "results": [result_json(r) for r in results]}

    @app.post("/annotate", response_model=AnnotateResponse, response_model_exclude_none=True)
    async def annotate(body: AnnotateRequest, request: Request):
        """Fills in the concept IDs of every mention span of PubTator or JSON documents. The tagger
        finds the mentions of documents without spans (PubTator without annotation lines, JSON
        `mentions` omitted or null), or of every document with `find`."""
        if (body.documents is None) == (body.pubtator is None):
            raise ApiError(422, "bad_input", "give exactly one of `documents` and `pubtator`")
        if body.pubtator is not None:
            docs = _pubtator_documents(body.pubtator)
            to_find = [i for i, d in enumerate(docs) if body.find or not d.mentions]
        else:
            docs = _json_documents(body.documents)
            to_find = [i for i, d in enumerate(body.documents) if body.find or d.mentions is None]
        if len(docs) > limits.max_documents:
            raise ApiError(422, "too_many_documents", f"{len(docs)} documents; at most {limits.max_documents} per request")
        for d in docs:
            check_text(d.text, f"document {d.pmid!r}")
        to_find = [i for i in to_find if docs[i].text.strip()]
        if to_find:
            if request.app.state.tagging is None:
                raise ApiError(501, "no_tagger", "this server has no tagger to find mentions: give mention spans, "
                                                 "or start it with `biosyn serve --tagger`")
            found = await request.app.state.tagging.tag([docs[i].text for i in to_find])
            for i, mentions in zip(to_find, found):
                docs[i].mentions = list(mentions)
        mentions = [m.text for d in docs for m in d.mentions]
        if mentions:
            check_mentions(mentions)
        mode = check_mode(body.mode)
        texts = [d.text for d in docs for _ in d.mentions]
        results = iter(await request.app.state.batcher.normalize(mentions, texts, 1, mode) if mentions else [])
        filled = [(d, [(m, next(results)) for m in d.mentions]) for d in docs]
        output = body.output or ("pubtator" if body.pubtator is not None else "json")
        if output == "pubtator":
            return {"pubtator": "\n".join(format_pubtator(_with_ids(d, pairs)) for d, pairs in filled)}
        if output == "bioc":
            return {"bioc": bioc_collection(_with_ids(d, pairs) for d, pairs in filled)}
        return {"documents": [{"id": d.pmid, "text": d.text, "mentions": [_span_json(m, r) for m, r in pairs]}
                              for d, pairs in filled]}

    return app


def _pubtator_documents(text: str) -> list[Document]:
    errors: list[FormatError] = []
    docs = list(parse_pubtator(text.splitlines(), source="pubtator", skipped=errors))
    if errors:
        raise ApiError(422, "bad_pubtator", "; ".join(str(e) for e in errors[:5]))
    for d in docs:
        for m in d.mentions:
            if m.end > len(d.text):
                raise ApiError(422, "bad_span", f"document {d.pmid!r}: span {m.start}-{m.end} is past the end of its "
                                                f"{len(d.text)}-character text")
    return docs


def _json_documents(documents: list[DocumentIn]) -> list[Document]:
    docs = []
    for d in documents:
        mentions = []
        for i, s in enumerate(d.mentions or ()):
            if not s.start < s.end <= len(d.text):
                raise ApiError(422, "bad_span", f"document {d.id!r}, mention {i}: span {s.start}-{s.end} is not inside its "
                                                f"{len(d.text)}-character text")
            mentions.append(Mention(s.start, s.end, d.text[s.start:s.end], s.type))
        # The whole text goes in as the title, so offsets count from its first character.
        docs.append(Document(d.id, d.text, "", mentions))
    return docs


def _with_ids(doc: Document, pairs) -> Document:
    mentions = [Mention(m.start, m.end, m.text, m.type, tuple(top_ids(r).split("|"))) for m, r in pairs]
    return Document(doc.pmid, doc.title, doc.abstract, mentions, doc.relations)


def _span_json(m: Mention, r) -> dict:
    return mention_json(LinkedMention(m.start, m.end, m.text, m.type, r))


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, error: ApiError):
        return error_response(error.status, error.code, error.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, error: RequestValidationError):
        problems = error.errors()
        if any(p["type"] == "json_invalid" for p in problems):
            return error_response(422, "malformed_json", "the request body is not valid JSON")
        # Where and what only: pydantic's `input` would echo the client's (maybe large) body back.
        return error_response(422, "invalid_request", "; ".join(
            f"{'.'.join(str(x) for x in p['loc'])}: {p['msg']}" for p in problems[:10]))

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(error.status_code, codes.get(error.status_code, "http_error"), str(error.detail),
                              **(error.headers or {}))

    @app.exception_handler(Exception)
    async def internal(request, error: Exception):
        return error_response(500, "internal_error", "the server failed on this request; it has been logged")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None

