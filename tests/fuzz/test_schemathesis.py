"""Schemathesis over the spec's client-server OpenAPI: no request may make the server answer 5xx.

One test per operation of `tests/openapi/client-server.json` (the spec's own description, v1.19), against
a real `python -m homeserver` on a free loopback port with a temporary data directory. Each operation gets
the spec's examples, schemathesis's coverage cases (boundary and wrongly typed values, missing fields)
and `MAX_EXAMPLES` generated requests, valid and invalid, all from the fixed `SEED`: the same seed sends
the same requests. Only `not_a_server_error` is checked: whether the answers match the spec is the job of
`tests/api/` (every response there is validated against the same document).

Requests carry the access token of a registered user, and path parameters are often the real ids of a
scene set up first (`scene.py`: a second user, a shared room, an event, a device with keys...), so that
fuzzed bodies reach the code behind the "not found". No operation is excluded: those that would destroy
that scene run against a throwaway scene of their own (`OWN_SCENE`), and admin operations as an admin in
one (`AS_ADMIN`).

When a request does get a 5xx, the failure shows schemathesis's reproduction (a curl command) and the
server's log written meanwhile, where `guard` in `homeserver/api/http.py` logged the traceback.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import schemathesis

from tests.interop.server import RunningServer, start_homeserver

from .common import REQUEST_TIMEOUT_S, check_answer, fuzz_config, log_size
from .scene import Client, Scene

SPEC = Path(__file__).resolve().parents[1] / "openapi" / "client-server.json"
# Generated requests per operation in the fuzzing phase, on top of the spec's examples and the coverage
# cases (~6,200 requests in all). The budget: 100 makes 20,616 requests, with `-n 2` on this 2-core
# machine 1 min 15 s when quiet and 1 min 50 s while other work ran; keep it under about 3 minutes. For a
# deeper run by hand: `FUZZ_MAX_EXAMPLES=300 FUZZ_SEED=7 .venv/bin/python -m pytest -n 2 tests/fuzz`.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "100"))
# Long polls (`/sync`, `/events`) wait up to `timeout` ms when there is nothing new; a valid timeout is
# cut to this so that the run stays bounded. Invalid ones (negative, not a number) are sent as generated.
LONG_POLL_CAP_MS = 50

# Operations that would end the fuzzing user's session or account, take it or its peer out of the shared
# room, or remove what other operations aim at: each of their requests gets a throwaway scene of its own.
OWN_SCENE = {
    "POST /_matrix/client/v3/logout",  # ends the session whose token every request carries
    "POST /_matrix/client/v3/logout/all",  # ends every session of the user
    "POST /_matrix/client/v3/account/deactivate",  # ends the account (if the fuzzer passes the password stage)
    "DELETE /_matrix/client/v3/devices/{deviceId}",  # deleting the user's device ends its session
    "POST /_matrix/client/v3/delete_devices",  # likewise, for a list of devices
    "POST /_matrix/client/v3/rooms/{roomId}/leave",  # takes the user out of the shared room
    "POST /_matrix/client/v3/rooms/{roomId}/forget",  # (forgetting needs a leave first; kept together)
    "POST /_matrix/client/v3/rooms/{roomId}/kick",  # takes the peer out of the shared room
    "POST /_matrix/client/v3/rooms/{roomId}/ban",  # bans the peer from the shared room
    "POST /_matrix/client/v3/rooms/{roomId}/upgrade",  # replaces the shared room (the old one is closed)
    "DELETE /_matrix/client/v3/directory/room/{roomAlias}",  # removes the shared room's alias
    "DELETE /_matrix/client/v3/room_keys/version/{version}",  # removes the key backup the room_keys ops use
}
# Admin operations run as an admin (a non-admin only ever gets 403), also in a throwaway scene: locking,
# suspending or deactivating oneself or the peer would end the scene for every operation after it.
AS_ADMIN = {
    "GET /_matrix/client/v1/admin/lock/{userId}",
    "PUT /_matrix/client/v1/admin/lock/{userId}",
    "GET /_matrix/client/v1/admin/suspend/{userId}",
    "PUT /_matrix/client/v1/admin/suspend/{userId}",
    "GET /_matrix/client/v3/admin/whois/{userId}",
}

schema = schemathesis.openapi.from_path(SPEC, config=fuzz_config(MAX_EXAMPLES))


@dataclass
class World:
    server: RunningServer
    client: Client
    scene: Scene
    requests_sent: int = 0


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One server and scene per pytest(-xdist) worker, shared by every operation's test."""
    server = start_homeserver(tmp_path_factory.mktemp("fuzz"), server_name="localhost", strict_indexes=True)
    session = requests.Session()
    try:
        client = Client(server.base_url, session, server.shared_secret)
        world = World(server, client, client.scene())
        yield world
        print(f"\nschemathesis: {world.requests_sent} requests to {server.base_url}")  # shown with -s
    finally:
        session.close()
        server.stop(timeout=5)


