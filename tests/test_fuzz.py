"""Property-based tests: every reader, on any bytes, gives a result or a FormatError that names
its file and line, never another exception; so does the preprocessing pipeline on any text.

Inputs are built from the formats' own pieces (separators, IDs, offsets, JSON punctuation, BOMs,
Unicode line breaks, stray bytes), so that most examples get past the first line.
"""

import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from biosyn.data.biosyn_files import read_concept_file, read_dictionary
from biosyn.data.ctd import read_ctd
from biosyn.data.custom import read_jsonl_vocabulary, read_tsv_vocabulary
from biosyn.data.errors import FormatError
from biosyn.data.medic import read_medic
from biosyn.data.pubmed import read_pubmed
from biosyn.data.pubtator import parse_pubtator, read_pubtator
from biosyn.data.sources import read_file
from biosyn.data.vocabularies import FORMATS, load_vocabulary
from biosyn.interfaces.normalize_files import FORMATS as INPUT_FORMATS, _read_records, detect_format
from biosyn.preprocess.abbreviations import expand_abbreviations, find_abbreviations
from biosyn.preprocess.pipeline import Preprocessor, build_dictionary
from biosyn.preprocess.text import load_spelling_fixes

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PIECES = ["|", "||", "\t", "\n", "\r\n", "\r", "#", "0", "7", "12", "-1", "99999999999999999999", "|t|", "|a|", "1|t|", "1|a|",
          "1\t", "{", "}", "[", "]", '"', ":", ",", "NaN", "Infinity", "\ufeff", "OMIM:", "MESH:", "D0001", "C12",
          "id\t", "DiseaseID", " ", "\u2028", "\x0c", "\x00", "é", "\U0001F600", "CompositeMention", "Disease",
          '{"id": "A", "name": "a"}', '{"mention": "m", "text": "t"}', '"synonyms": [', "WD", "(WD)", "Wilson disease"]

text_pieces = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=40).map("".join)
raw_bytes = st.lists(st.one_of(text_pieces.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=6)),
                     max_size=6).map(b"".join)


_FOLDER = tempfile.TemporaryDirectory(prefix="biosyn-fuzz-")  # removed at exit; each example overwrites its file


def _write(data: bytes, name: str) -> Path:
    path = Path(_FOLDER.name) / name
    path.write_bytes(data)
    return path


def _check(error: FormatError, path: Path, allow_no_line: bool = False) -> None:
    assert error.path == str(path), error
    assert allow_no_line or (error.line is not None and error.line >= 1), error


def _strict_and_lenient(reader, path: Path, **kwargs):
    try:
        reader(path, **kwargs)
    except FormatError as error:
        _check(error, path)
    skipped: list[FormatError] = []
    try:
        reader(path, skipped=skipped, **kwargs)
    except FormatError as error:  # only a damaged gzip stream stops a lenient read
        _check(error, path)
        assert error.field == "gzip"
    for error in skipped:
        _check(error, path)


READERS = {"pubtator": read_pubtator, "medic": read_medic, "ctd": read_ctd, "tsv": read_tsv_vocabulary,
           "jsonl": read_jsonl_vocabulary}


@pytest.mark.parametrize("name", READERS)
@FUZZ
@given(data=raw_bytes)
def test_readers_take_any_bytes(name, data):
    _strict_and_lenient(READERS[name], _write(data, f"input.{name}"))


@FUZZ
@given(data=raw_bytes, cut=st.integers(min_value=0, max_value=200))
def test_ctd_reads_any_gzip_stream(data, cut):
    packed = gzip.compress(data)
    _strict_and_lenient(read_ctd, _write(packed[: max(cut, 2)] if cut < len(packed) else packed, "CTD_diseases.tsv.gz"))


XML_PIECES = ['<?xml version="1.0"?>', "<PubmedArticleSet>", "</PubmedArticleSet>", "<PubmedArticle>", "</PubmedArticle>",
              "<PubmedBookArticle>", "<BookDocument>", "<MedlineCitation>", "</MedlineCitation>", "<PMID>", "</PMID>", "12",
              "<Article>", "</Article>", "<ArticleTitle>", "</ArticleTitle>", "<Abstract>", "</Abstract>",
              '<AbstractText Label="METHODS">', "<AbstractText>", "</AbstractText>", "<DeleteCitation>", "</DeleteCitation>",
              "<i>", "</i>", "&amp;", "&bogus;", "<!DOCTYPE PubmedArticleSet>", "\n", "\ufeff", "\x00", "é"]
xml_bytes = st.lists(st.one_of(st.sampled_from(XML_PIECES).map(str.encode), st.binary(max_size=4)), max_size=40).map(b"".join)


