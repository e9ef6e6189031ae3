"""uvicorn's httptools protocol with the bounds it lacks, served by the run command as
`uvicorn ... --http app.server:BoundedHttpToolsProtocol` (docs/decisions/0007-connection-limits.md).

uvicorn (0.54) arms no timer before a connection's first request nor while a request head or
body arrives, and httptools buffers a header of any size; only idle kept-alive connections are
timed out (`--timeout-keep-alive`). This subclass adds, per connection:

- a head size limit: the request line and headers together may be at most
  `HTTP_MAX_HEADER_BYTES` long, else 431 (the bytes are counted before httptools sees them, so
  no more than that is ever buffered for a head);
- a head deadline: a head must be complete within `HTTP_HEADER_TIMEOUT_SECONDS` of the
  connection opening or, on a kept-alive connection, of its first byte; a connection that sent
  nothing is then closed, one that sent part of a head gets 408;
- a body deadline: the whole body must arrive within `HTTP_BODY_TIMEOUT_SECONDS` of its head,
  else 408 (the application's `receive()` then reports a disconnect);
- uvicorn's own `--limit-concurrency` count (open connections or running requests), answered
  with a problem+json 503 and `Retry-After` instead of uvicorn's plain-text one.

Each refusal is an RFC 9457 problem (`application/problem+json`) with `Connection: close`, and
the connection is closed after it. A request that is complete costs no timer: timers are armed
only when a read leaves a head or a body unfinished (and once per new connection).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.api.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE
from app.settings import get_settings


def problem_body(status: int, slug: str, title: str, detail: str) -> bytes:
    problem = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    return json.dumps(problem).encode()


_OVERLOADED = problem_body(
    503,
    "service-unavailable",
    "Service unavailable",
    "the server is at its concurrency limit; retry shortly",
)


async def overloaded(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """The answer beyond `--limit-concurrency` (uvicorn's own is text/plain)."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                (b"content-length", str(len(_OVERLOADED)).encode()),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _OVERLOADED, "more_body": False})


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        settings = get_settings()
        self.max_header_bytes = settings.http_max_header_bytes
        self.header_timeout = settings.http_header_timeout_seconds
        self.body_timeout = settings.http_body_timeout_seconds
        # uvicorn's limit, checked in on_headers_complete so that the answer is problem+json.
        self.concurrency_limit = self.limit_concurrency
        self.limit_concurrency = None
        self.service_app = self.app

        self._in_head = True  # the next bytes read belong to a request head
        self._head_bytes = 0  # ... and this many of them have arrived
        self._body_pending = False  # a head has arrived, not all of its body
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    # -- connection ------------------------------------------------------------------------------

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timers()
        self._in_head = self._body_pending = False  # the WebSocket protocol takes over
        super().handle_websocket_upgrade()

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if self._head_bytes + len(data) > self.max_header_bytes:
                self._feed_head_part_by_part(data)
                return
            self._head_bytes += len(data)
        super().data_received(data)
        self._arm_deadlines()

    def _feed_head_part_by_part(self, data: bytes) -> None:
        """Feed the parser no more of a head than it may still take; refuse a longer one."""
        while self._in_head and data:
            room = self.max_header_bytes - self._head_bytes
            if room <= 0:
                self._refuse_head(
                    431,
                    "request-header-fields-too-large",
                    "Request header fields too large",
                    f"the request line and headers exceed {self.max_header_bytes} bytes",
                )
                return
            part, data = data[:room], data[room:]
            self._head_bytes += len(part)
            super().data_received(part)
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)
        self._arm_deadlines()

    def _arm_deadlines(self) -> None:
        """After a read: a head or a body left unfinished gets its deadline (once)."""
        if self._in_head and self._head_bytes and self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)
        if self._body_pending and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_too_slow)

    # -- parser callbacks ------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._body_pending = True
        limit = self.concurrency_limit
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")
            self.app = overloaded
        else:
            self.app = self.service_app
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_pending = False
        self._in_head = True
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # -- deadlines -------------------------------------------------------------------------------

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not self._head_bytes:  # nothing was sent: close without an answer
            self.transport.close()
            return
        self._refuse_head(
            408,
            "request-timeout",
            "Request timeout",
            f"the request headers were not received within {self.header_timeout:g} s",
        )

    def _body_too_slow(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or not self._body_pending:
            return
        if self.flow.read_paused:  # the application is not reading: the wait is not the client's
            self._body_timer = self.loop.call_later(self.body_timeout, self._body_too_slow)
            return
        detail = f"the request body was not received within {self.body_timeout:g} s"
        self.logger.warning("%s; answered 408 and closed the connection", detail)
        cycle = self.cycle
        if not cycle.response_started:
            self.transport.write(self._problem(408, "request-timeout", "Request timeout", detail))
        # The application's receive() now reports a disconnect, and its sends are dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()

    def _refuse_head(self, status: int, slug: str, title: str, detail: str) -> None:
        self.logger.warning("%s; answered %d and closed the connection", detail, status)
        responding = self.cycle is not None and not self.cycle.response_complete
        if not responding:  # (a pipelined head while a response is under way: just close)
            self.transport.write(self._problem(status, slug, title, detail))
        self.transport.close()

    def _problem(self, status: int, slug: str, title: str, detail: str) -> bytes:
        body = problem_body(status, slug, title, detail)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.extend(
            [
                b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n\r\n",
            ]
        )
        return b"".join(head) + body
