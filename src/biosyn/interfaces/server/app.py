"""The HTTP API and its web page: `create_app(model)` serves a BioSyn model that has an index.

Model calls never run on the event loop. A micro-batcher gathers the mentions of concurrent
requests for a few milliseconds and runs them through one `model.normalize` call in a worker
thread, so concurrent requests share forward passes (and the sparse matrix products) instead of
queueing for the model one by one; each request's preprocessing runs on its own, so one bad
request fails alone. Admission counts queued mentions, and every request has a deadline. The
tagger, which finds mentions for /annotate in raw text, has its own worker thread, admission
(queued documents) and the same deadline.
Every error, including FastAPI's own, is answered as `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import AfterValidator, BaseModel, Field, StrictInt
from starlette.exceptions import HTTPException

from ...annotation.annotator import LinkedMention, confident, linked_document
from ...annotation.sources import mention_json
from ...data.bioc import bioc_collection
from ...data.errors import FormatError, SpanError
from ...data.ids import normalize_id
from ...data.pubtator import format_pubtator, parse_pubtator
from ...data.records import Document, Mention
from ...model.presets import SURE_SPAN_CONFIDENCE
from ...search.scoring import MODES, Mode
from ..normalize_files import result_json
from .limits import Limits

PAGE = Path(__file__).with_name("page.html")
log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **headers: str):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(status: int, code: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers or None)


# -- request and response bodies ------------------------------------------------------------



def _unicode(value: str) -> str:
    """JSON's `\\ud800` escapes can carry lone surrogates, which no UTF-8 output can hold."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"character {error.start} is a lone surrogate (U+{ord(value[error.start]):04X}), "
                             "not Unicode text") from None
    return value


def _document_id(value: str) -> str:
    # PubTator puts the ID at the start of every line, before `|` or a tab: a line break would forge a document.
    if not 0 < len(value) <= 200 or "|" in value or not all(c.isprintable() and not c.isspace() for c in value):
        raise ValueError("a document ID is 1 to 200 printable characters without spaces, line breaks or '|'")
    return value


