"""`biosyn data fetch`: downloads the public data from its official homes into the data folder.

Every file is written atomically and, where its content is fixed (the NCBI disease corpus,
BioSyn's MEDIC 2012 snapshot), checked against a SHA-256. CTD's current export changes with
each release, so its checksum is recorded in `ctd/SOURCE.json`, not checked. Not run by CI
(no network there); the locations are those the corpus and vocabulary authors publish.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.request
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from .atomic import atomic_write

NCBI_BASE = "https://www.ncbi.nlm.nih.gov/CBBresearch/Dogan/DISEASE/"
BIOSYN_RESOURCES = "https://raw.githubusercontent.com/dmis-lab/BioSyn/master/preprocess/resources/"
CTD_DISEASES = "https://ctdbase.org/reports/CTD_diseases.tsv.gz"
# The BioCreative V CDR corpus (v010516) as its organisers publish it: train, dev and test in one archive.
BC5CDR_ZIP = "https://biocreative.bioinformatics.udel.edu/media/store/files/2016/CDR_Data.zip"


@dataclass(frozen=True)
class Download:
    target: str  # relative to the data folder
    url: str
    sha256: str | None  # of the target file; None where the source changes between releases
    member: str | None = None  # file inside a zip archive


DOWNLOADS = {
    "ncbi-disease": [
        Download("ncbi-disease/NCBItrainset_corpus.txt", NCBI_BASE + "NCBItrainset_corpus.zip",
                 "f311381b28a6d0f641f57f4a963bb83619c2bdec5cd9caabb1381f894d5db817", "NCBItrainset_corpus.txt"),
        Download("ncbi-disease/NCBIdevelopset_corpus.txt", NCBI_BASE + "NCBIdevelopset_corpus.zip",
                 "02db559974624ae9cbe6cd95d64d953e6926bb63afb6b25b63e53bd8b41a4b55", "NCBIdevelopset_corpus.txt"),
        Download("ncbi-disease/NCBItestset_corpus.txt", NCBI_BASE + "NCBItestset_corpus.zip",
                 "61c8050bf6979ef7b943ec1158dfc03b651ea3367d4c37356f9de4841e85c9a3", "NCBItestset_corpus.txt"),
        Download("ncbi-disease/ncbi-spell-check.txt", BIOSYN_RESOURCES + "ncbi-spell-check.txt",
                 "6993f5a4a1b6815d5c5c142a7519aa14bef164efd70d3c162e17832c32c9dc17"),
    ],
    "medic-2012": [
        Download("medic/medic_06Jul2012.txt", BIOSYN_RESOURCES + "medic_06Jul2012.txt",
                 "4cee49829be79b7b71492ad275ea9373250446f15bbf485d728bde39dbffa156"),
    ],
    "ctd": [Download("ctd/CTD_diseases.tsv.gz", CTD_DISEASES, None)],
    "bc5cdr": [
        Download("bc5cdr/CDR_TrainingSet.PubTator.txt", BC5CDR_ZIP,
                 "fb00f93b06ca946dac9d909245679493a22ff742c70df2448c4bab2ab1a5140d", "CDR_TrainingSet.PubTator.txt"),
        Download("bc5cdr/CDR_DevelopmentSet.PubTator.txt", BC5CDR_ZIP,
                 "9e18d8e700168887a7919e62f67ac2ce2357e3f409a48ee992906abdd80fe3e5", "CDR_DevelopmentSet.PubTator.txt"),
        # Not checked: no copy was at hand to take its checksum from.
        Download("bc5cdr/CDR_TestSet.PubTator.txt", BC5CDR_ZIP, None, "CDR_TestSet.PubTator.txt"),
    ],
}


class ChecksumError(RuntimeError):
    pass


def _get(url: str, timeout: float = 60.0) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "biosyn-data-fetch"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        buffer = io.BytesIO()
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1]) as bar:
            while chunk := response.read(1 << 16):
                buffer.write(chunk)
                bar.update(len(chunk))
    return buffer.getvalue()


def fetch(names: list[str], root: str | os.PathLike, *, force: bool = False, get=_get) -> list[Path]:
    """Downloads the named data sets (keys of DOWNLOADS) into `root`; returns the files written.

    A file already present with the right checksum is kept unless `force`.
    """
    unknown = [n for n in names if n not in DOWNLOADS]
    if unknown:
        raise ValueError(f"unknown data set(s) {unknown}; known: {', '.join(DOWNLOADS)}")
    root = Path(root)
    written = []
    payloads: dict[str, bytes] = {}  # one download per archive, however many files it holds
    for name in names:
        for item in DOWNLOADS[name]:
            target = root / item.target
            if target.exists() and not force and item.sha256 and _sha256(target.read_bytes()) == item.sha256:
                continue
            if item.url not in payloads:
                payloads[item.url] = get(item.url)
            payload = payloads[item.url]
            if item.member:
                with zipfile.ZipFile(io.BytesIO(payload)) as archive:
                    member = next((m for m in archive.namelist() if m.rsplit("/", 1)[-1] == item.member), None)
                    if member is None:
                        raise ChecksumError(f"{item.url}: archive has no {item.member}")
                    payload = archive.read(member)
            digest = _sha256(payload)
            if item.sha256 and digest != item.sha256:
                raise ChecksumError(f"{item.url}: SHA-256 {digest} differs from the expected {item.sha256}; nothing was written")
            with atomic_write(target, "wb") as out:
                out.write(payload)
            if item.sha256 is None:
                source = {"url": item.url, "sha256": digest, "fetched": datetime.now(UTC).isoformat()}
                with atomic_write(target.parent / "SOURCE.json") as out:
                    json.dump(source, out, indent=2)
            written.append(target)
    return written


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