def pick(name: str, generated: Any, real: list[str]) -> Any:
    """The generated value one time in four, else one of the real ones; chosen by a hash of the generated
    value, so the same seed still sends the same requests (up to the ids the server hands out)."""
    slot = zlib.crc32(f"{name}={generated!r}".encode()) % (4 * len(real))
    return generated if slot < len(real) else real[slot % len(real)]


@contextmanager
def aimed(case: schemathesis.Case, scene: Scene) -> Iterator[None]:
    """Point the generated request at the scene: real path values, bounded long polls. Undone afterwards:
    hypothesis may hand the same case object over again, and `pick` must see what was generated."""
    saved = (case.path, case.path_parameters, case.query)
    values = scene.path_values()
    # New dicts, never changes in place: schemathesis may share the generated ones with cases it derives.
    path_parameters = dict(case.path_parameters)
    for name, generated in case.path_parameters.items():
        if values.get(name):
            # Real values are percent-encoded here (`!room:server`, `#alias:server`); generated ones already are.
            path_parameters[name] = pick(name, generated, [quote(value, safe="") for value in values[name]])
    case.path_parameters = path_parameters
    if isinstance(case.query, dict):
        query = dict(case.query)
        for name in ("timeout", "timeout_ms"):  # long polls; `timeout_ms` waits for media still being uploaded
            timeout = query.get(name)
            if isinstance(timeout, int | str) and str(timeout).isascii() and str(timeout).isdigit():
                query[name] = min(int(timeout), LONG_POLL_CAP_MS)
        case.query = query
    # The spec tells apart two operations on one method and path by a trailing space in the path key
    # (`/events `, `/rooms/{roomId}/invite `); the server knows the path without it.
    case.path = case.path.rstrip()
    try:
        yield
    finally:
        case.path, case.path_parameters, case.query = saved


@schema.parametrize()
def test_no_server_error(case: schemathesis.Case, world: World) -> None:
    label = case.operation.label
    scene = world.client.scene(admin=label in AS_ADMIN) if label in OWN_SCENE | AS_ADMIN else world.scene
    with aimed(case, scene):
        offset = log_size(world.server)
        world.requests_sent += 1
        response = case.call(
            base_url=world.server.base_url,
            session=world.client.session,
            headers=scene.me.headers,  # the scene's user; security parameters are not generated (fuzz_config)
            timeout=REQUEST_TIMEOUT_S,
        )
        check_answer(case, response, world.server, offset)


def test_special_operations_are_in_the_spec() -> None:
    """A misspelt label in `OWN_SCENE` or `AS_ADMIN` would silently let that operation loose on the
    shared scene (or leave an admin operation at 403): every label must name an operation of the spec."""
    labels = {result.ok().label for result in schema.get_all_operations()}
    assert OWN_SCENE - labels == set()
    assert AS_ADMIN - labels == set()
