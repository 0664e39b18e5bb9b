"""The server's limits, apart from the app so that the CLI's parser builds without importing FastAPI."""

from __future__ import annotations

from dataclasses import dataclass, field


def _limit(default, help: str):
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Limits:
    """What one request, the queue and one connection may cost; `biosyn serve` has an option for each."""

    max_mentions: int = _limit(256, "mentions per request, over all its documents")
    max_mention_chars: int = _limit(300, "characters per mention")
    max_parts_per_mention: int = _limit(8, "parts a composite mention may split into")
    max_parts: int = _limit(512, "mention parts per request, the unit of work")
    max_text_chars: int = _limit(20_000, "characters per document text")
    max_documents: int = _limit(64, "documents per /annotate request")
    max_k: int = _limit(50, "candidates per part")
    max_body_bytes: int = _limit(1_000_000, "request bodies over this get 413")
    max_batch: int = _limit(256, "mentions per model call")
    batch_wait_ms: float = _limit(5.0, "how long a lone request waits for others to share its model call")
    max_queued_mentions: int = _limit(1024, "mentions admitted and not yet answered; beyond, new requests get 503")
    max_queued_documents: int = _limit(64, "documents waiting for the tagger; beyond, new requests that need it get 503")
    max_queue_wait_s: float = _limit(1.0, "a request is also refused (503) when the mentions ahead of it and its own "
                                          "would take longer than this at the measured rate")
    request_timeout_s: float = _limit(10.0, "seconds from admission to answer; later, 503 deadline_exceeded")
    keep_alive_s: float = _limit(5.0, "an idle keep-alive connection is closed after this many seconds")
    receive_timeout_s: float = _limit(10.0, "seconds a client has to send a whole request, from connecting or "
                                            "from the previous answer; later, 408 and the connection is closed")
    max_connections: int = _limit(1000, "open connections; a connection beyond this gets 503 and is closed")
    max_header_bytes: int = _limit(16_384, "request line and headers; over this, 400")