def _one_line(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable text on one line (no tabs or line breaks)")
    return value


Text = Annotated[str, AfterValidator(_unicode)]


class NormalizeRequest(BaseModel):
    mentions: list[Text] = Field(description="mentions to normalise, e.g. [\"breast and ovarian cancer\", \"HNPCC\"]")
    text: Text | None = Field(None, description="the document the mentions come from; its abbreviations are resolved")
    # Strict: JSON `true` or `2.5` is not a count (a lax int reads `true` as 1).
    k: StrictInt = Field(5, ge=1, description="candidates per mention part")
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
    ids: list[str] = Field(description="the best concept of each part that has a match")
    candidates: list[list[CandidateOut]] = Field(description="per part, the ranked candidates")


class NormalizeResponse(BaseModel):
    mode: str
    k: int
    results: list[ResultOut]


class SpanIn(BaseModel):
    start: StrictInt = Field(ge=0)
    end: StrictInt = Field(ge=0)
    type: Annotated[Text, AfterValidator(_one_line)] = "Disease"


class DocumentIn(BaseModel):
    id: Annotated[Text, AfterValidator(_document_id)]
    text: Text
    mentions: list[SpanIn] | None = Field(None, description="mention spans; omitted or null: the server's tagger finds them")


class AnnotateRequest(BaseModel):
    documents: list[DocumentIn] | None = Field(None, description="documents with mention spans (character offsets)")
    pubtator: Text | None = Field(None, description="PubTator text: title and abstract lines plus annotation lines")
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
    confidence: float | None = None  # the tagger's, for a span it found


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
    """One worker task; each batch is one model call per scoring mode, in a thread.

    Admission counts mentions, not requests: a request is refused (503) when the mentions
    admitted and not yet answered, with its own, would go over `max_queued_mentions`, or would
    take longer than `max_queue_wait_s` at the rate the model has been going (`rate`, mentions
    per second), so the wait of the admitted ones stays bounded on any machine. A request finds
    room whenever nothing is queued. A job whose client has gone or whose deadline has passed
    has a done future and is dropped before the model call.
    """

    def __init__(self, model, *, max_batch: int, wait_s: float, max_queued_mentions: int,
                 max_queue_wait_s: float | None = None, timeout_s: float | None = None,
                 max_parts_per_mention: int | None = None, max_parts: int | None = None):
        self.model, self.max_batch, self.wait_s = model, max_batch, wait_s
        self.max_queued_mentions, self.max_queue_wait_s, self.timeout_s = max_queued_mentions, max_queue_wait_s, timeout_s
        self.max_parts_per_mention, self.max_parts = max_parts_per_mention, max_parts
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.queued = 0  # mentions admitted and not yet answered
        self.rate: float | None = None  # mentions per second in model calls, smoothed
        self._held: _Job | None = None  # a job that did not fit the last batch, first in the next
        self._worker: asyncio.Task | None = None
        self.batches = self.mentions = 0

    def start(self) -> None:
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def normalize(self, mentions: list[str], texts: list[str | None], k: int, mode: str | None,
                        timeout_s: float | None = None) -> list:
        """Results for one request's mentions; `timeout_s` (default: the batcher's) is what is left of its deadline."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        n = len(mentions)
        self.admit(n)
        job = _Job(mentions, texts, k, mode, asyncio.get_running_loop().create_future())
        self.queued += n
        job.future.add_done_callback(lambda _: self._release(n))
        self.queue.put_nowait(job)
        try:
            # On timeout or when the caller is cancelled (its client left), wait_for cancels the future.
            return await asyncio.wait_for(job.future, timeout_s)
        except TimeoutError:
            raise ApiError(503, "deadline_exceeded", f"no answer within {self.timeout_s:g} s; the server is busy, "
                                                     "retry shortly", **{"Retry-After": "1"}) from None

    async def warm_up(self, mentions: list[str]) -> None:
        """A model call outside the limits and the counts, to measure the first rate."""
        started = time.perf_counter()
        await asyncio.to_thread(self.model.normalize, mentions, 1)
        self._measured(len(mentions), started)

    def _measured(self, mentions: int, started: float) -> None:
        rate = mentions / max(time.perf_counter() - started, 1e-6)
        self.rate = rate if self.rate is None else 0.7 * self.rate + 0.3 * rate

    def admit(self, n: int) -> None:
        """Raises 503 when a request of `n` mentions finds no room (with n = 1: when none would)."""
        ahead = self.queued + n
        slow = self.rate is not None and self.max_queue_wait_s is not None and ahead / self.rate > self.max_queue_wait_s
        if self.queued and (ahead > self.max_queued_mentions or slow):
            retry = math.ceil(self.queued / self.rate) if self.rate else 1
            raise ApiError(503, "overloaded", f"{self.queued} mentions are waiting for the model; retry shortly",
                           **{"Retry-After": str(max(1, retry))})

    def _release(self, n: int) -> None:
        self.queued -= n

    async def _run(self) -> None:
        while True:
            jobs = await self._gather()
            for mode in dict.fromkeys(j.mode for j in jobs):
                live = [j for j in jobs if j.mode == mode and not j.future.done()]
                if not live:  # every client of this mode went away or ran out of time
                    continue
                started = time.perf_counter()
                outcomes = await asyncio.to_thread(self._compute, live)
                self._measured(sum(len(j.mentions) for j in live), started)
                for job, outcome in zip(live, outcomes):
                    if job.future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        job.future.set_exception(outcome)
                    else:
                        job.future.set_result(outcome)

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

    def _compute(self, jobs: list[_Job]) -> list:
        """Each job's results, or the exception that is its own: preprocessing runs per job, and
        when the shared model call fails each job is retried alone, so one bad request never
        fails its neighbours."""
        outcomes: list = [None] * len(jobs)
        split = []
        for i, job in enumerate(jobs):
            try:
                split.append((i, job, self._split(job)))
            except Exception as error:
                outcomes[i] = error
        if split:
            self._rank_apart(split, outcomes)
        return outcomes

    def _rank_apart(self, group: list, outcomes: list) -> None:
        try:
            for (i, _, _), results in zip(group, self._rank(group)):
                outcomes[i] = results
        except Exception as error:
            if len(group) == 1:
                outcomes[group[0][0]] = error
            else:
                for one in group:
                    self._rank_apart([one], outcomes)

    def _split(self, job: _Job) -> list[tuple[str, ...]]:
        parts = self.model.split(job.mentions, job.texts)
        for i, ps in enumerate(parts):
            if self.max_parts_per_mention is not None and len(ps) > self.max_parts_per_mention:
                raise ApiError(422, "too_many_parts", f"mention {i} splits into {len(ps)} parts; "
                                                      f"at most {self.max_parts_per_mention}")
        total = sum(map(len, parts))
        if self.max_parts is not None and total > self.max_parts:
            raise ApiError(422, "too_many_parts", f"the mentions split into {total} parts; at most {self.max_parts} per request")
        return parts

    def _rank(self, group: list) -> list[list]:
        # One call at the largest k; each job keeps its own top k (a prefix of the larger ranking).
        mentions = [m for _, job, _ in group for m in job.mentions]
        parts = [p for _, _, ps in group for p in ps]
        results = self.model.normalize_parts(mentions, parts, max(job.k for _, job, _ in group), mode=group[0][1].mode)
        self.batches += 1
        self.mentions += len(mentions)
        out, start = [], 0
        for _, job, _ in group:
            mine = results[start:start + len(job.mentions)]
            start += len(job.mentions)
            for r in mine:
                r.candidates = [c[:job.k] for c in r.candidates]
            out.append(mine)
        return out


class TaggerRunner:
    """Runs the tagger on its own single worker thread: one call at a time (it is not thread-safe),
    never on the event loop. Admission counts documents: with some already waiting, a request
    whose documents would go over `max_queued_documents` gets 503. A call whose caller gave up
    (deadline, client gone) before it started is dropped; one already running finishes."""

    def __init__(self, tagger, *, max_queued_documents: int):
        self.tagger, self.max_queued_documents = tagger, max_queued_documents
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="biosyn-tagger")
        self.queued = self.calls = self.documents = 0

    async def tag(self, texts: list[str], timeout_s: float | None = None) -> list:
        n = len(texts)
        if self.queued and self.queued + n > self.max_queued_documents:
            raise ApiError(503, "overloaded", f"{self.queued} documents are waiting for the tagger; retry shortly",
                           **{"Retry-After": "1"})
        self.queued += n
        try:
            # Cancelling the executor's future (wait_for does, on timeout or when the caller is
            # cancelled) takes a call that has not started off the worker's queue.
            found = await asyncio.wait_for(
                asyncio.get_running_loop().run_in_executor(self.executor, self.tagger.tag, texts), timeout_s)
        except TimeoutError:
            raise ApiError(503, "deadline_exceeded", "no answer within the request's deadline; the tagger is busy, "
                                                     "retry shortly", **{"Retry-After": "1"}) from None
        finally:
            self.queued -= n
        self.calls += 1
        self.documents += n
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


class Shed:
    """Refuses work (503) before its body is parsed while the queue has no room for even one
    mention: under overload, parsing and validating the requests that are refused anyway
    would take the CPU from the admitted ones."""

    def __init__(self, app, paths: tuple[str, ...]):
        self.app, self.paths = app, paths

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            try:
                scope["app"].state.batcher.admit(1)
            except ApiError as error:
                return await error_response(error.status, error.code, error.message, **error.headers)(scope, receive, send)
        await self.app(scope, receive, send)


class CatchAll:
    """Answers an unexpected exception with a JSON 500 and keeps it from uvicorn, which would
    close the keep-alive connection (Starlette's handler for `Exception` re-raises)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        started = False

        async def watch(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception("request %s %s failed", scope.get("method"), scope.get("path"))
            if started or scope["type"] != "http":
                raise
            await error_response(500, "internal_error", "the server failed on this request; it has been logged")(
                scope, receive, send)


# -- the app --------------------------------------------------------------------------------


def create_app(model, tagger=None, *, limits: Limits = Limits(), vocabulary: str | None = None,  # noqa: B008 (Limits is frozen)
               min_score: float | None = None, min_confidence: float | None = SURE_SPAN_CONFIDENCE) -> FastAPI:
    """The API over `model` (a BioSyn with an index); `vocabulary` names its vocabulary in GET /info.
    `tagger` (a DiseaseTagger, or anything with its `tag(texts)`) finds mentions for /annotate; a found
    mention whose link score is under `min_score` is dropped, or kept without concepts when the tagger
    is at least `min_confidence` sure of it (`Annotator`'s rule)."""
    if model.index is None:
        raise ValueError("the model has no index: build or attach one before serving it")
    modes = MODES if model.default_mode == "hybrid" else ("sparse",)
    page = PAGE.read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.batcher = MicroBatcher(model, max_batch=limits.max_batch, wait_s=limits.batch_wait_ms / 1000,
                                         max_queued_mentions=limits.max_queued_mentions,
                                         max_queue_wait_s=limits.max_queue_wait_s, timeout_s=limits.request_timeout_s,
                                         max_parts_per_mention=limits.max_parts_per_mention, max_parts=limits.max_parts)
        app.state.batcher.start()
        app.state.tagging = (TaggerRunner(tagger, max_queued_documents=limits.max_queued_documents)
                             if tagger is not None else None)
        # One full call before serving: it warms the model up and gives admission control its first rate.
        await app.state.batcher.warm_up(list(model.index.names[:limits.max_batch]))
        yield
        await app.state.batcher.stop()
        if app.state.tagging is not None:
            app.state.tagging.stop()

    app = FastAPI(title="biosyn", version=_version("biosyn") or "unknown", lifespan=lifespan,
                  description="Biomedical entity normalisation with BioSyn: mentions → ranked concept IDs.")
    app.add_middleware(Shed, paths=("/normalize", "/annotate"))
    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)  # outside Shed: the body is read, the connection kept
    app.add_middleware(CatchAll)  # added last, so outermost
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
        # No paths on disk: a local model, vocabulary or index is named by its last component only.
        manifest = {k: _public(v) if k in ("model", "vocabulary") else v
                    for k, v in index.manifest.items() if k != "aliases"}
        return {
            "model": _public(model.spec), "modes": list(modes), "default_mode": model.default_mode,
            "similarity": model.similarity, "sparse_weight": model.sparse_weight,
            "index": {"names": len(index), "dense": index.has_dense, "manifest": manifest},
            "vocabulary": {"name": _public(vocabulary) or manifest.get("vocabulary"), "concepts": len(index.concepts)},
            "tagger": {"loaded": tagger is not None, "spec": _public(getattr(tagger, "spec", None))},
            "limits": asdict(limits), "batches": {"calls": batcher.batches, "mentions": batcher.mentions},
            "queue": {"mentions": batcher.queued, "rate": batcher.rate},
            "versions": {"python": platform.python_version(),
                         **{p: _version(p) for p in ("biosyn", "torch", "transformers", "fastapi", "uvicorn")}},
        }

    @app.get("/concepts/{concept_id}", response_model=ConceptOut, responses={404: {"description": "unknown ID"}})
    async def concept(concept_id: str):
        """A concept by its main or alternative ID (`D001943`, `MESH:D001943`, `OMIM:114480`)."""
        c = model.index.concept(normalize_id(concept_id))
        if c is None:
            shown = concept_id if len(concept_id) <= 40 else concept_id[:40] + "…"
            raise ApiError(404, "unknown_concept", f"no concept with ID {shown!r} in this index")
        return ConceptOut(id=c.id, name=c.name, alt_ids=list(c.alt_ids), synonyms=list(c.synonyms))

    @app.post("/normalize", response_model=NormalizeResponse)
    async def normalize(body: NormalizeRequest, request: Request):
        """Ranked candidates for each mention, as `BioSyn.normalize` gives them."""
        check_mentions(body.mentions)
        check_text(body.text, "text")
        check_k(body.k)
        mode = check_mode(body.mode)
        results = await _until_disconnected(request, request.app.state.batcher.normalize(
            body.mentions, [body.text] * len(body.mentions), body.k, mode))
        return await _json(lambda: {"mode": mode, "k": body.k, "results": [result_json(r) for r in results]})

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
            assert body.documents is not None  # exactly one of the two, checked above
            docs = _json_documents(body.documents)
            to_find = [i for i, d in enumerate(body.documents) if body.find or d.mentions is None]
        if len(docs) > limits.max_documents:
            raise ApiError(422, "too_many_documents", f"{len(docs)} documents; at most {limits.max_documents} per request")
        for d in docs:
            check_text(d.text, f"document {d.pmid!r}")
        mode = check_mode(body.mode)
        to_find = [i for i in to_find if docs[i].text.strip()]
        if to_find and request.app.state.tagging is None:
            raise ApiError(501, "no_tagger", "this server has no tagger to find mentions: give mention spans, "
                                             "or start it with `biosyn serve --tagger`")
        filled = await _until_disconnected(request, link(request.app.state, docs, to_find, mode))
        output = body.output or ("pubtator" if body.pubtator is not None else "json")
        return await _json(lambda: _annotated(filled, output))

    async def link(state, docs: list[Document], to_find: list[int], mode: str) -> list:
        """Each document with its linked mentions: the tagger's for `to_find`, else its own spans.
        Tagging and linking share one deadline, `request_timeout_s` from here."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.request_timeout_s
        if to_find:
            found = await state.tagging.tag([docs[i].text for i in to_find], timeout_s=limits.request_timeout_s)
            for i, mentions in zip(to_find, found):
                docs[i].mentions = list(mentions)
        mentions = [m.text for d in docs for m in d.mentions]
        if not mentions:
            return [(d, []) for d in docs]
        check_mentions(mentions)
        texts = [d.text for d in docs for _ in d.mentions]
        results = iter(await state.batcher.normalize(mentions, texts, 1, mode, timeout_s=max(0.0, deadline - loop.time())))
        linked = [[LinkedMention.of(m, next(results)) for m in d.mentions] for d in docs]
        tagged = set(to_find)
        return [(d, confident(ms, min_score, min_confidence) if i in tagged else ms) for i, (d, ms) in enumerate(zip(docs, linked))]

    return app


async def _until_disconnected(request: Request, work):
    """Awaits `work`, or cancels it (its queued job is then dropped) when the client disconnects."""
    task = asyncio.ensure_future(work)

    async def disconnected():
        # The body has been read: the next message is the disconnect (or the end of the exchange).
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled():
        raise ApiError(499, "client_closed_request", "the client closed the connection")
    return task.result()


async def _json(payload) -> JSONResponse:
    """Builds and serialises a response in a thread: a large one would hold up the event loop."""
    return await asyncio.to_thread(lambda: JSONResponse(payload()))


def _annotated(filled: list[tuple[Document, list[LinkedMention]]], output: str) -> dict:
    if output == "pubtator":  # format_pubtator writes a JSON text's line breaks and tabs as spaces
        return {"pubtator": "\n".join(format_pubtator(linked_document(d, linked)) for d, linked in filled)}
    if output == "bioc":
        return {"bioc": bioc_collection(linked_document(d, linked) for d, linked in filled)}
    return {"documents": [{"id": d.pmid, "text": d.text, "mentions": [mention_json(m) for m in linked]}
                          for d, linked in filled]}


def _public(name: str | None) -> str | None:
    """A local file or folder by its name alone; anything else (a hub id, a vocabulary name) as it is."""
    return Path(name).name if name and Path(name).exists() else name


def _pubtator_documents(text: str) -> list[Document]:
    """Documents with spans checked as `read_pubtator` checks them; a span error is `bad_span`,
    any other malformed line `bad_pubtator`."""
    errors: list[FormatError] = []
    # Lines as a file read gives them: split at line ends only, not at U+2028 or a form feed as str.splitlines does.
    docs = list(parse_pubtator(io.StringIO(text, newline=None), source="pubtator", skipped=errors, check_text=True))
    if errors:
        code = "bad_span" if all(isinstance(e, SpanError) for e in errors) else "bad_pubtator"
        raise ApiError(422, code, "; ".join(str(e) for e in errors[:5]))
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


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request, error: ApiError):
        return error_response(error.status, error.code, error.message, **error.headers)

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
        if error.status_code == 400 and error.__cause__ is not None:  # FastAPI could not read the body
            return error_response(422, "malformed_json", "the request body is not valid JSON (not UTF-8, or nested "
                                                         "too deeply)")
        codes = {404: "not_found", 405: "method_not_allowed"}
        return error_response(error.status_code, codes.get(error.status_code, "http_error"), str(error.detail),
                              **(error.headers or {}))


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None

