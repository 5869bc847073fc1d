"""The HTTP listener's deadlines and caps (`homeserver.api.connections`), over real sockets.

Each test serves a HomeServer with `listen()` (the runner `python -m homeserver` uses) on a free port
with short deadlines, and speaks raw HTTP/1.1 so it can stop half-way through a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import pytest_asyncio
from aiohttp import web

from homeserver.api.connections import GuardedServer, RejectionLog
from homeserver.server import HomeServer, listen
from tests.interop.server import free_port

from .conftest import make_config

HEADER_S = 0.4
BODY_S = 0.4
IDLE_S = 0.6
SLACK_S = 3.0  # the watcher's tick (a quarter of the shortest deadline) plus a busy shared machine


@dataclass
class Served:
    hs: HomeServer
    runner: web.AppRunner
    port: int

    @property
    def server(self) -> GuardedServer:
        assert isinstance(self.runner.server, GuardedServer)
        return self.runner.server

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest_asyncio.fixture
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Served]:
    http: dict[str, Any] = {"header_timeout_s": HEADER_S, "body_timeout_s": BODY_S, "idle_timeout_s": IDLE_S}
    http.update(getattr(request, "param", None) or {})
    port = free_port()
    hs = HomeServer(make_config(tmp_path, listen=f"127.0.0.1:{port}", http=http))
    runner = await listen(hs)
    try:
        yield Served(hs, runner, port)
    finally:
        await runner.cleanup()


def head(method: str, path: str, *, length: int | None = None, token: str | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    if length is not None:
        lines += [f"Content-Length: {length}", "Content-Type: application/json"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def closed_after(reader: asyncio.StreamReader, within_s: float) -> float:
    """Seconds until the server closes the connection (reading whatever it sends); fails past `within_s`."""
    start = time.monotonic()
    async with asyncio.timeout(within_s):
        while await reader.read(65536):
            pass
    return time.monotonic() - start


async def response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a Content-Length (what the server sends): status and body."""
    async with asyncio.timeout(10):
        status_line = await reader.readline()
        assert status_line, "the server closed the connection instead of answering"
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        body = await reader.readexactly(length)
    return int(status_line.split()[1]), body


async def test_a_half_sent_head_is_closed_at_the_header_deadline(served: Served) -> None:
    reader, writer = await served.connect()
    writer.write(b"GET /_matrix/client/versions HTTP/1.1\r\nHost: localhost\r\n")  # never finished
    elapsed = await closed_after(reader, HEADER_S + SLACK_S)
    assert elapsed >= HEADER_S * 0.9
    writer.close()


async def test_a_head_trickled_byte_by_byte_is_closed_at_the_header_deadline(served: Served) -> None:
    reader, writer = await served.connect()
    data = head("GET", "/_matrix/client/versions")
    start = time.monotonic()
    with pytest.raises(ConnectionError):  # the deadline runs from the first byte, not the last
        for i in range(len(data) - 1):
            writer.write(data[i : i + 1])
            await writer.drain()
            if reader.at_eof() or time.monotonic() - start > HEADER_S + SLACK_S:
                raise ConnectionResetError
            await asyncio.sleep(HEADER_S / 8)
    assert time.monotonic() - start < HEADER_S + SLACK_S
    writer.close()


