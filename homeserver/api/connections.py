"""HTTP connections held to deadlines, and requests the HTTP parser refuses logged quietly.

aiohttp (3.14 here) bounds header sizes (`max_line_size`, `max_field_size`, `max_headers`: a URL over
8 KiB is refused with 400) and closes a connection that waits between requests for longer than
`keepalive_timeout`. It has no deadline for a request's headers once they have begun, none for a body
that stops arriving, and no cap on open connections: half-sent requests were held for minutes. So:

- headers: a request's head must be complete within `header_timeout_s` of its first byte;
- body: a request whose body sends nothing for `body_timeout_s` is closed. The deadline counts from
  the last bytes received, so a slow upload that keeps moving is never cut, and a long-poll `/sync`
  (no body) is never touched; time the server itself spends not reading (back-pressure) is not counted;
- idle: `keepalive_timeout` (set from `idle_timeout_s`) closes keep-alive connections between
  requests, and a connection that never sends a byte is closed after the same time;
- cap: when more than `max_idle_connections` connections sit between requests (idle or half-sent),
  the ones quiet the longest are closed first. Connections in a request are never counted or cut.

The send path pays one extra Python call per received chunk (`data_received`); the deadlines are
checked by one watcher task per server, a few times per shortest deadline (at most once a second),
not by a timer per request.

Requests the parser refuses (bad method, URL over 8 KiB, bad header) are unauthenticated and cheap to
send: each is logged at DEBUG without a traceback, and at most one WARNING a minute gives the count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from homeserver.config import HttpLimits

log = logging.getLogger("homeserver.http")

REJECTION_LOG_INTERVAL_S = 60.0


class RejectionLog:
    """Counts requests the HTTP parser refused; one WARNING per interval at most."""

    def __init__(self, interval_s: float = REJECTION_LOG_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.interval_s = interval_s
        self.clock = clock
        self.count = 0  # since the last warning
        self.total = 0
        self._next_warning = 0.0

    def note(self, remote: str | None, exc: HttpProcessingError) -> None:
        # the message may quote what the client sent: repr() keeps it on one line, the cut keeps it short
        what = repr((exc.message or type(exc).__name__).splitlines()[0][:160])
        log.debug("refused a malformed HTTP request from %s: %s", remote, what)
        self.count += 1
        self.total += 1
        now = self.clock()
        if now >= self._next_warning:
            log.warning(
                "refused %d malformed HTTP request(s) in the last %.0f s (latest from %s: %s); each is logged at DEBUG",
                self.count,
                self.interval_s,
                remote,
                what,
            )
            self.count = 0
            self._next_warning = now + self.interval_s


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol, noting when a request's head began and when bytes last came."""

    __slots__ = ("body", "connected_at", "head_since", "last_received")

    body: StreamReader | None  # the body still arriving, of the last request whose head is complete
    connected_at: float
    head_since: float | None  # when the first bytes of a head not yet complete arrived
    last_received: float

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        now = self._loop.time()
        self.connected_at = self.last_received = now
        self.head_since = None
        self.body = None
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        count = self._request_count
        body = self.body
        in_body = body is not None and not body.is_eof()  # these bytes continue a body
        super().data_received(data)
        if not data:  # aiohttp re-feeds b"" when it resumes reading: not the client's doing
            return
        now = self._loop.time()
        self.last_received = now
        if self._request_count != count:
            # a request's head is complete; its body, if it has one still to come, follows
            self.head_since = None
            payload = self._messages[-1][1] if self._messages else None
            self.body = payload if isinstance(payload, StreamReader) and not payload.is_eof() else None
        elif in_body:
            pass  # body bytes: `last_received` is the progress (bytes pipelined after it: aiohttp's keep-alive)
        elif self.head_since is None:
            self.body = None
            self.head_since = now  # the first bytes of a head not yet complete

    def between_requests(self) -> bool:
        """Waiting for a request (idle or half-sent), the state aiohttp's own keep-alive closes."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def quiet_since(self) -> float:
        return self.head_since if self.head_since is not None else self.last_received

    def overdue(self, now: float, limits: HttpLimits) -> str | None:
        """Why this connection must be closed now, if it must."""
        if self.head_since is not None and now - self.head_since > limits.header_timeout_s:
            return f"request headers not complete after {limits.header_timeout_s:g} s"
        body = self.body
        if body is not None:
            if body.is_eof():
                self.body = None
            elif self._reading_paused:
                self.last_received = now  # we are not reading (back-pressure): the client is not to blame
            elif now - self.last_received > limits.body_timeout_s:
                return f"request body stalled for {limits.body_timeout_s:g} s"
        elif (
            self._request_count == 0
            and self.head_since is None
            and now - self.connected_at > limits.idle_timeout_s
            and self.between_requests()
        ):
            return f"no request within {limits.idle_timeout_s:g} s"  # aiohttp < 3.10 leaves these open
        return None

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or status >= 500:
            return super().handle_error(request, status, exc, message)
        # refused by the parser: no traceback (aiohttp logs one at ERROR), a counted line instead
        manager = self._manager
        if isinstance(manager, GuardedServer):
            manager.rejections.note(request.remote, exc)
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already sent on this connection")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Bad Request"
        resp = web.Response(status=status, text=f"{status} {phrase}\n", content_type="text/plain")
        resp.force_close()
        return resp


class GuardedServer(web.Server):
    """aiohttp's server with `GuardedHandler` connections, a cap on quiet ones and a deadline watcher."""

    def __init__(self, handler: Any, *, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.limits = limits
        self.rejections = RejectionLog()
        self._watcher: asyncio.Task[None] | None = None

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) > self.limits.max_idle_connections:
            self._shed()

    def _shed(self) -> None:
        quiet = [h for h in self._connections if isinstance(h, GuardedHandler) and h.between_requests()]
        excess = len(quiet) - self.limits.max_idle_connections
        if excess > 0:
            quiet.sort(key=GuardedHandler.quiet_since)
            for h in quiet[:excess]:
                log.debug("closing a quiet connection from %s: over max_idle_connections", _peer(h))
                h.force_close()

    def start_watching(self) -> None:
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    def tick_s(self) -> float:
        shortest = min(self.limits.header_timeout_s, self.limits.body_timeout_s, self.limits.idle_timeout_s)
        return min(max(shortest / 4, 0.05), 1.0)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.tick_s()
        while True:
            await asyncio.sleep(tick)
            try:
                self._sweep(loop.time())
            except Exception:  # a bug here must not end the watching
                log.exception("checking connection deadlines failed")

    def _sweep(self, now: float) -> None:
        for h in list(self._connections):
            if isinstance(h, GuardedHandler):
                reason = h.overdue(now, self.limits)
                if reason is not None:
                    log.debug("closing the connection from %s: %s", _peer(h), reason)
                    h.force_close()
        if len(self._connections) > self.limits.max_idle_connections:
            self._shed()  # counts the newest too, which were not yet waiting when they came


def _peer(handler: RequestHandler) -> str:
    peer = handler.transport.get_extra_info("peername") if handler.transport is not None else None
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "?"


class GuardedRunner(web.AppRunner):
    """`web.AppRunner` serving through `GuardedServer`, with its deadlines from `limits`."""

    __slots__ = ("_limits",)

    def __init__(self, app: web.Application, *, limits: HttpLimits, **kwargs: Any) -> None:
        kwargs.setdefault("keepalive_timeout", limits.idle_timeout_s)
        super().__init__(app, **kwargs)
        self._limits = limits

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up and freezes it, as aiohttp does
        server = GuardedServer(
            plain.request_handler,
            limits=self._limits,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=asyncio.get_running_loop(),
            **plain._kwargs,
        )
        server.start_watching()
        return server

    async def _cleanup_server(self) -> None:
        if isinstance(self.server, GuardedServer):
            await self.server.stop_watching()
        await super()._cleanup_server()
