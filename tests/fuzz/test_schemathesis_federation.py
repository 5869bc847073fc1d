"""Schemathesis over the spec's server-server OpenAPI: no request from a peer may make the server answer 5xx.

A peer server is an untrusted client too. One test per operation of `tests/openapi/server-server.json`
(the spec's own description, v1.19), against a real `python -m homeserver` federating over TLS on
loopback (`start_homeserver_peer`: a certificate from a throw-away CA it also trusts, loopback allowed).
Every request is signed with `X-Matrix` by a fake peer whose key our server fetches from it over TLS
(`federation_scene.FakePeer`), over the method, the path and query as sent and the JSON body: the
requests pass authentication and reach the handlers. Each operation gets the spec's examples,
schemathesis's coverage cases and `MAX_EXAMPLES` generated requests, valid and invalid, from the fixed
`SEED`. `not_a_server_error` is checked, and that the server is still alive after each request.

Path and query parameters are often the real ids of a scene (`federation_scene.build_scene`): a room the
peer's user joined through `make_join`/`send_join`, its events, a local user with device keys, an image,
an alias, so that fuzzed bodies reach the code behind the ACL and membership checks. The spec describes
PDUs and EDU contents as "any object", so three bodies in four are replaced by real ones with one part
fuzzed (`federation_bodies.Shaper`): PDUs, membership events and invites hashed and signed by the peer,
EDUs about real users and rooms, queries about real keys. Nothing a request can do removes the scene (no
shaped event takes the peer's user out of the room; generated ones are not signed), so no operation
needs a scene of its own, and none is excluded. Besides no 5xx, no request may leave a traceback in the
server's log: PDU and EDU handlers catch and log what they fail on, and a failure caught is a bug too.

When a request does get a 5xx, the failure shows schemathesis's reproduction and the server's log.
"""

from __future__ import annotations

import os
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis

from tests.interop.federation import LoopbackCA, start_homeserver_peer
from tests.interop.server import RunningServer

from .common import REQUEST_TIMEOUT_S, check_answer, fuzz_config, log_since, log_size
from .federation_bodies import Shaper
from .federation_scene import FakePeer, FederationScene, build_scene, room_shape, signed_session
from .scene import Client

SPEC = Path(__file__).resolve().parents[1] / "openapi" / "server-server.json"
# Generated requests per operation in the fuzzing phase, on top of the spec's examples and the coverage
# cases: 250 makes 9,634 requests, 1 min 21 s with `-n 2` on this 2-core machine (2 min 6 s in one
# process); keep the file's run under about 2.5 minutes. For a deeper run by hand:
# `FUZZ_FED_MAX_EXAMPLES=600 FUZZ_SEED=7 .venv/bin/python -m pytest -n 2 tests/fuzz/test_schemathesis_federation.py`.
MAX_EXAMPLES = int(os.environ.get("FUZZ_FED_MAX_EXAMPLES", "250"))
# `timeout_ms` (media still being uploaded) waits that long; a valid one is cut to this.
LONG_POLL_CAP_MS = 50

schema = schemathesis.openapi.from_path(SPEC, config=fuzz_config(MAX_EXAMPLES))


@dataclass
class World:
    server: RunningServer
    peer: FakePeer
    session: requests.Session  # every request signed by the peer
    scene: FederationScene
    shaper: Shaper
    requests_sent: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)  # (operation, status): shown with -s


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One server, peer and scene per pytest(-xdist) worker, shared by every operation's test."""
    tmp = tmp_path_factory.mktemp("fedfuzz")
    ca = LoopbackCA(tmp / "ca")
    peer = FakePeer(ca)
    server = start_homeserver_peer(tmp / "server", ca, strict_indexes=True)
    assert server.federation_url is not None
    session = signed_session(requests.Session(), peer, server.server_name, str(ca.ca_path))
    try:
        client = Client(server.base_url, requests.Session(), server.shared_secret)
        scene = build_scene(client, session, server.federation_url, peer)
        shaper = Shaper(scene, peer, room_shape(client, session, server.federation_url, scene))
        world = World(server, peer, session, scene, shaper)
        yield world
        print(f"\nschemathesis: {world.requests_sent} signed requests to {server.federation_url}")
        for (label, status), count in sorted(world.statuses.items()):
            print(f"  {status} x{count:<5} {label}")
    finally:
        session.close()
        server.stop(timeout=5)
        peer.stop()


def pick(name: str, generated: Any, real: list[str]) -> Any:
    """The generated value one time in four, else one of the real ones; chosen by a hash of the generated
    value, so the same seed still sends the same requests (up to the ids the server hands out)."""
    slot = zlib.crc32(f"{name}={generated!r}".encode()) % (4 * len(real))
    return generated if slot < len(real) else real[slot % len(real)]