@FUZZ
@given(data=xml_bytes, packed=st.booleans())
def test_pubmed_xml_takes_any_bytes(data, packed):
    path = _write(gzip.compress(data) if packed else data, "pubmed.xml.gz" if packed else "pubmed.xml")
    skipped: list[FormatError] = []
    try:
        read_pubmed(path, skipped)
    except FormatError as error:  # not well-formed XML names its line
        _check(error, path, allow_no_line=error.field == "gzip")
    for error in skipped:  # a bad article names its position, not a line
        _check(error, path, allow_no_line=True)
    assert all(s.doc is not None or s.error for s in read_file(path))  # every document, or why it is bad


@pytest.mark.parametrize("reader", [read_dictionary, read_concept_file, load_spelling_fixes])
@FUZZ
@given(data=raw_bytes)
def test_strict_readers_take_any_bytes(reader, data):
    path = _write(data, "input.txt")
    try:
        reader(path)
    except FormatError as error:
        _check(error, path)


@FUZZ
@given(data=raw_bytes, fmt=st.sampled_from((None, *FORMATS)), name=st.sampled_from(("v.txt", "v.tsv", "v.jsonl", "v.gz")))
def test_load_vocabulary_takes_any_bytes(data, fmt, name):
    path = _write(data, name)
    try:
        load_vocabulary(path, format=fmt, skipped=[])
    except FormatError as error:
        # Only "cannot tell the format" of a file without a non-blank line has no line to name.
        _check(error, path, allow_no_line=error.field == "format")


@FUZZ
@given(data=raw_bytes, name=st.sampled_from(("m.txt", "m.tsv", "m.jsonl")), fmt=st.sampled_from((None, *INPUT_FORMATS)))
def test_mention_files_take_any_bytes(data, name, fmt):
    path = _write(data, name)
    skipped: list[FormatError] = []
    try:
        fmt = fmt or detect_format(str(path))
        if fmt == "pubtator":
            read_pubtator(path, skipped=skipped)
        else:
            records = _read_records(str(path), fmt, skipped)
            assert all(isinstance(mention, str) and mention.strip() for mention, _, _ in records)
    except FormatError as error:  # only a damaged gzip stream stops a lenient read
        _check(error, path)
        assert error.field == "gzip"
    for error in skipped:
        _check(error, path)


# Structured PubTator: documents with annotation lines whose offsets may or may not fit.
words = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30)
annotation = st.tuples(st.integers(-2, 60), st.integers(-2, 60), words, st.sampled_from(["Disease", "CompositeMention", ""]),
                       st.sampled_from(["D1", "OMIM:1|D2", "-1", "", " D3+D4"]))


@st.composite
def pubtator_documents(draw):
    lines = []
    for pmid in draw(st.lists(st.sampled_from(["1", "2", "x"]), min_size=1, max_size=3)):
        title, abstract = draw(words), draw(words)
        text = f"{title} {abstract}" if abstract else title
        lines += [f"{pmid}|t|{title}", f"{pmid}|a|{abstract}"]
        for start, end, mention, mtype, ids in draw(st.lists(annotation, max_size=4)):
            if draw(st.booleans()) and 0 <= start < end <= len(text):
                mention = text[start:end]  # a span that fits, half of the time
            lines.append("\t".join([pmid, str(start), str(end), mention, mtype, ids]))
        lines.append("")
    return lines


@FUZZ
@given(lines=pubtator_documents())
def test_pubtator_documents_and_the_pipeline(lines):
    skipped: list[FormatError] = []
    docs = list(parse_pubtator(lines, skipped=skipped, check_text=True))
    for error in skipped:
        assert error.path == "<input>" and error.line is not None
    for doc in docs:
        for m in doc.mentions:
            assert 0 <= m.start < m.end <= len(doc.text) and doc.text[m.start:m.end].strip() == m.text
    queries = Preprocessor().queries(docs)
    assert len(queries) == sum(len(d.mentions) for d in _first_of_each(docs))
    assert all(q.parts and all(isinstance(p, str) for p in q.parts) for q in queries)


def _first_of_each(docs):
    seen = set()
    for d in docs:
        if d.pmid not in seen:
            seen.add(d.pmid)
            yield d


any_text = st.text(alphabet=st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=200)  # lone surrogates too


@FUZZ
@given(text=any_text, mention=any_text)
def test_abbreviations_and_parts_take_any_text(text, mention):
    abbreviations = find_abbreviations(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in abbreviations.items())
    expand_abbreviations(mention, abbreviations)
    parts = Preprocessor().parts(mention, abbreviations=abbreviations)
    assert isinstance(parts, tuple) and len(parts) >= 1


def test_abbreviations_survive_a_lone_surrogate():
    assert find_abbreviations("Wilson disease (WD) \ud800 is rare.") == {"WD": "Wilson disease"}


@FUZZ
@given(data=raw_bytes)
def test_dictionary_from_any_vocabulary(data):
    path = _write(b"\n" + data, "v.tsv")  # not a gzip stream
    vocabulary = read_tsv_vocabulary(path, skipped=[])
    dictionary = build_dictionary(vocabulary)
    assert all(name for name in dictionary.names)
