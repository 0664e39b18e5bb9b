"""The HTTP API, through FastAPI's test client, over a sparse-only model on a hand-made vocabulary."""

import asyncio
import http.client
import json
import socket
import threading
import time
from contextlib import contextmanager

import pytest
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings, strategies as st

from biosyn.data.records import Concept, Vocabulary
from biosyn.interfaces.normalize_files import normalize_file
from biosyn.interfaces.server import Limits, create_app
from biosyn.interfaces.server.app import ApiError, MicroBatcher
from biosyn.interfaces.server.cli import server_config
from biosyn.model.biosyn import BioSyn
from biosyn.preprocess.pipeline import build_dictionary

CONCEPTS = [
    Concept("D001943", "Breast Neoplasms", (), ("Breast Cancer", "Breast Tumor")),
    Concept("D010051", "Ovarian Neoplasms", (), ("Ovarian Cancer",)),
    Concept("D003123", "Colorectal Neoplasms, Hereditary Nonpolyposis", ("120435",),
            ("HNPCC", "Lynch Syndrome", "Hereditary Nonpolyposis Colorectal Cancer")),
    Concept("D006527", "Hepatolenticular Degeneration", ("277900",), ("Wilson Disease",)),
    Concept("601675", "Hypotrichosis Simplex", (), ()),
]
LIMITS = Limits(max_mentions=4, max_mention_chars=40, max_text_chars=300, max_documents=2, max_k=10, max_body_bytes=2000,
                max_parts_per_mention=4, max_parts=6)
ABSTRACT = "Wilson disease (WD) is a disorder of copper transport. Patients with WD have liver disease."
PUBTATOR = ("1|t|Lynch syndrome and breast cancer\n1|a|HNPCC families.\n"
            "1\t0\t14\tLynch syndrome\tDisease\t-1\n1\t19\t32\tbreast cancer\tDisease\t-1\n1\t33\t38\tHNPCC\tDisease\t-1\n")


def tiny_model() -> BioSyn:
    vocabulary = Vocabulary(CONCEPTS)
    model = BioSyn()
    model.build_index(build_dictionary(vocabulary), vocabulary)
    return model


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(tiny_model(), limits=LIMITS, vocabulary="tiny")) as client:
        yield client