@contextmanager
def aimed(case: schemathesis.Case, scene: FederationScene, shaper: Shaper) -> Iterator[None]:
    """Point the generated request at the scene (real path and query values, a bounded `timeout_ms`, a
    body shaped like the real thing three times in four); undone afterwards, as hypothesis may hand the
    same case over again."""
    saved = (case.path_parameters, case.query, case.body)
    values = scene.path_values()
    path_parameters = dict(case.path_parameters or {})
    for name, generated in path_parameters.items():
        if values.get(name):
            path_parameters[name] = pick(name, generated, [quote(value, safe="") for value in values[name]])
    case.path_parameters = path_parameters
    if isinstance(case.query, dict):
        query = dict(case.query)
        for name, generated in query.items():
            if values.get(name):
                query[name] = pick(name, generated, values[name])
        if "v" in query and "backfill" in case.path:  # the events to backfill from
            query["v"] = pick("v", query["v"], [[scene.event_id], [scene.join_event_id, scene.event_id]])
        timeout = query.get("timeout_ms")
        if isinstance(timeout, int | str) and str(timeout).isascii() and str(timeout).isdigit():
            query["timeout_ms"] = min(int(timeout), LONG_POLL_CAP_MS)
        case.query = query
    if isinstance(case.body, dict) and zlib.crc32(repr(case.body).encode()) % 4:
        shape(case, shaper)
    try:
        yield
    finally:
        case.path_parameters, case.query, case.body = saved


def shape(case: schemathesis.Case, shaper: Shaper) -> None:
    """Replace a generated body by a real one with one part fuzzed (`federation_bodies`); for the
    membership operations the path's event id is then the shaped event's, most of the time."""
    label, body = case.operation.label, case.body
    assert isinstance(body, dict)
    path_parameters = dict(case.path_parameters or {})
    new: Any
    if label == SEND:
        # A transaction id seen before gets the answer kept for it (spec: once per origin and id), and
        # the generator repeats a few ids a lot: a new one per body, so that the shaped PDUs are handled.
        path_parameters["txnId"] = f"fuzz{zlib.crc32(repr(body).encode())}"
        new = dict(body)
        pdus = body.get("pdus") if isinstance(body.get("pdus"), list) and body.get("pdus") else [body]
        edus = body.get("edus") if isinstance(body.get("edus"), list) and body.get("edus") else [body]
        # The items are mostly `{}` (the spec says "any object"): the whole body salts their shaping.
        salt = str(zlib.crc32(repr(body).encode()))
        new["pdus"] = [shaper.pdu(item, f"{i}|{salt}") for i, item in enumerate(pdus[:5])]
        new["edus"] = [shaper.edu(item, f"{i}|{salt}") for i, item in enumerate(edus[:5])]
        if zlib.crc32(repr(body).encode()) % 3:
            new["origin"] = shaper.peer.server_name
    elif label in MEMBERSHIP_OPERATIONS:
        new = shaper.membership(MEMBERSHIP_OPERATIONS[label], body)
        eid = shaper.event_id(new)
        if eid is not None and zlib.crc32(repr(body).encode()) % 4:
            path_parameters["eventId"] = quote(eid, safe="")
            path_parameters["roomId"] = quote(shaper.scene.room_id, safe="")
    elif label == INVITE:
        room_id, new = shaper.invite(body)
        eid = shaper.event_id(new.get("event"))
        if eid is not None and zlib.crc32(repr(body).encode()) % 4:
            path_parameters["eventId"] = quote(eid, safe="")
            path_parameters["roomId"] = quote(room_id, safe="")
    else:
        new = shaper.other(label, body)
        if new is None:
            return
    case.body = new
    case.path_parameters = path_parameters


SEND = "PUT /_matrix/federation/v1/send/{txnId}"
INVITE = "PUT /_matrix/federation/v2/invite/{roomId}/{eventId}"
MEMBERSHIP_OPERATIONS = {
    "PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}": "join",
    "PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}": "leave",
    "PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}": "knock",
}


@schema.parametrize()
def test_no_server_error(case: schemathesis.Case, world: World) -> None:
    assert world.server.federation_url is not None
    with aimed(case, world.scene, world.shaper):
        offset = log_size(world.server)
        world.requests_sent += 1
        response = case.call(
            base_url=world.server.federation_url,
            session=world.session,
            verify=world.session.verify,  # the test CA (schemathesis would pass its own `verify`)
            timeout=REQUEST_TIMEOUT_S,
        )
        world.statuses[(case.operation.label, response.status_code)] += 1
        check_answer(case, response, world.server, offset)
        # A failure the server caught and logged (a PDU or EDU handler's) is a bug all the same.
        log = log_since(world.server, offset, limit=1 << 30)
        assert "Traceback" not in log, f"the server logged a traceback:\n{log[-8000:]}"


def test_shaped_operations_are_in_the_spec(world: World) -> None:
    """A misspelt label would silently leave that operation's bodies unshaped."""
    labels = {result.ok().label for result in schema.get_all_operations()}
    shaped = {SEND, INVITE, *MEMBERSHIP_OPERATIONS, *world.shaper.other_templates()}
    assert shaped - labels == set()


def test_requests_are_signed_and_accepted(world: World) -> None:
    """The harness itself: a signed request passes our server's authentication (a mistake in signing
    would leave every generated request at 401, and the fuzzing above at the door)."""
    assert world.server.federation_url is not None
    room = quote(world.scene.room_id, safe="")
    resp = world.session.get(
        f"{world.server.federation_url}/_matrix/federation/v1/state_ids/{room}",
        params={"event_id": world.scene.event_id},
    )
    assert resp.status_code == 200, resp.text
    assert world.scene.join_event_id in resp.json()["pdu_ids"]
    # the peer's key came from the peer itself, over TLS
    assert any(seen.startswith("GET /_matrix/key/v2/server") for seen in world.peer.requests_seen)
