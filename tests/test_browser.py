"""The web page in a real browser: Playwright drives Debian's Chromium against a live server."""

from pathlib import Path

import pytest

from biosyn.interfaces.server import Limits, create_app
from test_server import ABSTRACT, live_server, tiny_model
from tiny import FakeTagger

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser at {CHROMIUM} (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def server_url():
    tagger = FakeTagger(names=("Lynch syndrome", "HNPCC", "breast cancer", "Hypotrichosis simplex", "WD"))
    with live_server(create_app(tiny_model(), tagger), Limits()) as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def page(server_url):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        context = browser.new_context(base_url=server_url)
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server_url)
        page = context.new_page()
        # The page must not reach out: any request to another origin fails the test.
        outside = []
        page.on("request", lambda r: None if r.url.startswith(server_url) else outside.append(r.url))
        yield page
        browser.close()
    assert not outside, f"the page requested {outside}"


def rendered_ids(page):
    return page.locator("#results td.id").evaluate_all("cells => cells.map(c => c.querySelector('.concept').textContent)")


def test_mentions_one_per_line(page):
    page.goto("/")
    page.locator("#mode option").first.wait_for(state="attached")  # /info has answered
    page.fill("#input", "breast and ovarian cancer\nLynch syndrome\nHypotrichosis simplex")
    page.select_option("#k", "1")
    page.click("#submit")
    page.wait_for_selector("#results:not([hidden]) tbody tr")
    assert rendered_ids(page) == ["D001943", "D010051", "D003123", "601675"]
    links = page.locator("#results td.id a").evaluate_all("as => as.map(a => a.href)")
    assert "https://ctdbase.org/detail.go?type=disease&acc=MESH:D001943" in links
    assert "https://meshb.nlm.nih.gov/record/ui?ui=D001943" in links
    assert "https://ctdbase.org/detail.go?type=disease&acc=OMIM:601675" in links
    assert "https://omim.org/entry/601675" in links

    page.click("#copy")
    page.wait_for_selector("#status:has-text('copied')")
    tsv = page.evaluate("navigator.clipboard.readText()").splitlines()
    assert tsv[0].split("\t") == ["mention", "part", "rank", "id", "preferred_name", "matched_name", "score"]
    assert [row.split("\t")[3] for row in tsv[1:]] == ["D001943", "D010051", "D003123", "601675"]


def test_marked_abstract_resolves_abbreviations(page):
    page.goto("/")
    page.locator("#mode option").first.wait_for(state="attached")
    page.fill("#input", ABSTRACT.replace("with WD", "with [[WD]]"))
    page.select_option("#k", "3")
    page.click("#submit")
    page.wait_for_selector("#results:not([hidden]) tbody tr")
    assert rendered_ids(page)[0] == "D006527"  # WD → Wilson disease, from the abstract
    assert page.locator("#results tbody tr").count() == 3


def test_errors_are_shown(page):
    page.goto("/")
    page.fill("#input", "x" * 400)  # longer than a mention may be
    page.click("#submit")
    page.wait_for_selector("#status.error")
    assert "at most" in page.text_content("#status")


def test_annotate_an_abstract(page):
    page.goto("/")
    page.wait_for_selector("#annotate:not([disabled])")  # /info says there is a tagger
    # An emoji (two UTF-16 units, and a joiner) before the mentions, markup that must stay text, a line break.
    text = "👩‍⚕️ Lynch syndrome (HNPCC) & <b>breast cancer</b>,\nHypotrichosis simplex; WD."
    page.fill("#text", text)
    page.click("#annotate")
    page.wait_for_selector("#annotated:not([hidden]) .mention")
    mentions = page.locator("#annotated .mention").evaluate_all(
        "els => els.map(e => [e.tagName, e.textContent, e.getAttribute('href'), e.title])")
    assert mentions == [
        ["A", "Lynch syndrome", "https://ctdbase.org/detail.go?type=disease&acc=MESH:D003123",
         "D003123 Colorectal Neoplasms, Hereditary Nonpolyposis (score 1.000)"],
        ["A", "HNPCC", "https://ctdbase.org/detail.go?type=disease&acc=MESH:D003123",
         "D003123 Colorectal Neoplasms, Hereditary Nonpolyposis (score 1.000)"],
        ["A", "breast cancer", "https://ctdbase.org/detail.go?type=disease&acc=MESH:D001943", "D001943 Breast Neoplasms (score 1.000)"],
        ["A", "Hypotrichosis simplex", "https://ctdbase.org/detail.go?type=disease&acc=OMIM:601675",
         "601675 Hypotrichosis Simplex (score 1.000)"],
        ["A", "WD", "https://ctdbase.org/detail.go?type=disease&acc=MESH:D006527",
         "D006527 Hepatolenticular Degeneration (score 0.283)"],  # no long form in the text
    ]
    assert page.text_content("#annotated") == text  # every character shown once, as text
    assert page.locator("#annotated b").count() == 0
    rows = page.locator("#mentions tbody tr").evaluate_all("rs => rs.map(r => [...r.cells].map(c => c.textContent))")
    assert rows[0] == ["5–19", "Lynch syndrome", "D003123 ", "Colorectal Neoplasms, Hereditary Nonpolyposis", "1.000"]
    assert [r[2].strip() for r in rows] == ["D003123", "D003123", "D001943", "601675", "D006527"]
    assert "5 mention(s)" in page.text_content("#annotate-status")


def test_annotate_without_a_tagger_says_so(page):
    page.route("**/info", lambda route: route.fulfill(json={"modes": ["sparse"], "default_mode": "sparse",
                                                            "tagger": {"loaded": False, "spec": None}}))
    page.goto("/")
    page.wait_for_selector("#annotate-status.error")
    assert "no tagger" in page.text_content("#annotate-status")
    assert page.is_disabled("#annotate")
    page.unroute("**/info")