def error_code(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return body["error"]["code"]


# -- the happy paths ------------------------------------------------------------------------


def test_health(client):
    assert client.get("/health").json() == {"status": "ok"}


def test_info(client):
    info = client.get("/info").json()
    assert info["modes"] == ["sparse"] and info["default_mode"] == "sparse"
    assert info["vocabulary"] == {"name": "tiny", "concepts": len(CONCEPTS)}
    assert info["index"]["names"] > len(CONCEPTS) and not info["index"]["dense"]
    assert info["versions"]["biosyn"] and info["versions"]["fastapi"]
    assert info["limits"]["max_mentions"] == 4


def test_page_is_self_contained(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "<script src" not in response.text and "<link" not in response.text  # nothing from a CDN
    assert "default-src 'self'" in response.headers["content-security-policy"]


def test_openapi(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/normalize", "/annotate", "/concepts/{concept_id}", "/health", "/info"} <= set(paths)


def test_normalize(client):
    body = client.post("/normalize", json={"mentions": ["breast cancer", "breast and ovarian cancer", "Lynch syndrome"], "k": 3}).json()
    assert body["mode"] == "sparse" and body["k"] == 3
    single, composite, lynch = body["results"]
    assert single["ids"] == ["D001943"] and single["parts"] == ["breast cancer"]
    assert composite["parts"] == ["breast cancer", "ovarian cancer"] and composite["ids"] == ["D001943", "D010051"]
    assert lynch["ids"] == ["D003123"]
    top = single["candidates"][0][0]
    assert top["concepts"] == ["D001943"] and top["preferred_names"] == ["Breast Neoplasms"] and top["score"] > 0.99
    assert all(len(part) == 3 for r in body["results"] for part in r["candidates"])


def test_normalize_resolves_abbreviations_from_the_text(client):
    without = client.post("/normalize", json={"mentions": ["WD"]}).json()["results"][0]
    with_text = client.post("/normalize", json={"mentions": ["WD"], "text": ABSTRACT}).json()["results"][0]
    assert without["parts"] == ["wd"]
    assert with_text["parts"] == ["wilson disease"] and with_text["ids"] == ["D006527"]


@pytest.mark.parametrize("concept_id, main", [("D001943", "D001943"), ("MESH:D001943", "D001943"),
                                              ("120435", "D003123"), ("OMIM:120435", "D003123"), ("601675", "601675")])
def test_concepts(client, concept_id, main):
    body = client.get(f"/concepts/{concept_id}").json()
    concept = next(c for c in CONCEPTS if c.id == main)
    assert body == {"id": main, "name": concept.name, "alt_ids": list(concept.alt_ids), "synonyms": list(concept.synonyms)}


def test_annotate_json_documents(client):
    text = "Lynch syndrome (HNPCC) and breast cancer."
    body = client.post("/annotate", json={"documents": [
        {"id": "a", "text": text, "mentions": [{"start": 0, "end": 14}, {"start": 27, "end": 40, "type": "SpecificDisease"}]},
        {"id": "b", "text": "No mentions here.", "mentions": []},
    ]}).json()
    a, b = body["documents"]
    assert [m["text"] for m in a["mentions"]] == ["Lynch syndrome", "breast cancer"]
    assert [m["ids"] for m in a["mentions"]] == [["D003123"], ["D001943"]]
    assert a["mentions"][1]["type"] == "SpecificDisease" and a["mentions"][1]["names"] == ["Breast Neoplasms"]
    assert b == {"id": "b", "text": "No mentions here.", "mentions": []}


def test_annotate_pubtator(client):
    body = client.post("/annotate", json={"pubtator": PUBTATOR}).json()
    lines = body["pubtator"].splitlines()
    assert lines[:2] == PUBTATOR.splitlines()[:2]
    assert [line.split("\t")[5] for line in lines[2:]] == ["D003123", "D001943", "D003123"]


def test_annotate_bioc(client):
    bioc = client.post("/annotate", json={"pubtator": PUBTATOR, "output": "bioc"}).json()["bioc"]
    title, abstract = bioc["documents"][0]["passages"]
    assert (title["offset"], abstract["offset"]) == (0, 33)
    assert [a["infons"]["identifier"] for a in title["annotations"]] == ["MESH:D003123", "MESH:D001943"]
    assert abstract["annotations"][0]["locations"] == [{"offset": 33, "length": 5}]


# -- every error path -----------------------------------------------------------------------


@pytest.mark.parametrize("payload, code", [
    ({"mentions": []}, "no_mentions"),
    ({"mentions": ["a", "b", "c", "d", "e"]}, "too_many_mentions"),
    ({"mentions": ["breast cancer", "  "]}, "empty_mention"),
    ({"mentions": ["x" * 41]}, "mention_too_long"),
    ({"mentions": ["WD"], "text": "x" * 301}, "text_too_long"),
    ({"mentions": ["a"], "k": 11}, "k_too_large"),
    ({"mentions": ["a"], "k": 10**30}, "k_too_large"),
    ({"mentions": ["a"], "k": 0}, "invalid_request"),
    ({"mentions": ["a"], "k": True}, "invalid_request"),  # not read as 1
    ({"mentions": ["a"], "k": 2.0}, "invalid_request"),
    ({"mentions": ["a"], "k": "3"}, "invalid_request"),
    ({"mentions": ["a"], "mode": "dense"}, "unsupported_mode"),
    ({"mentions": ["a"], "mode": "fuzzy"}, "invalid_request"),
    ({"mentions": "breast cancer"}, "invalid_request"),
    ({"mentions": [1, None]}, "invalid_request"),
    ({"mentions": [["nested"]]}, "invalid_request"),
    ({}, "invalid_request"),
    ([], "invalid_request"),
    (None, "invalid_request"),
])
def test_normalize_rejects(client, payload, code):
    assert error_code(client.post("/normalize", json=payload), 422) == code


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe", b'{"mentions": ["a"]'])
def test_malformed_json(client, body):
    response = client.post("/normalize", content=body, headers={"Content-Type": "application/json"})
    assert error_code(response, 422) in ("malformed_json", "invalid_request")


def test_body_too_large(client):
    big = {"mentions": ["a" * 30] * 100}
    assert error_code(client.post("/normalize", json=big), 413) == "body_too_large"
    # A body sent in chunks, with no Content-Length to check first, is counted as it arrives.
    chunks = iter([b'{"mentions": ["', b"a" * 1500, b"a" * 1500, b'"]}'])
    assert error_code(client.post("/normalize", content=chunks, headers={"Content-Type": "application/json"}), 413) == "body_too_large"


@pytest.mark.parametrize("payload, code", [
    ({}, "bad_input"),
    ({"pubtator": PUBTATOR, "documents": []}, "bad_input"),
    ({"documents": [{"id": "a", "text": "short", "mentions": [{"start": 2, "end": 9}]}]}, "bad_span"),
    ({"documents": [{"id": "a", "text": "short", "mentions": [{"start": 3, "end": 3}]}]}, "bad_span"),
    ({"documents": [{"id": "a", "text": "short", "mentions": [{"start": -1, "end": 3}]}]}, "invalid_request"),
    ({"documents": [{"id": "a", "text": "short", "mentions": [{"start": False, "end": True}]}]}, "invalid_request"),
    ({"documents": [{"id": "a", "text": "short   ", "mentions": [{"start": 5, "end": 8}]}]}, "empty_mention"),
    ({"documents": [{"id": str(i), "text": "t", "mentions": []} for i in range(3)]}, "too_many_documents"),
    ({"documents": [{"id": "a", "text": "t " * 151, "mentions": []}]}, "text_too_long"),
    ({"documents": [{"id": "a", "text": "ab " * 5, "mentions": [{"start": 0, "end": 2}] * 5}]}, "too_many_mentions"),
    ({"pubtator": "1|t|title\n1\tzero\t4\ttitle\tDisease\n"}, "bad_pubtator"),
    ({"pubtator": "not pubtator at all"}, "bad_pubtator"),
    ({"pubtator": "1|t|title\n1\t0\t9\ttitle\tDisease\n"}, "bad_span"),
    ({"pubtator": "1|t|title\n1\t0\t3\ttitle\tDisease\n"}, "bad_span"),  # the text at 0-3 is 'tit'
    ({"pubtator": "1|t|title\n1\t3\t3\ttitle\tDisease\n"}, "bad_span"),
    ({"pubtator": "1|t|title\n1\t0\t9\ttitle\tDisease\n1\tzero\t4\ttitle\tDisease\n"}, "bad_pubtator"),
    ({"pubtator": PUBTATOR, "output": "xml"}, "invalid_request"),
    ({"pubtator": PUBTATOR, "mode": "hybrid"}, "unsupported_mode"),
])
def test_annotate_rejects(client, payload, code):
    assert error_code(client.post("/annotate", json=payload), 422) == code


@pytest.mark.parametrize("concept_id", ["D999999", "MESH:", "..%5C..%5Cwin.ini", "x" * 5000])
def test_unknown_concept(client, concept_id):
    assert error_code(client.get(f"/concepts/{concept_id}"), 404) == "unknown_concept"


def test_unknown_route_and_method(client):
    assert error_code(client.get("/../../etc/passwd"), 404) == "not_found"
    assert error_code(client.get("/concepts/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"), 404) == "not_found"
    response = client.get("/normalize")
    assert error_code(response, 405) == "method_not_allowed" and "POST" in response.headers["allow"]


def test_model_failure_is_a_json_500_and_the_server_goes_on(monkeypatch):
    model = tiny_model()
    with TestClient(create_app(model), raise_server_exceptions=False) as client:
        with monkeypatch.context() as patch:
            patch.setattr(model, "rank", lambda *a, **kw: 1 / 0)
            assert error_code(client.post("/normalize", json={"mentions": ["a"]}), 500) == "internal_error"
        assert client.post("/normalize", json={"mentions": ["breast cancer"]}).json()["results"][0]["ids"] == ["D001943"]


def test_create_app_needs_an_index():
    with pytest.raises(ValueError, match="no index"):
        create_app(BioSyn())


# -- the micro-batcher ----------------------------------------------------------------------


class SlowModel:
    """Counts model calls; each takes a while, as a forward pass would."""

    def __init__(self, model, seconds=0.05):
        self.model, self.seconds, self.calls = model, seconds, []

    def split(self, mentions, texts=None):
        return self.model.split(mentions, texts)

    def normalize_parts(self, mentions, parts, k, *, mode=None):
        self.calls.append(list(mentions))
        time.sleep(self.seconds)
        return self.model.normalize_parts(mentions, parts, k, mode=mode)


class GatedModel:
    """A model whose calls block until the test lets them go, so batching is decided by the queue,
    never by timing: `entered` is set when a call starts, `release` ends it."""

    def __init__(self, model):
        self.model, self.calls = model, []
        self.entered, self.release = threading.Event(), threading.Event()

    def split(self, mentions, texts=None):
        return self.model.split(mentions, texts)

    def normalize_parts(self, mentions, parts, k, *, mode=None):
        self.calls.append(list(mentions))
        self.entered.set()
        assert self.release.wait(10), "the test never released the model call"
        return self.model.normalize_parts(mentions, parts, k, mode=mode)


def test_concurrent_requests_share_model_calls_and_the_loop_stays_free():
    model = tiny_model()
    gated = GatedModel(model)
    requests = [(["breast cancer", "HNPCC"], 1), (["Wilson disease"], 3), (["ovarian cancer"], 2)] * 4

    async def main():
        # A long wait_s: the batch must not depend on requests arriving within it.
        batcher = MicroBatcher(gated, max_batch=64, wait_s=60, max_queued_mentions=100)
        pending = [asyncio.create_task(batcher.normalize(m, [None] * len(m), k, None)) for m, k in requests]
        while batcher.queue.qsize() < len(requests):  # every request queued before the worker starts
            await asyncio.sleep(0)
        batcher.start()
        # While the model call is blocked in its thread, the event loop still runs this coroutine.
        while not gated.entered.is_set():
            await asyncio.sleep(0)
        loop_ran_during_call = not any(t.done() for t in pending)
        gated.release.set()
        results = await asyncio.gather(*pending)
        await batcher.stop()
        return results, loop_ran_during_call

    results, loop_ran_during_call = asyncio.run(main())
    assert len(gated.calls) == 1 and len(gated.calls[0]) == 16  # one forward pass for all twelve requests
    assert loop_ran_during_call
    for (mentions, k), result in zip(requests, results):
        expected = model.normalize(mentions, k)
        assert [r.mention for r in result] == mentions
        assert [[[c.name for c in part] for part in r.candidates] for r in result] == \
               [[[c.name for c in part] for part in r.candidates] for r in expected]


def test_batches_are_capped_and_a_full_queue_answers_503():
    slow = SlowModel(tiny_model(), seconds=0)

    async def main():
        batcher = MicroBatcher(slow, max_batch=3, wait_s=0.01, max_queued_mentions=8)
        batcher.start()
        jobs = [batcher.normalize(["breast cancer"] * 2, [None, None], 1, None) for _ in range(4)]
        results = await asyncio.gather(*jobs, batcher.normalize(["a"], [None], 1, None), return_exceptions=True)
        await batcher.stop()
        return results

    *served, refused = asyncio.run(main())
    assert all(len(r) == 2 for r in served)
    assert [len(c) for c in slow.calls] == [2, 2, 2, 2]  # two requests of 2 never share a batch of 3
    assert isinstance(refused, ApiError) and refused.status == 503


def test_json_errors_never_echo_the_input(client):
    secret = "s3cr3t-" * 5
    response = client.post("/normalize", json={"mentions": [{"secret": secret}]})
    assert secret not in response.text and json.loads(response.text)["error"]["code"] == "invalid_request"


# -- /annotate on raw text (the tagger finds the mentions) ----------------------------------


@pytest.fixture(scope="module")
def tagging_client():
    from tiny import FakeTagger

    with TestClient(create_app(tiny_model(), FakeTagger(), limits=LIMITS)) as client:
        yield client


def test_annotate_finds_mentions_in_documents_without_spans(tagging_client):
    text = "Lynch syndrome (HNPCC) and breast cancer."
    body = tagging_client.post("/annotate", json={"documents": [
        {"id": "a", "text": text}, {"id": "b", "text": "Wilson disease", "mentions": None}]}).json()
    a, b = body["documents"]
    assert [(m["start"], m["end"], m["text"], m["ids"], m["names"]) for m in a["mentions"]] == [
        (0, 14, "Lynch syndrome", ["D003123"], ["Colorectal Neoplasms, Hereditary Nonpolyposis"]),
        (16, 21, "HNPCC", ["D003123"], ["Colorectal Neoplasms, Hereditary Nonpolyposis"]),
        (27, 40, "breast cancer", ["D001943"], ["Breast Neoplasms"])]
    assert [(m["text"], m["ids"], m["type"]) for m in b["mentions"]] == [("Wilson disease", ["D006527"], "Disease")]
    empty = {"documents": [{"id": "c", "text": "breast cancer", "mentions": []}]}  # [] means none, not "find them"
    assert tagging_client.post("/annotate", json=empty).json()["documents"][0]["mentions"] == []


def test_annotate_finds_mentions_in_pubtator_without_annotations(tagging_client):
    pubtator = "9|t|Lynch syndrome\n9|a|Colon and breast cancer in WD.\n"
    body = tagging_client.post("/annotate", json={"pubtator": pubtator}).json()
    assert body["pubtator"].splitlines() == ["9|t|Lynch syndrome", "9|a|Colon and breast cancer in WD.",
                                             "9\t0\t14\tLynch syndrome\tDisease\tD003123",
                                             "9\t25\t38\tbreast cancer\tDisease\tD001943",
                                             "9\t42\t44\tWD\tDisease\tD006527"]
    # Given annotations are linked as they are, unless `find` asks the tagger.
    given = tagging_client.post("/annotate", json={"pubtator": PUBTATOR, "output": "json"}).json()["documents"][0]
    assert [m["text"] for m in given["mentions"]] == ["Lynch syndrome", "breast cancer", "HNPCC"]
    found = tagging_client.post("/annotate", json={"pubtator": "1|t|Lynch syndrome\n1|a|HNPCC.\n1\t0\t5\tLynch\tDisease\t-1\n",
                                                   "find": True, "output": "json"}).json()["documents"][0]
    assert [m["text"] for m in found["mentions"]] == ["Lynch syndrome", "HNPCC"]


def test_annotate_without_spans_keeps_the_limits(tagging_client, client):
    assert tagging_client.get("/info").json()["tagger"] == {"loaded": True, "spec": None}
    assert client.get("/info").json()["tagger"] == {"loaded": False, "spec": None}
    many = {"documents": [{"id": "a", "text": "WD, WD, WD, WD and WD"}]}  # 5 found; at most 4 per request
    assert error_code(tagging_client.post("/annotate", json=many), 422) == "too_many_mentions"
    assert error_code(tagging_client.post("/annotate", json={"documents": [{"id": "a", "text": "WD " * 101}]}), 422) == "text_too_long"
    assert error_code(client.post("/annotate", json={"documents": [{"id": "a", "text": "WD"}]}), 501) == "no_tagger"
    assert error_code(client.post("/annotate", json={"pubtator": "1|t|WD\n1|a|\n"}), 501) == "no_tagger"
    # Blank texts need no tagger: they have no mentions.
    assert client.post("/annotate", json={"documents": [{"id": "a", "text": "  "}]}).json()["documents"][0]["mentions"] == []


def test_the_tagger_runs_off_the_event_loop_one_call_at_a_time():
    import threading

    from tiny import FakeTagger

    class SlowTagger(FakeTagger):
        active = most = 0
        threads: set = set()
        guard = threading.Lock()

        def tag(self, texts):
            with self.guard:
                self.active += 1
                self.most = max(self.most, self.active)
            self.threads.add(threading.current_thread().name)
            time.sleep(0.05)
            with self.guard:
                self.active -= 1
            return super().tag(texts)

    tagger = SlowTagger()
    with TestClient(create_app(tiny_model(), tagger)) as client:
        def post(i):
            return client.post("/annotate", json={"documents": [{"id": str(i), "text": "breast cancer"}]}).json()

        threads = [threading.Thread(target=post, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        health = client.get("/health")  # answered while the tagger is busy
        for t in threads:
            t.join()
    assert health.json() == {"status": "ok"}
    assert len(tagger.calls) == 4 and tagger.most == 1
    assert {name.split("_")[0] for name in tagger.threads} == {"biosyn-tagger"}


class SlowTagger:
    def __init__(self, seconds: float):
        from tiny import FakeTagger

        self.seconds, self.fake, self.calls = seconds, FakeTagger(), []

    def tag(self, texts):
        self.calls.append(list(texts))
        time.sleep(self.seconds)
        return self.fake.tag(texts)


def test_tagging_counts_documents_has_a_deadline_and_drops_abandoned_calls():
    from biosyn.interfaces.server.app import TaggerRunner

    async def main():
        runner = TaggerRunner(SlowTagger(0.3), max_queued_documents=3)
        first = asyncio.ensure_future(runner.tag(["breast cancer", "WD"], timeout_s=5))
        await asyncio.sleep(0)  # admitted: 2 documents wait
        with pytest.raises(ApiError) as refused:  # 2 + 2 > 3
            await runner.tag(["HNPCC", "WD"])
        with pytest.raises(ApiError) as late:  # behind the first call, and never started
            await asyncio.ensure_future(runner.tag(["HNPCC"], timeout_s=0.05))
        found = await first
        runner.stop()
        return runner, refused.value, late.value, found

    runner, refused, late, found = asyncio.run(main())
    assert (refused.status, refused.code, late.status, late.code) == (503, "overloaded", 503, "deadline_exceeded")
    assert [[m.text for m in ms] for ms in found] == [["breast cancer"], ["WD"]]
    assert runner.tagger.calls == [["breast cancer", "WD"]] and runner.queued == 0


def test_a_slow_tagger_answers_503_within_the_request_deadline():
    tagger = SlowTagger(1.0)
    with TestClient(create_app(tiny_model(), tagger, limits=Limits(request_timeout_s=0.2))) as client:
        started = time.monotonic()
        response = client.post("/annotate", json={"documents": [{"id": "a", "text": "breast cancer"}]})
        assert error_code(response, 503) == "deadline_exceeded" and response.headers["retry-after"] == "1"
        assert time.monotonic() - started < 0.9


# -- hardening (issue 11): each test names the defect it guards against -----------------------


def post_raw(client, path, text: str):
    """`text` is JSON as a client may send it, \\ud800 escapes included."""
    return client.post(path, content=text.encode(), headers={"Content-Type": "application/json"})


@contextmanager
def live_server(app, limits=LIMITS):
    """`app` under uvicorn, on a loopback port, with the settings `biosyn serve` uses; yields the port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(server_config(app, limits, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def request(conn: http.client.HTTPConnection, method: str, path: str, body=None) -> tuple[int, dict]:
    conn.request(method, path, body=None if body is None else json.dumps(body),
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def raw_exchange(port: int, data: bytes, wait: float = 5.0) -> tuple[bytes, float]:
    """Sends `data` on a fresh connection and reads until the server closes it: (all it sent, seconds taken)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        started = time.monotonic()
        if data:
            s.sendall(data)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
        return received, time.monotonic() - started


def json_error(raw: bytes) -> tuple[int, str, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers["content-type"], json.loads(body)["error"]


def gather_jobs(batcher_args: dict, model, jobs) -> list:
    """Runs `jobs` ((mentions, texts, k, mode) each) through one MicroBatcher at once; results or exceptions."""
    async def main():
        batcher = MicroBatcher(model, **batcher_args)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.normalize(*job) for job in jobs), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main())


def test_one_bad_request_fails_alone(monkeypatch):  # defect 1
    model = tiny_model()
    find = model.preprocessor.abbreviations_in
    monkeypatch.setattr(model.preprocessor, "abbreviations_in", lambda text: 1 / 0 if "poison" in text else find(text))
    rank = model.rank
    monkeypatch.setattr(model, "rank", lambda texts, *a, **kw: 1 / 0 if "boom" in texts else rank(texts, *a, **kw))
    good = (["breast cancer"], [None], 1, None)
    jobs = [good, (["HNPCC"], ["poison text"], 1, None), good, (["boom"], [None], 1, None), good]
    results = gather_jobs({"max_batch": 64, "wait_s": 0.01, "max_queued_mentions": 100}, model, jobs)
    assert [type(r).__name__ for r in results] == ["list", "ZeroDivisionError", "list", "ZeroDivisionError", "list"]
    assert all(r[0].top[0].concepts == ("D001943",) for r in results[::2])


def test_a_500_keeps_the_connection_open(monkeypatch):  # defect 5
    model = tiny_model()
    with live_server(create_app(model, limits=LIMITS)) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        with monkeypatch.context() as patch:
            patch.setattr(model, "rank", lambda *a, **kw: 1 / 0)
            status, body = request(conn, "POST", "/normalize", {"mentions": ["a"]})
        assert (status, body["error"]["code"]) == (500, "internal_error")
        sock = conn.sock
        status, body = request(conn, "POST", "/normalize", {"mentions": ["breast cancer"]})
        assert status == 200 and body["results"][0]["ids"] == ["D001943"]
        assert conn.sock is sock  # the same connection served both
        conn.close()


@pytest.mark.parametrize("path, text", [
    ("/normalize", '{"mentions": ["a"], "text": "Wilson disease \\ud800 (WD)"}'),
    ("/normalize", '{"mentions": ["\\udc00breast cancer"]}'),
    ("/annotate", '{"documents": [{"id": "a", "text": "\\ud800abc", "mentions": [{"start": 1, "end": 3}]}]}'),
    ("/annotate", '{"pubtator": "1|t|x\\ud800y\\n"}'),
])
def test_lone_surrogates_are_a_422(client, path, text):  # defect 6
    response = post_raw(client, path, text)
    assert error_code(response, 422) == "invalid_request"
    assert "lone surrogate" in response.json()["error"]["message"]


def test_parts_per_mention_and_per_request_are_bounded(client):  # defect 3
    many = "aa/ab/ac/ad/ae"  # five parts; LIMITS allows 4 per mention and 6 per request
    response = client.post("/normalize", json={"mentions": [many]})
    assert error_code(response, 422) == "too_many_parts"
    assert response.json()["error"]["message"] == "mention 0 splits into 5 parts; at most 4"
    response = client.post("/normalize", json={"mentions": ["aa/ab/ac", "ad/ae/af", "ag"]})
    assert response.json()["error"]["message"] == "the mentions split into 7 parts; at most 6 per request"
    assert client.post("/normalize", json={"mentions": ["aa/ab/ac", "ad/ae/af"]}).status_code == 200


def test_responses_are_built_off_the_event_loop(client, monkeypatch):  # defect 3
    import biosyn.interfaces.server.app as app_module

    loops = []

    def recording(result):
        try:
            loops.append(asyncio.get_running_loop())
        except RuntimeError:  # no loop in this thread: a worker thread
            loops.append(None)
        return app_module.result_json.__wrapped__(result)

    recording.__wrapped__ = app_module.result_json
    monkeypatch.setattr(app_module, "result_json", recording)
    assert client.post("/normalize", json={"mentions": ["breast cancer", "HNPCC"]}).status_code == 200
    assert loops == [None, None]


def test_a_request_past_its_deadline_gets_503_and_is_dropped():  # defect 7
    slow = SlowModel(tiny_model(), seconds=0.3)

    async def main():
        batcher = MicroBatcher(slow, max_batch=1, wait_s=0, max_queued_mentions=10, timeout_s=0.1)
        batcher.start()
        late = await asyncio.gather(batcher.normalize(["breast cancer"], [None], 1, None),
                                    batcher.normalize(["ovarian cancer"], [None], 1, None), return_exceptions=True)
        batcher.timeout_s = None
        # Answered after the worker has dealt with both late jobs, in queue order.
        after = await batcher.normalize(["Wilson disease"], [None], 1, None)
        await batcher.stop()
        return late, after, batcher.queued

    late, after, queued = asyncio.run(main())
    assert all(isinstance(e, ApiError) and (e.status, e.code) == (503, "deadline_exceeded") for e in late)
    assert after[0].top[0].concepts == ("D006527",)
    # The first job was in the model when its time ran out; the second never reached it.
    assert slow.calls == [["breast cancer"], ["Wilson disease"]] and queued == 0


def test_a_request_whose_client_left_is_dropped(monkeypatch):  # defect 7
    model = tiny_model()
    rank, gate, calls = model.rank, threading.Event(), []

    def gated(texts, *a, **kw):
        calls.append(list(texts))
        if list(texts) == ["breast cancer"]:
            gate.wait(10)
        return rank(texts, *a, **kw)

    monkeypatch.setattr(model, "rank", gated)

    def queued(port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        return request(conn, "GET", "/info")[1]["queue"]["mentions"]

    def wait_for(condition):
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.01)

    with live_server(create_app(model, limits=LIMITS)) as port:
        first: list = []
        thread = threading.Thread(target=lambda: first.append(request(
            http.client.HTTPConnection("127.0.0.1", port, timeout=10), "POST", "/normalize", {"mentions": ["breast cancer"]})))
        thread.start()
        wait_for(lambda: len(calls) == 2)  # after the start-up call, the first request holds the model
        body = json.dumps({"mentions": ["ovarian cancer"]}).encode()
        leaver = socket.create_connection(("127.0.0.1", port))
        leaver.sendall(b"POST /normalize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: queued(port) == 2)
        leaver.close()
        wait_for(lambda: queued(port) == 1)  # the server saw it go
        gate.set()
        thread.join(10)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        assert request(conn, "POST", "/normalize", {"mentions": ["Wilson disease"]})[0] == 200
    assert first[0][0] == 200
    assert calls[1:] == [["breast cancer"], ["wilson disease"]]  # "ovarian cancer" never reached the model


def test_no_match_is_said_everywhere(client, tmp_path):  # defect 8
    model = tiny_model()
    assert model.rank(["乳腺癌"], 1)[0][0].score == 0  # the ranking still has a name at score 0 ...
    assert model.normalize(["乳腺癌", "breast cancer"], k=3)[0].candidates == [[]]  # ... which is no answer
    body = client.post("/normalize", json={"mentions": ["乳腺癌"]}).json()["results"][0]
    assert (body["ids"], body["candidates"]) == ([], [[]])
    text = "乳腺癌 and breast cancer"
    doc = client.post("/annotate", json={"documents": [
        {"id": "d", "text": text, "mentions": [{"start": 0, "end": 3}, {"start": 8, "end": 21}]}]}).json()["documents"][0]
    assert [(m["ids"], m["names"], m["scores"]) for m in doc["mentions"]] == [([], [], []), (["D001943"], ["Breast Neoplasms"], [1.0])]
    pubtator = client.post("/annotate", json={"pubtator": f"1|t|{text}\n1|a|\n1\t0\t3\t乳腺癌\tDisease\t\n"}).json()["pubtator"]
    assert pubtator.splitlines()[2] == "1\t0\t3\t乳腺癌\tDisease\t-1"
    (tmp_path / "in.tsv").write_text("mention\n乳腺癌\nbreast cancer\n", encoding="utf-8")
    normalize_file(model, str(tmp_path / "in.tsv"), str(tmp_path / "out.tsv"), k=1)
    assert (tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()[1:] == \
           ["乳腺癌\t\t-1\t\t", "breast cancer\t\tD001943\tBreast Neoplasms\t1.0000"]


@pytest.mark.parametrize("document", [
    {"id": "1\n2|t|forged", "text": "t", "mentions": []},
    {"id": "1|t", "text": "t", "mentions": []},
    {"id": "1\t0", "text": "t", "mentions": []},
    {"id": "1\u2028", "text": "t", "mentions": []},
    {"id": "", "text": "t", "mentions": []},
    {"id": "a", "text": "abc", "mentions": [{"start": 0, "end": 1, "type": "Disease\n2|t|forged"}]},
])
def test_document_ids_and_types_cannot_forge_pubtator(client, document):  # defect 10
    response = client.post("/annotate", json={"documents": [document], "output": "pubtator"})
    assert error_code(response, 422) == "invalid_request"


def test_line_breaks_in_a_json_text_stay_inside_its_pubtator_document(client):  # defect 10
    text = "Lynch syndrome\n2|t|forged\tx"
    body = client.post("/annotate", json={"documents": [{"id": "1", "text": text, "mentions": [{"start": 0, "end": 14}]}],
                                          "output": "pubtator"}).json()
    assert body["pubtator"] == "1|t|Lynch syndrome 2|t|forged x\n1|a|\n1\t0\t14\tLynch syndrome\tDisease\tD003123\n"


def test_pubtator_with_unicode_line_separators_is_read(client):  # defect 17
    pubtator = PUBTATOR.replace("syndrome and", "syndrome\u2028and").replace("and breast", "and\x0cbreast")
    body = client.post("/annotate", json={"pubtator": pubtator}).json()
    lines = body["pubtator"].split("\n")
    assert lines[0] == "1|t|Lynch syndrome and breast cancer"  # written as spaces: PubTator has one line per title
    assert [line.split("\t")[5] for line in lines[2:5]] == ["D003123", "D001943", "D003123"]


def test_undecodable_json_is_malformed_json(client):  # defect 18
    response = client.post("/normalize", content=b'{"mentions": ["\xff\xfe"]}', headers={"Content-Type": "application/json"})
    assert error_code(response, 422) == "malformed_json"


def test_an_unknown_concept_is_not_echoed_back(client):  # defect 18
    response = client.get("/concepts/" + "x" * 5_000)
    assert error_code(response, 404) == "unknown_concept"
    assert len(response.text) < 200


def test_protocol_errors_are_json():  # defect 18
    with live_server(create_app(tiny_model(), limits=LIMITS)) as port:
        # h11 bounds a head still arriving (max_header_bytes): this one never ends.
        for data in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000):
            status, content_type, error = json_error(raw_exchange(port, data)[0])
            assert (status, content_type, error["code"]) == (400, "application/json", "bad_http")


def test_idle_and_slow_connections_are_closed_and_connections_capped():  # defect 20
    limits = Limits(receive_timeout_s=0.3, keep_alive_s=0.2, max_connections=3)
    with live_server(create_app(tiny_model(), limits=limits), limits) as port:
        for data in (b"", b"POST /normalize HTTP/1.1\r\nHost: x\r\n"):  # nothing, or a head that never ends
            raw, seconds = raw_exchange(port, data)
            assert json_error(raw)[::2] == (408, {"code": "request_timeout", "message": "no complete request within 0.3 s"})
            assert 0.25 < seconds < 3
        # A body that stops coming: closed, no answer.
        raw, seconds = raw_exchange(port, b"POST /normalize HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        assert raw == b"" and 0.25 < seconds < 3
        # Idle after an answer: closed after keep_alive_s.
        raw, seconds = raw_exchange(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b'{"status":"ok"}') and seconds < 3
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        try:
            status, _, error = json_error(raw_exchange(port, b"")[0])
            assert (status, error["code"]) == (503, "too_many_connections")
        finally:
            for s in held:
                s.close()


def test_info_shows_no_paths(tmp_path):  # defect 21
    model = tiny_model()
    model.index.save(tmp_path / "secret-index")
    (tmp_path / "my-vocabulary.tsv").write_text("")
    from biosyn.search.index import NameIndex

    model.use_index(NameIndex.load(tmp_path / "secret-index"))
    with TestClient(create_app(model, vocabulary=str(tmp_path / "my-vocabulary.tsv"))) as client:
        response = client.get("/info")
    assert str(tmp_path) not in response.text and "secret-index" not in response.text
    assert response.json()["vocabulary"]["name"] == "my-vocabulary.tsv"


def test_admission_counts_mentions():  # defect 22
    slow = SlowModel(tiny_model(), seconds=0)
    jobs = [(["breast cancer"] * 3, [None] * 3, 1, None), (["HNPCC"] * 2, [None] * 2, 1, None), (["HNPCC"], [None], 1, None)]
    three, two, one = gather_jobs({"max_batch": 8, "wait_s": 0.01, "max_queued_mentions": 4}, slow, jobs)
    assert len(three) == 3 and len(one) == 1  # 3 + 1 mentions fit in 4
    assert isinstance(two, ApiError) and (two.status, two.code, two.headers) == (503, "overloaded", {"Retry-After": "1"})
    # A request larger than the whole queue is still served when it is alone.
    (alone,) = gather_jobs({"max_batch": 8, "wait_s": 0.01, "max_queued_mentions": 4}, slow, [(["HNPCC"] * 6, [None] * 6, 1, None)])
    assert len(alone) == 6


# -- property-based: any request body gives an answer or a JSON error, never a 500 -------------

# st.text() never yields lone surrogates, which JSON's \\ud800 escapes can carry; nor often PubTator's separators.
JSON_TEXT = st.lists(st.characters() | st.sampled_from(["\ud800", "\udfff", "\n", "\t", "|", "\u2028"]),
                     max_size=30).map("".join)
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | JSON_TEXT,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_TEXT, inner, max_size=4),
                           max_leaves=10)
SPANS = st.fixed_dictionaries({"start": st.integers(-2, 40), "end": st.integers(-2, 40)}, optional={"type": JSON_TEXT})
DOCUMENTS = st.fixed_dictionaries({"id": JSON_TEXT, "text": JSON_TEXT, "mentions": st.lists(SPANS, max_size=3)})
PROPERTY = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check_answer(response) -> dict:
    body = response.json()
    if response.status_code != 200:
        assert response.status_code in (413, 422) and set(body) == {"error"}, response.text
        assert set(body["error"]) == {"code", "message"}
    return body


@PROPERTY
@given(payload=st.fixed_dictionaries({"mentions": st.lists(JSON_TEXT, max_size=5)},
                                     optional={"text": JSON_TEXT | st.none(), "k": st.integers(-2, 60) | JSON_VALUES,
                                               "mode": st.sampled_from(["sparse", "dense", "x"]) | JSON_VALUES})
       | JSON_VALUES)
def test_normalize_answers_any_body(client, payload):
    sent = json.dumps(payload)
    body = check_answer(post_raw(client, "/normalize", sent))
    if "results" in body:  # as the server read them: an escaped surrogate pair is one character
        assert [r["mention"] for r in body["results"]] == json.loads(sent)["mentions"]


@PROPERTY
@given(payload=st.fixed_dictionaries({}, optional={"documents": st.lists(DOCUMENTS, max_size=3),
                                                   "pubtator": JSON_TEXT | st.builds("\n".join, st.lists(JSON_TEXT, max_size=4)),
                                                   "output": st.sampled_from(["json", "pubtator", "bioc", "x"])})
       | JSON_VALUES)
def test_annotate_answers_any_body(client, payload):
    sent = json.dumps(payload)
    body = check_answer(post_raw(client, "/annotate", sent))
    if "documents" in body and "documents" in payload:  # JSON documents in, the same documents out
        assert [d["id"] for d in body["documents"]] == [d["id"] for d in json.loads(sent)["documents"]]


def test_admission_follows_the_measured_rate():  # defect 22
    async def main():
        batcher = MicroBatcher(SlowModel(tiny_model(), seconds=0.2), max_batch=16, wait_s=0, max_queued_mentions=100,
                               max_queue_wait_s=1.0)
        batcher.start()
        await batcher.normalize(["breast cancer"] * 2, [None] * 2, 1, None)  # 2 mentions in a little over 0.2 s
        rate = batcher.rate
        first = asyncio.ensure_future(batcher.normalize(["HNPCC"] * 4, [None] * 4, 1, None))
        await asyncio.sleep(0)
        assert batcher.queued == 4
        with pytest.raises(ApiError) as refused:  # 4 + 8 mentions at under 10 per second: over 1 s
            await batcher.normalize(["HNPCC"] * 8, [None] * 8, 1, None)
        small = await batcher.normalize(["HNPCC"], [None], 1, None)  # 4 + 1: about 0.5 s
        await first
        await batcher.stop()
        return rate, refused.value, small

    rate, refused, small = asyncio.run(main())
    assert 5 < rate < 10 and len(small) == 1
    assert (refused.status, refused.code, refused.headers) == (503, "overloaded", {"Retry-After": "1"})


def test_a_full_queue_sheds_before_parsing(client):  # defect 22
    batcher = client.app.state.batcher
    batcher.queued += LIMITS.max_queued_mentions  # as if that many mentions were waiting
    try:
        response = client.post("/normalize", content=b"{not even json", headers={"Content-Type": "application/json"})
        assert error_code(response, 503) == "overloaded" and int(response.headers["retry-after"]) >= 1
        assert client.get("/health").status_code == 200
    finally:
        batcher.queued -= LIMITS.max_queued_mentions
    assert client.post("/normalize", json={"mentions": ["HNPCC"]}).status_code == 200


def test_annotate_drops_weakly_linked_found_mentions_with_min_score():
    from tiny import FakeTagger

    text = "Lynch syndrome (HNPCC) raises colorectal cancer risk."
    with TestClient(create_app(tiny_model(), FakeTagger(), limits=LIMITS, min_score=0.9)) as client:
        found = client.post("/annotate", json={"documents": [{"id": "a", "text": text}]}).json()["documents"][0]
        given = client.post("/annotate", json={"documents": [
            {"id": "b", "text": text, "mentions": [{"start": 30, "end": 47}]}]}).json()["documents"][0]
    assert [m["text"] for m in found["mentions"]] == ["Lynch syndrome", "HNPCC"]  # colorectal cancer links at 0.77
    assert [(m["text"], m["ids"]) for m in given["mentions"]] == [("colorectal cancer", ["D003123"])]  # given: kept
    sure = FakeTagger(confidence={"colorectal cancer": 0.99})
    with TestClient(create_app(tiny_model(), sure, limits=LIMITS, min_score=0.9)) as client:
        found = client.post("/annotate", json={"documents": [{"id": "a", "text": text}]}).json()["documents"][0]
    assert [(m["text"], m["ids"]) for m in found["mentions"]] == [
        ("Lynch syndrome", ["D003123"]), ("HNPCC", ["D003123"]), ("colorectal cancer", [])]  # sure: kept, unlinked
    assert "confidence" not in found["mentions"][0] and found["mentions"][2]["confidence"] == 0.99
