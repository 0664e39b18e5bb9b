"""The HTTP API, through FastAPI's test client, over a sparse-only model on a hand-made vocabulary."""

import asyncio
import json
import time

import pytest
from fastapi.testclient import TestClient

from biosyn.data.records import Concept, Vocabulary
from biosyn.interfaces.server import Limits, create_app
from biosyn.interfaces.server.app import ApiError, MicroBatcher
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
LIMITS = Limits(max_mentions=4, max_mention_chars=40, max_text_chars=300, max_documents=2, max_k=10, max_body_bytes=2000)
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
    ({"documents": [{"id": "a", "text": "short   ", "mentions": [{"start": 5, "end": 8}]}]}, "empty_mention"),
    ({"documents": [{"id": str(i), "text": "t", "mentions": []} for i in range(3)]}, "too_many_documents"),
    ({"documents": [{"id": "a", "text": "t " * 151, "mentions": []}]}, "text_too_long"),
    ({"documents": [{"id": "a", "text": "ab " * 5, "mentions": [{"start": 0, "end": 2}] * 5}]}, "too_many_mentions"),
    ({"pubtator": "1|t|title\n1\tzero\t4\ttitle\tDisease\n"}, "bad_pubtator"),
    ({"pubtator": "not pubtator at all"}, "bad_pubtator"),
    ({"pubtator": "1|t|title\n1\t0\t9\ttitle\tDisease\n"}, "bad_span"),
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
            patch.setattr(model, "normalize", lambda *a, **kw: 1 / 0)
            assert error_code(client.post("/normalize", json={"mentions": ["a"]}), 500) == "internal_error"
        assert client.post("/normalize", json={"mentions": ["breast cancer"]}).json()["results"][0]["ids"] == ["D001943"]


def test_create_app_needs_an_index():
    with pytest.raises(ValueError, match="no index"):
        create_app(BioSyn())


# -- the micro-batcher ----------------------------------------------------------------------


class SlowModel:
    """Counts calls; each takes a while, as a forward pass would."""

    def __init__(self, model, seconds=0.05):
        self.model, self.seconds, self.calls = model, seconds, []

    def normalize(self, mentions, k, *, mode=None, texts=None):
        self.calls.append(list(mentions))
        time.sleep(self.seconds)
        return self.model.normalize(mentions, k, mode=mode, texts=texts)


def test_concurrent_requests_share_model_calls_and_the_loop_stays_free():
    model = tiny_model()
    slow = SlowModel(model)
    requests = [(["breast cancer", "HNPCC"], 1), (["Wilson disease"], 3), (["ovarian cancer"], 2)] * 4

    async def main():
        batcher = MicroBatcher(slow, max_batch=64, wait_s=0.01, max_pending=100)
        batcher.start()
        ticks = 0

        async def ticker():  # runs only while the event loop is free
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        tick = asyncio.create_task(ticker())
        results = await asyncio.gather(*(batcher.normalize(m, [None] * len(m), k, None) for m, k in requests))
        tick.cancel()
        await batcher.stop()
        return results, ticks

    results, ticks = asyncio.run(main())
    assert len(slow.calls) == 1 and len(slow.calls[0]) == 16  # one forward pass for all twelve requests
    assert ticks >= 5  # the loop went on ticking during the 50 ms call
    for (mentions, k), result in zip(requests, results):
        expected = model.normalize(mentions, k)
        assert [r.mention for r in result] == mentions
        assert [[[c.name for c in part] for part in r.candidates] for r in result] == \
               [[[c.name for c in part] for part in r.candidates] for r in expected]


def test_batches_are_capped_and_a_full_queue_answers_503():
    slow = SlowModel(tiny_model(), seconds=0)

    async def main():
        batcher = MicroBatcher(slow, max_batch=3, wait_s=0.01, max_pending=4)
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
