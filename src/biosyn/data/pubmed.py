"""PubMed baseline and update files (`pubmed*.xml.gz`): NLM's `PubmedArticleSet` XML, read as a stream.

Each `PubmedArticle` (and `PubmedBookArticle`) is one document: its PMID, `ArticleTitle` as the title and
the `AbstractText` sections as the abstract, joined by a space, each prefixed with its `Label` ("METHODS: …")
when it has one. Inline markup (`<i>`, `<sup>`, …) keeps its text. Offsets count the characters of
`Document.text` (title, a space, abstract), as PubTator's do.

An article without a PMID or without an `ArticleTitle` is a bad record: a `FormatError` naming the file,
the article's position and its PMID when known, and the reading goes on. `DeleteCitation` (update files)
lists PMIDs to withdraw; they are no documents. `iter_pubmed(path, deleted=[])` collects them; `biosyn
annotate` and `biosyn batch` pass them over (withdrawing earlier output is left to the user). XML that cannot be parsed at all
ends the file there: a `FormatError` with the line and column, after every article before it was given.
Elements are cleared once read, so a 30,000-article baseline file is read in bounded memory.
"""

from __future__ import annotations

import gzip
import os
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import FormatError
from .lines import is_gzipped
from .records import Document

ARTICLES = ("PubmedArticle", "PubmedBookArticle")


@dataclass(frozen=True)
class PubmedRecord:
    """One article: its document, or the reason it is bad (`document` is None then)."""

    position: int  # 1 for the file's first article
    pmid: str | None
    document: Document | None
    error: FormatError | None = None


def iter_pubmed(path: str | os.PathLike, deleted: list[str] | None = None) -> Iterator[PubmedRecord]:
    """Every article of a PubMed XML file (gzipped or not), in order; `DeleteCitation` PMIDs go to `deleted`."""
    handle = gzip.open(path, "rb") if is_gzipped(path) else open(path, "rb")
    position = 0
    with handle:
        try:
            for _, element in ET.iterparse(handle, events=("end",)):
                if element.tag in ARTICLES:
                    position += 1
                    yield _record(element, path, position)
                    element.clear()
                elif element.tag == "DeleteCitation":
                    if deleted is not None:
                        deleted.extend(_text(p) for p in element.iter("PMID"))
                    element.clear()
        except ET.ParseError as error:
            raise FormatError(path, error.position[0], "xml", f"{error.msg} (after {position} articles)") from None
        except (EOFError, OSError, zlib.error) as error:  # a truncated or damaged gzip stream
            raise FormatError(path, None, "gzip", f"damaged compressed data after {position} articles ({error})") from None


def read_pubmed(path: str | os.PathLike, skipped: list[FormatError] | None = None) -> list[Document]:
    """The good articles' documents; a bad one raises, unless `skipped` is a list to append its error to."""
    docs = []
    for record in iter_pubmed(path):
        if record.error is not None:
            if skipped is None:
                raise record.error
            skipped.append(record.error)
        else:
            assert record.document is not None
            docs.append(record.document)
    return docs


def _record(article: ET.Element, path: str | os.PathLike, position: int) -> PubmedRecord:
    root = article.find("MedlineCitation") if article.tag == "PubmedArticle" else article.find("BookDocument")
    pmid_element = None if root is None else root.find("PMID")
    pmid = _text(pmid_element).strip() if pmid_element is not None else ""
    where = f"{article.tag} {position}" + (f" (PMID {pmid})" if pmid else "")
    if not pmid:
        return PubmedRecord(position, None, None, FormatError(path, None, where, "no PMID"))
    body = root.find("Article") if article.tag == "PubmedArticle" else root  # type: ignore[union-attr]
    title = None if body is None else body.find("ArticleTitle")
    if title is None and body is not None:
        title = body.find("Book/BookTitle")
    if title is None:
        return PubmedRecord(position, pmid, None, FormatError(path, None, where, "no ArticleTitle"))
    sections = [] if body is None else body.findall("Abstract/AbstractText")
    parts = [(s.get("Label"), _text(s)) for s in sections]
    abstract = " ".join(f"{label}: {text}" if label else text for label, text in parts if text.strip())
    return PubmedRecord(position, pmid, Document(pmid, _text(title), abstract))


def _text(element: ET.Element) -> str:
    return "".join(element.itertext())
