"""uvicorn's h11 protocol, with what the app cannot do itself: JSON for the errors uvicorn answers
before the app sees a request, a time limit for receiving a whole request (uvicorn has none:
a client that sends its headers slowly, or nothing, keeps the connection forever), and a cap
on open connections answered in JSON (uvicorn's `limit_concurrency` answers in plain text).
"""

from __future__ import annotations

import asyncio
import functools
import json
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

# The client's side of an exchange while it is still sending a request.
_RECEIVING = (h11.IDLE, h11.SEND_BODY)


def error_bytes(status: int, code: str, message: str) -> bytes:
    """A whole HTTP response that closes the connection, for when there is no request to answer through h11."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n")
    if status == 503:
        head += "retry-after: 1\r\n"
    return head.encode() + b"\r\n" + body


class JsonH11Protocol(H11Protocol):
    def __init__(self, *args, receive_timeout_s: float, max_connections: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.receive_timeout_s, self.max_connections = receive_timeout_s, max_connections
        self._receive_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(error_bytes(503, "too_many_connections",
                                     f"the server has {self.max_connections} connections open; retry shortly"))
            return
        self._start_receive_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state not in _RECEIVING:  # the request has arrived whole
            self._stop_receive_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state in _RECEIVING:
            self._start_receive_timer()  # for the next request on this connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_receive_timer()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._refuse(error_bytes(400, "bad_http", f"{msg} The request line or headers are malformed or too large."))

    def _start_receive_timer(self) -> None:
        self._stop_receive_timer()
        self._receive_timer = self.loop.call_later(self.receive_timeout_s, self._receive_timeout)

    def _stop_receive_timer(self) -> None:
        if self._receive_timer is not None:
            self._receive_timer.cancel()
            self._receive_timer = None

    def _receive_timeout(self) -> None:
        self._receive_timer = None
        if self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE:  # no request under way: say why the connection closes
            self._refuse(error_bytes(408, "request_timeout",
                                     f"no complete request within {self.receive_timeout_s:g} s"))
        else:  # a body still arriving: the app sees a disconnect
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self.transport.write(response)
        self.transport.close()


def protocol(*, receive_timeout_s: float, max_connections: int):
    """The protocol factory for `uvicorn.Config(http=...)`."""
    return functools.partial(JsonH11Protocol, receive_timeout_s=receive_timeout_s, max_connections=max_connections)
