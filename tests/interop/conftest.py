"""Real clients against a real server: `python -m homeserver` in a subprocess on a free loopback port.

Set `INTEROP_SERVER=synapse` to run the same tests against Synapse from `bench/.venv` (made by
`bench/setup.sh`): a check that a test asks for Matrix behaviour, not for our server's quirks.

Tests name the endpoints they need with `require(server, ...)`; if the server answers one of them
with `M_UNRECOGNIZED` the test fails at once, saying which, instead of failing somewhere inside a client.
`tests/api/test_endpoint_coverage.py` is what insists that every endpoint is there.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .federation import LoopbackCA, start_homeserver_peer, start_synapse_peer, synapse_installed
from .server import RunningServer, start_homeserver

REPO_ROOT = Path(__file__).resolve().parents[2]


def _start(tmp_path: Path) -> RunningServer:
    if os.environ.get("INTEROP_SERVER", "homeserver") == "synapse":
        import sys

        sys.path.insert(0, str(REPO_ROOT / "bench"))
        from synapse_server import start_synapse, synapse_available

        if not synapse_available():
            pytest.skip("INTEROP_SERVER=synapse needs bench/.venv (run bash bench/setup.sh)")
        started: RunningServer = start_synapse(tmp_path / "synapse")
        return started
    return start_homeserver(tmp_path / "homeserver", strict_indexes=True)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    """A real server process with its own data directory and port, stopped after the test."""
    srv = _start(tmp_path)
    try:
        yield srv
    finally:
        crashed = not srv.alive()
        # A long-poll the client left parked can hold a graceful shutdown until its timeout; don't wait.
        status = srv.stop(timeout=5)
        if crashed:
            pytest.fail(f"the {srv.kind} process died during the test (status {status}); log:\n{srv.log_tail()}")


def _fill(path: str) -> str:
    """A concrete path for a probe: every `{param}` becomes a harmless placeholder."""
    parts = []
    for part in path.split("/"):
        parts.append("probe" if part.startswith("{") and part.endswith("}") else part)
    return "/".join(parts)


def served(server: RunningServer, method: str, path: str) -> bool:
    """Does the server route `method path`? Probed without a token, so nothing is changed."""
    body = b"{}" if method in ("POST", "PUT") else None
    req = urllib.request.Request(server.base_url + _fill(path), data=body, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return True
    except urllib.error.HTTPError as e:
        if e.code not in (404, 405):
            return True
        try:
            errcode = json.loads(e.read() or b"{}").get("errcode")
        except (ValueError, AttributeError):
            return True
        return bool(errcode != "M_UNRECOGNIZED")


def require(server: RunningServer, *endpoints: str) -> None:
    """Fail the test, naming them, if the server does not route one of `endpoints` ("METHOD /path")."""
    missing = []
    for endpoint in endpoints:
        method, _, path = endpoint.partition(" ")
        if not served(server, method, path):
            missing.append(endpoint)
    if missing:
        pytest.fail("server does not serve: " + ", ".join(missing))


# The endpoints the clients' basic flows touch, for `require`.
REGISTER = "POST /_matrix/client/v3/register"
LOGIN = "POST /_matrix/client/v3/login"
CREATE_ROOM = "POST /_matrix/client/v3/createRoom"
SEND = "PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"
SYNC = "GET /_matrix/client/v3/sync"
JOIN = "POST /_matrix/client/v3/join/{roomIdOrAlias}"
INVITE = "POST /_matrix/client/v3/rooms/{roomId}/invite"
MESSAGES = "GET /_matrix/client/v3/rooms/{roomId}/messages"


# -- federation peers (one of each per test module): a throw-away CA, Synapse, our server ----------


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCA:
    return LoopbackCA(tmp_path_factory.mktemp("ca"))


def _stop_peer(server: RunningServer) -> None:
    crashed = not server.alive()
    status = server.stop(timeout=10)
    if crashed:
        pytest.fail(f"{server.kind} died during the tests (status {status}); log:\n{server.log_tail()}")


@pytest.fixture(scope="module")
def synapse(ca: LoopbackCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Synapse as a TLS federation peer. The test command installs it (scripts/setup-synapse): a
    missing venv is a broken setup, so the test fails saying so rather than skipping."""
    if not synapse_installed():
        pytest.fail("no Synapse venv at .venv-synapse: run scripts/setup-synapse (scripts/test does)")
    server = start_synapse_peer(tmp_path_factory.mktemp("synapse"), ca)
    try:
        yield server
    finally:
        _stop_peer(server)


@pytest.fixture(scope="module")
def ours(ca: LoopbackCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """Our server as a TLS federation peer trusting the same CA."""
    server = start_homeserver_peer(tmp_path_factory.mktemp("homeserver"), ca)
    try:
        yield server
    finally:
        _stop_peer(server)