async def test_a_stalled_body_is_closed_and_a_slow_one_is_not(served: Served) -> None:
    body = orjson.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}})
    stalled_reader, stalled = await served.connect()
    stalled.write(head("POST", "/_matrix/client/v3/login", length=len(body)) + body[:10])
    slow_reader, slow = await served.connect()
    slow.write(head("POST", "/_matrix/client/v3/login", length=len(body)))
    # the slow one sends a chunk every half deadline: three deadlines in all, never cut
    chunks = [body[i : i + len(body) // 6 + 1] for i in range(0, len(body), len(body) // 6 + 1)]
    start = time.monotonic()
    for chunk in chunks:
        await asyncio.sleep(BODY_S / 2)
        slow.write(chunk)
        await slow.drain()
    assert time.monotonic() - start >= 2 * BODY_S
    status, _ = await response(slow_reader)
    assert status == 400  # the body reached the handler: it lacks a password
    assert await closed_after(stalled_reader, SLACK_S) >= 0
    stalled.close()
    slow.close()


async def test_a_connection_that_never_sends_is_closed_at_the_idle_deadline(served: Served) -> None:
    reader, writer = await served.connect()
    elapsed = await closed_after(reader, IDLE_S + SLACK_S)
    assert elapsed >= IDLE_S * 0.9
    writer.close()


async def test_keep_alive_between_requests_outlives_the_header_deadline(served: Served) -> None:
    reader, writer = await served.connect()
    for _ in range(2):
        writer.write(head("GET", "/_matrix/client/versions"))
        assert (await response(reader))[0] == 200
        await asyncio.sleep(HEADER_S * 1.2)  # idle, not half-sent: only the idle deadline applies
    writer.close()


async def test_a_body_sent_after_its_head_leaves_the_connection_to_the_idle_deadline(served: Served) -> None:
    # the last bytes of a body are not the start of the next head: the handler and keep-alive are not cut
    body = orjson.dumps({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "x"}})
    reader, writer = await served.connect()
    for _ in range(2):
        writer.write(head("POST", "/_matrix/client/v3/login", length=len(body)))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(body)
        assert (await response(reader))[0] == 400
        await asyncio.sleep(HEADER_S * 1.2)
    writer.close()


@pytest.mark.parametrize("served", [{"idle_timeout_s": 0.3, "max_idle_connections": 2}], indirect=True)
async def test_a_long_poll_sync_is_neither_timed_out_nor_shed(served: Served) -> None:
    user_id = await served.hs.accounts.create("alice", "password")
    session = await served.hs.accounts.new_session(user_id)
    syncs = []
    for _ in range(3):  # more than the cap, each held longer than every deadline
        reader, writer = await served.connect()
        writer.write(head("GET", "/_matrix/client/v3/sync?timeout=1500", token=session.access_token))
        syncs.append((reader, writer))
    for reader, _ in syncs:
        status, body = await response(reader)
        assert status == 200 and "next_batch" in orjson.loads(body)
    for _, writer in syncs:
        writer.close()


@pytest.mark.parametrize("served", [{"idle_timeout_s": 30, "max_idle_connections": 3}], indirect=True)
async def test_quiet_connections_over_the_cap_are_closed_oldest_first(served: Served) -> None:
    conns = []
    for _ in range(6):
        reader, writer = await served.connect()
        writer.write(head("GET", "/_matrix/client/versions"))
        assert (await response(reader))[0] == 200
        conns.append((reader, writer))
    for reader, _ in conns[:3]:  # the three quiet the longest
        await closed_after(reader, SLACK_S)
    deadline = time.monotonic() + SLACK_S
    while len(served.server.connections) > 3:
        assert time.monotonic() < deadline, len(served.server.connections)
        await asyncio.sleep(0.02)
    for reader, writer in conns[3:]:  # the newest still serve
        writer.write(head("GET", "/_matrix/client/versions"))
        assert (await response(reader))[0] == 200
        writer.close()


async def test_parser_rejections_get_a_4xx_and_no_traceback(served: Served, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    bad = [
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",  # a URL over 8 KiB
        b"G@T / HTTP/1.1\r\nHost: localhost\r\n\r\n",  # a bad method
        b"GET / HTTP/1.1\r\nHost: localhost\r\nBad Header: x\r\n\r\n",  # a bad header name
        b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Long: " + b"b" * 9000 + b"\r\n\r\n",  # a header over 8 KiB
    ]
    for request in bad:
        reader, writer = await served.connect()
        writer.write(request)
        status, _ = await response(reader)
        assert 400 <= status < 500
        writer.close()
    records = caplog.records
    assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    warnings = [r for r in records if r.levelno == logging.WARNING and r.name == "homeserver.http"]
    assert len(warnings) == 1 and "refused 1 malformed" in warnings[0].getMessage()  # later ones counted
    refused = [r for r in records if r.levelno == logging.DEBUG and "refused a malformed" in r.getMessage()]
    assert len(refused) == len(bad)
    assert all("\n" not in r.getMessage() for r in records if r.name == "homeserver.http")


def test_rejections_are_warned_about_once_a_minute_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    now = [1000.0]
    rejections = RejectionLog(clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="homeserver.http")
    for _ in range(5):
        rejections.note("192.0.2.1", BadHttpMessage("bad\nline"))
        now[0] += 10
    now[0] += 20  # 70 s after the first warning
    rejections.note("192.0.2.2", BadHttpMessage("worse"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("refused 1 malformed") and "192.0.2.1" in messages[0]
    assert messages[1].startswith("refused 5 malformed") and "192.0.2.2" in messages[1]
    assert rejections.total == 6
