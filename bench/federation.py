"""Federation under load, on our server and on Synapse, measured in one run over TLS on loopback.

    bash scripts/setup-synapse                                # once: .venv-synapse (or bash bench/setup.sh)
    .venv/bin/python bench/federation.py                      # (a) to (e), (b) with 1,000 members
    .venv/bin/python bench/federation.py --only keys,media    # (d) and (e) alone (about a minute)
    .venv/bin/python bench/federation.py --quick              # a small workload, to try it out
    .venv/bin/python bench/federation.py --members 1000,5000  # (b) with 5,000 members too
    .venv/bin/python bench/federation.py --json bench/results/federation.json

Every server is a subprocess on 127.0.0.1 with a fresh data directory, named `127.0.0.1:<TLS port>`
and trusting a throw-away CA (`tests/interop/federation.py`: `LoopbackCA`, `start_synapse_peer`,
`start_homeserver_peer`); presence off, every rate limit open (Synapse's `rc_federation` too), logging
at WARNING, Synapse's sync response cache off. The fake remote servers live in this process: each has
its own ed25519 key published at `/_matrix/key/v2/server` on a TLS listener with a certificate from
the same CA, signs its requests with X-Matrix (`federation/client.py`) and its PDUs with the protocol
functions, answers `/send` with an empty result (a peer that accepts everything) and `/event` and
`/get_missing_events` for the events it made, `/user/keys/query` and `/user/devices/{userId}` for
its users' keys (`UserKeys`) and `/media/download/{mediaId}` (multipart/mixed) for its media.

(a) inbound PDUs: a fake server joins a public room on the target through the target's `make_join`
    and `send_join` (v2), then sends `--pdus` signed `m.room.message` PDUs, each on the previous one,
    in transactions of 50, one transaction in flight (as a sending server does): the next leaves once
    this one's last PDU can be read through the client API (Synapse answers `/send` before handling
    the PDUs; see `send_processed`). Measured: PDUs accepted per second (every PDU's result must be
    `{}`) and the target's CPU (all threads) per PDU.
    The same with `--rooms` rooms, the 50 PDUs of each transaction spread over them (the target may
    handle rooms in parallel).
(b) joining a big room: a Synapse ("host") user makes a public room; fake servers join it with
    `make_join`/`send_join` and then send `--members` users' joins in `/send` transactions of 50 (the
    time this takes is printed as setup). A second Synapse and our server each join it through the
    client API (`POST /join/{roomId}?via=<host>`). Measured for each joiner: the time until the join
    call answers, the time until the room is in a waiting `/sync` (no filter) and in a lazy-loading
    `/sync`, and the joiner's peak RSS during the join (`VmHWM` after resetting it through
    `/proc/PID/clear_refs`) next to its RSS before. A joiner that refuses is reported as such.
(c) latency across servers: a user on our server makes a public room, a Synapse user joins it
    through Synapse's client API; then, `--wakeups` times in each direction, one side long-polls
    `/sync` and the other sends: the time from the start of the send to the waiting `/sync` answer
    holding it (p50/p99).
(d) `/keys/query` for remote users: `--key-users` (200) users on `--key-servers` (2) fake servers,
    each with one device (signed by itself and by the user's self-signing key) and cross-signing
    keys, all joined to a room of a local user of the target. That user asks `/keys/query` for all of
    them: the first call (cold) and `--repeats` more (warm: both servers cache the device lists of
    users who share a room with one of theirs); then as many calls for 200 other users of the same
    servers who share no room (nobody caches those: each call asks the servers). Every answer must
    hold every user's device, master and self-signing keys. The fake servers count the requests.
(e) remote media: a `--media-mb` (10) MB file on a fake origin, downloaded by a local user through
    `/_matrix/client/v1/media/download/{origin}/{mediaId}`: the first download (cold: fetched over
    federation) and `--repeats` more (warm: from the target's cache), as MB/s; the bytes must be the
    origin's. The target's peak RSS during the cold download (VmHWM, reset just before).
(d) and (e) run `--rounds` (3) times with new remote users or a new file each time; the medians are
reported. `--only` picks parts: inbound, join, latency, keys, media (or a-e).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
import nacl.signing
from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "bench"


def _package_before_bench() -> None:
    """This file is named like the `federation` package: bench/ goes after the repository root on
    the path (client_api puts it first), so `federation` is the package and bench modules resolve."""
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (BENCH_DIR, REPO_ROOT)]
    sys.path[:0] = [str(REPO_ROOT)]
    sys.path.append(str(BENCH_DIR))


_package_before_bench()
from client_api import PATH_SAFE, Connection, compile_bytecode, cpu_seconds, percentile  # noqa: E402

_package_before_bench()

from federation.addresses import AddressPolicy  # noqa: E402
from federation.client import FederationClient, path_of  # noqa: E402
from federation.dns import DnsPython  # noqa: E402
from federation.keys import OurKeys  # noqa: E402
from federation.multipart import encode as encode_multipart  # noqa: E402
from federation.multipart import new_boundary  # noqa: E402
from homeserver.protocol.event_ids import event_id as compute_event_id  # noqa: E402
from homeserver.protocol.event_signing import add_hashes_and_signatures  # noqa: E402
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version  # noqa: E402
from homeserver.protocol.signing import encode_verify_key, generate_signing_key, sign_json  # noqa: E402
from storage.cache import LruCache  # noqa: E402
from tests.interop.federation import (  # noqa: E402
    SYNAPSE_PYTHON,
    LoopbackCA,
    start_homeserver_peer,
    start_synapse_peer,
)
from tests.interop.server import RunningServer, register, rss_kib  # noqa: E402

TXN_PDUS = 50  # spec: a transaction carries at most 50 PDUs
LOOPBACK_ALLOW = ["127.0.0.0/8", "::1/128"]
POLLS = [0]  # client API reads made while waiting for PDUs to be handled (reported with (a))
SYNAPSE_OVERRIDES: dict[str, Any] = {"caches": {"sync_response_cache_duration": 0}}
PARTS = ("inbound", "join", "latency", "keys", "media")  # (a) to (e), for --only


class BenchError(RuntimeError):
    pass


# -- a fake remote server ------------------------------------------------------------------------


class FakeServer:
    """Another homeserver as far as the target can tell: a name `127.0.0.1:<port>`, a key served
    over TLS, X-Matrix-signed requests, signed PDUs; it accepts whatever is sent to it."""

    def __init__(self, ca: LoopbackCA, label: str) -> None:
        self.ca = ca
        self.key_id, self.key = generate_signing_key(label)
        self.server_name = ""
        self.keys: OurKeys | None = None
        self.runner: web.AppRunner | None = None
        self.client: FederationClient | None = None
        self.events: dict[str, dict[str, Any]] = {}  # what it made, for /event and /get_missing_events
        self.clock = 0
        self.user_keys: dict[str, UserKeys] = {}  # its users' keys, for /user/keys/query and /user/devices
        self.media: dict[str, bytes] = {}  # media id -> the whole multipart answer
        self.served: dict[str, int] = {}  # requests answered, by kind

    def now(self) -> int:
        """Milliseconds that never repeat (so later events sort later, as on a real server)."""
        self.clock = max(self.clock + 1, int(time.time() * 1000))
        return self.clock

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path == "/_matrix/key/v2/server":
            assert self.keys is not None
            return web.json_response(self.keys.response())
        if request.path.startswith("/_matrix/federation/v1/send/"):
            await request.read()
            return web.json_response({"pdus": {}})
        if request.path.startswith("/_matrix/federation/v1/get_missing_events/"):
            return web.json_response({"events": self.missing_events(await request.json())})
        if request.path.startswith("/_matrix/federation/v1/event/"):
            pdu = self.events.get(request.match_info["tail"].rsplit("/", 1)[-1])
            if pdu is not None:
                return web.json_response({"origin": self.server_name, "origin_server_ts": self.now(), "pdus": [pdu]})
        if request.path == "/_matrix/federation/v1/user/keys/query" and request.method == "POST":
            self._count("keys_query")
            return web.json_response(self.keys_query(await request.json()))
        if request.path.startswith("/_matrix/federation/v1/user/devices/"):
            self._count("user_devices")
            answer = self.user_devices(unquote(request.path.rsplit("/", 1)[-1]))
            if answer is not None:
                return web.json_response(answer)
        if request.path.startswith("/_matrix/federation/v1/media/download/"):
            self._count("media_download")
            body = self.media.get(request.path.rsplit("/", 1)[-1])
            if body is not None:
                boundary = body[2 : body.index(b"\r\n")].decode()
                return web.Response(body=body, headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})
        if request.path == "/_matrix/federation/v1/version":
            return web.json_response({"server": {"name": "bench-fake", "version": "1"}})
        return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "not served here"}, status=404)

    def _count(self, kind: str) -> None:
        self.served[kind] = self.served.get(kind, 0) + 1

    def add_user_keys(self, localpart: str) -> str:
        """A user of this server with one device and cross-signing keys; their id."""
        user_id = self.user(localpart)
        self.user_keys[user_id] = UserKeys.make(user_id, "DEV" + localpart.upper())
        return user_id

    def keys_query(self, body: Any) -> dict[str, Any]:
        """spec: POST /_matrix/federation/v1/user/keys/query: the devices asked for (all if the list
        is empty) and the cross-signing keys of the users it knows."""
        out: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        for user_id, wanted in (body.get("device_keys") or {}).items():
            keys = self.user_keys.get(user_id)
            if keys is None:
                continue
            out["device_keys"][user_id] = {d: k for d, k in keys.devices.items() if not wanted or d in wanted}
            out["master_keys"][user_id] = keys.master
            out["self_signing_keys"][user_id] = keys.self_signing
        return out

    def user_devices(self, user_id: str) -> dict[str, Any] | None:
        """spec: GET /_matrix/federation/v1/user/devices/{userId}."""
        keys = self.user_keys.get(user_id)
        if keys is None:
            return None
        return {
            "user_id": user_id,
            "stream_id": 1,
            "devices": [
                {"device_id": d, "keys": k, "device_display_name": f"bench {d}"} for d, k in keys.devices.items()
            ],
            "master_key": keys.master,
            "self_signing_key": keys.self_signing,
        }

    def add_media(self, content: bytes, content_type: str = "application/octet-stream") -> str:
        """Media this server serves at `/media/download/{mediaId}` (multipart/mixed, the bytes inline)."""
        media_id = uuid.uuid4().hex
        boundary = new_boundary()
        headers = {"Content-Type": content_type, "Content-Disposition": 'attachment; filename="bench.bin"'}
        self.media[media_id] = encode_multipart(boundary, {}, headers, content)
        return media_id

    def missing_events(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """spec: "/get_missing_events": the events before `latest_events` back to `earliest_events`,
        of those this server made (a target may ask when it handles PDUs out of order)."""
        earliest = set(body.get("earliest_events") or [])
        limit = min(int(body.get("limit") or 10), 100)
        found: dict[str, dict[str, Any]] = {}
        todo = [p for e in body.get("latest_events") or [] for p in self.events.get(e, {}).get("prev_events", [])]
        while todo and len(found) < limit:
            eid = todo.pop()
            if eid in earliest or eid in found or eid not in self.events:
                continue
            found[eid] = self.events[eid]
            todo.extend(found[eid]["prev_events"])
        return sorted(found.values(), key=lambda e: int(e["depth"]))

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.ca.server_context())
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.server_name = f"127.0.0.1:{port}"
        self.keys = OurKeys(self.server_name, self.key_id, self.key)
        self.client = FederationClient(
            self.server_name,
            self.key_id,
            self.key,
            DnsPython(),
            LruCache("well-known", 64),
            AddressPolicy(LOOPBACK_ALLOW),
            self.ca.client_context(),
        )

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.runner is not None:
            await self.runner.cleanup()

    async def request(self, destination: str, method: str, path: str, content: Any = None, timeout: float = 600) -> Any:
        assert self.client is not None
        return await self.client.request(destination, method, path, content=content, timeout=timeout)

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def sign(self, event: dict[str, Any], rv: RoomVersion) -> tuple[str, dict[str, Any]]:
        add_hashes_and_signatures(event, rv, self.server_name, self.key_id, self.key)
        eid = compute_event_id(event, rv)
        self.events[eid] = event
        return eid, event


@dataclass
class UserKeys:
    """A user's keys as their server publishes them: one device whose keys are signed by the device
    and by the user's self-signing key, a master key, and a self-signing key signed by the master."""

    devices: dict[str, dict[str, Any]]
    master: dict[str, Any]
    self_signing: dict[str, Any]

    @staticmethod
    def make(user_id: str, device_id: str) -> UserKeys:
        device_key, master_key, ssk_key = (nacl.signing.SigningKey.generate() for _ in range(3))
        master_pub, ssk_pub = encode_verify_key(master_key), encode_verify_key(ssk_key)
        master: dict[str, Any] = {
            "user_id": user_id,
            "usage": ["master"],
            "keys": {f"ed25519:{master_pub}": master_pub},
        }
        ssk: dict[str, Any] = {"user_id": user_id, "usage": ["self_signing"], "keys": {f"ed25519:{ssk_pub}": ssk_pub}}
        sign_json(ssk, user_id, f"ed25519:{master_pub}", master_key)
        device: dict[str, Any] = {
            "user_id": user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{device_id}": encode_verify_key(nacl.signing.SigningKey.generate()),
                f"ed25519:{device_id}": encode_verify_key(device_key),
            },
        }
        sign_json(device, user_id, f"ed25519:{device_id}", device_key)
        sign_json(device, user_id, f"ed25519:{ssk_pub}", ssk_key)
        sign_json(master, user_id, f"ed25519:{device_id}", device_key)
        return UserKeys({device_id: device}, master, ssk)


@dataclass
class RoomChain:
    """A room as a fake server sees it after joining: the auth events it needs and the newest event,
    which every PDU it makes builds on (one line, no forks)."""

    room_id: str
    rv: RoomVersion
    create: str | None  # None in rooms v12, where the create event is implied
    power_levels: str
    join_rules: str
    last: str
    depth: int
    members: dict[str, str] = field(default_factory=dict)  # user id -> their member event id

    def _auth(self, *extra: str) -> list[str]:
        return [e for e in (self.create, self.power_levels, *extra) if e]

    def build(
        self, fake: FakeServer, sender: str, event_type: str, content: dict[str, Any], **kw: Any
    ) -> dict[str, Any]:
        state_key = kw.get("state_key")
        auth = self._auth(self.join_rules) if event_type == "m.room.member" else self._auth(self.members[sender])
        event: dict[str, Any] = {
            "room_id": self.room_id,
            "sender": sender,
            "origin": fake.server_name,
            "origin_server_ts": fake.now(),
            "type": event_type,
            "content": content,
            "prev_events": [self.last],
            "auth_events": auth,
            "depth": self.depth + 1,
        }
        if state_key is not None:
            event["state_key"] = state_key
        eid, signed = fake.sign(event, self.rv)
        self.last, self.depth = eid, self.depth + 1
        if event_type == "m.room.member" and state_key is not None:
            self.members[state_key] = eid
        return signed

    def message(self, fake: FakeServer, sender: str, n: int) -> dict[str, Any]:
        return self.build(fake, sender, "m.room.message", {"msgtype": "m.text", "body": f"federated message {n}"})

    def join(self, fake: FakeServer, user_id: str) -> dict[str, Any]:
        content = {"membership": "join", "displayname": user_id.split(":")[0][1:]}
        return self.build(fake, user_id, "m.room.member", content, state_key=user_id)


async def remote_join(fake: FakeServer, target: str, room_id: str, user_id: str) -> RoomChain:
    """`make_join` then `send_join` v2 on `target`, as a joining server does; the room as it answers."""
    versions = sorted(KNOWN_ROOM_VERSIONS)
    answer = await fake.request(
        target,
        "GET",
        path_of("_matrix", "federation", "v1", "make_join", room_id, user_id, query={"ver": versions}),
    )
    rv = get_room_version(answer.get("room_version", "1"))
    template = answer["event"]
    template["origin"] = fake.server_name
    template["origin_server_ts"] = fake.now()
    eid, event = fake.sign(template, rv)
    sent = await fake.request(
        target, "PUT", path_of("_matrix", "federation", "v2", "send_join", room_id, eid), content=event
    )
    state = {(e["type"], e.get("state_key")): compute_event_id(e, rv) for e in sent["state"]}
    create_id = state[("m.room.create", "")]
    return RoomChain(
        room_id=room_id,
        rv=rv,
        create=create_id if create_id in template["auth_events"] else None,
        power_levels=state[("m.room.power_levels", "")],
        join_rules=state[("m.room.join_rules", "")],
        last=eid,
        depth=int(template["depth"]),
        members={user_id: eid},
    )


async def send_processed(
    fake: FakeServer, target: RunningServer, token: str, pdus: list[dict[str, Any]], rv: RoomVersion
) -> None:
    """One transaction, then wait until its last PDU in each room can be read by a local user.

    Synapse answers `/send` once the PDUs are staged and handles them in the background; with more
    than 100 staged in a room it prunes the queue and fetches the dropped events later with
    `/get_missing_events` and `/state_ids`, so a sender that only waited for the answers would measure
    that recovery path, not accepting PDUs. Both servers are driven the same way: the next
    transaction leaves once this one is in the room (ours answers after handling, so its first
    poll finds the events)."""
    await send_txn(fake, target.server_name, pdus)
    t0 = time.perf_counter()
    for room_id, eid in newest_per_room([pdus], rv).items():
        await wait_for_event(target, token, room_id, eid, t0)


async def send_txn(fake: FakeServer, target: str, pdus: list[dict[str, Any]]) -> None:
    """One transaction; every PDU must be accepted (an empty result)."""
    body = {"origin": fake.server_name, "origin_server_ts": fake.now(), "pdus": pdus, "edus": []}
    answer = await fake.request(target, "PUT", path_of("_matrix", "federation", "v1", "send", uuid.uuid4().hex), body)
    refused = {k: v for k, v in (answer.get("pdus") or {}).items() if v}
    if refused:
        first = next(iter(refused.items()))
        raise BenchError(f"{target} refused {len(refused)} of {len(pdus)} PDUs, e.g. {first}")


# -- HTTP helpers for the client API ---------------------------------------------------------------


async def client_call(
    session: aiohttp.ClientSession, server: RunningServer, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    url = server.base_url + "/_matrix/client/v3" + path
    async with session.request(method, url, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, await r.json(content_type=None)


async def client_ok(
    session: aiohttp.ClientSession, server: RunningServer, method: str, path: str, token: str, body: Any = None
) -> Any:
    status, answer = await client_call(session, server, method, path, token, body)
    if status != 200:
        raise BenchError(f"{server.kind} {method} {path} -> {status} {answer}")
    return answer


def room_path(room_id: str) -> str:
    return quote(room_id, safe=PATH_SAFE)


async def wait_for_event(
    server: RunningServer, token: str, room_id: str, event_id: str, t0: float, limit_s: float = 60.0
) -> float:
    """Poll the client API until `event_id` can be read (Synapse answers `/send` once the PDUs are
    staged and handles them afterwards, so the answer alone does not mean they are in the room);
    seconds since `t0`. The pause between polls is 5% of the time so far (5-200 ms): the poll adds at
    most ~5% to the time and little load."""
    conn = Connection(server.base_url, token)
    path = f"/rooms/{room_path(room_id)}/event/{quote(event_id, safe='')}"
    POLLS[0] += 1
    deadline = time.monotonic() + limit_s
    try:
        while True:
            status, answer = await conn.request("GET", path)
            if status == 200:
                return time.perf_counter() - t0
            if status != 404 or time.monotonic() > deadline:
                raise BenchError(f"{server.kind}: {event_id} never became readable: {status} {answer}")
            await asyncio.sleep(min(0.2, max(0.005, 0.05 * (time.perf_counter() - t0))))
            POLLS[0] += 1
    finally:
        conn.close()


# -- (a) inbound PDUs ------------------------------------------------------------------------------


async def inbound_pdus(
    target: RunningServer, ca: LoopbackCA, pdus: int, rooms: int, room_version: str
) -> dict[str, Any]:
    """PDUs/s and CPU per PDU for `pdus` messages into `rooms` rooms of `target`, 50 per transaction."""
    owner, token = register(target, "owner" + uuid.uuid4().hex[:6])
    fake = FakeServer(ca, "f_send")
    await fake.start()
    try:
        async with aiohttp.ClientSession() as session:
            chains = []
            for _ in range(rooms):
                body = {"preset": "public_chat", "room_version": room_version}
                made = await client_ok(session, target, "POST", "/createRoom", token, body)
                chains.append(await remote_join(fake, target.server_name, made["room_id"], fake.user("sender")))
        sender = fake.user("sender")
        # Sign everything first: the clock measures the target, not the making of PDUs.
        total = pdus + TXN_PDUS  # the first transaction is a warm-up (connection, keys, caches)
        batches = [
            [chains[(start + i) % rooms].message(fake, sender, start + i) for i in range(min(TXN_PDUS, total - start))]
            for start in range(0, total, TXN_PDUS)
        ]
        rv = chains[0].rv
        await send_processed(fake, target, token, batches[0], rv)
        polls0 = POLLS[0]
        cpu0 = cpu_seconds(target.pid)
        t0 = time.perf_counter()
        for batch in batches[1:]:
            await send_processed(fake, target, token, batch, rv)
        elapsed = time.perf_counter() - t0
        timed = sum(len(b) for b in batches[1:])
        return {
            "pdus_per_s": timed / elapsed,
            "cpu_ms_per_pdu": (cpu_seconds(target.pid) - cpu0) * 1000 / timed,
            "pdus": timed,
            "rooms": rooms,
            "room_version": chains[0].rv.identifier,
            "seconds": elapsed,
            "readability_polls": POLLS[0] - polls0,
            "owner": owner,
        }
    finally:
        await fake.stop()


def newest_per_room(batches: list[list[dict[str, Any]]], rv: RoomVersion) -> dict[str, str]:
    """The id of the last PDU of each room in `batches` (each room's PDUs form one line)."""
    newest = {}
    for batch in batches:
        for pdu in batch:
            newest[pdu["room_id"]] = pdu
    return {room_id: compute_event_id(pdu, rv) for room_id, pdu in newest.items()}


# -- (b) joining a big room ------------------------------------------------------------------------


@dataclass
class BigRoom:
    room_id: str
    members: int
    setup_s: float
    servers: int
    fakes: list[FakeServer]


async def build_big_room(host: RunningServer, ca: LoopbackCA, members: int, servers: int, room_version: str) -> BigRoom:
    """A public room on `host` with `members` remote members from `servers` fake servers: each fake
    joins its first user with make_join/send_join, the rest arrive as join PDUs in transactions of 50,
    one server after the other (each PDU on the previous one, so the room has no forks)."""
    _, token = register(host, "big" + uuid.uuid4().hex[:6])  # reads the room while it fills
    t0 = time.perf_counter()
    fakes = [FakeServer(ca, f"f_{i}") for i in range(servers)]
    for fake in fakes:
        await fake.start()
    async with aiohttp.ClientSession() as session:
        made = await client_ok(
            session,
            host,
            "POST",
            "/createRoom",
            token,
            {"preset": "public_chat", "name": "big", "room_version": room_version},
        )
    room_id = made["room_id"]
    chain: RoomChain | None = None
    for fake in fakes:
        joined = await remote_join(fake, host.server_name, room_id, fake.user("m0"))
        if chain is None:
            chain = joined
        else:  # the newest event is this server's join; the auth events are the same
            chain.last, chain.depth = joined.last, joined.depth
            chain.members.update(joined.members)
    assert chain is not None
    per_server = [members // servers + (1 if i < members % servers else 0) for i in range(servers)]
    pending = {i: list(range(1, per_server[i])) for i in range(servers)}
    while any(pending.values()):
        for i, fake in enumerate(fakes):
            take, pending[i] = pending[i][:TXN_PDUS], pending[i][TXN_PDUS:]
            if take:
                joins = [chain.join(fake, fake.user(f"m{n}")) for n in take]
                await send_processed(fake, host, token, joins, chain.rv)
    # The host answers each joiner from the same warm state: ask it once for the full state first.
    await fakes[0].request(
        host.server_name,
        "GET",
        path_of("_matrix", "federation", "v1", "state", room_id, query={"event_id": chain.last}),
    )
    return BigRoom(room_id, members, time.perf_counter() - t0, servers, fakes)


def peak_rss_reset(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of a process we started (Linux: clear_refs 5)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise BenchError(f"no VmHWM for pid {pid}")


async def wait_in_sync(conn: Connection, since: str, room_id: str, t0: float, deadline: float) -> float:
    """Long-poll /sync until `room_id` is under rooms.join; seconds since `t0`."""
    while time.monotonic() < deadline:
        answer = await conn.sync(since, timeout_ms=10_000)
        since = answer["next_batch"]
        if room_id in answer.get("rooms", {}).get("join", {}):
            return time.perf_counter() - t0
    raise BenchError(f"{room_id} never reached /sync")


async def join_big_room(joiner: RunningServer, room: BigRoom, host: RunningServer, limit_s: float) -> dict[str, Any]:
    """Join `room` from `joiner` through its client API; times, RSS before and peak during."""
    _, token = register(joiner, "joiner" + uuid.uuid4().hex[:6])
    out: dict[str, Any] = {"rss_before_mib": rss_kib(joiner.pid) / 1024}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=limit_s)) as session:
        since_plain = (await client_ok(session, joiner, "GET", "/sync?timeout=0", token))["next_batch"]
        lazy_filter = quote(json.dumps({"room": {"state": {"lazy_load_members": True}}}), safe="")
        since_lazy = (await client_ok(session, joiner, "GET", f"/sync?timeout=0&filter={lazy_filter}", token))[
            "next_batch"
        ]
        plain, lazy = Connection(joiner.base_url, token), Connection(joiner.base_url, token)
        peak_reset = peak_rss_reset(joiner.pid)
        cpu0 = cpu_seconds(joiner.pid)
        t0 = time.perf_counter()
        deadline = time.monotonic() + limit_s
        plain_task = asyncio.create_task(wait_in_sync(plain, since_plain, room.room_id, t0, deadline))
        lazy_task = asyncio.create_task(
            wait_in_sync(_FilteredSync(lazy, lazy_filter), since_lazy, room.room_id, t0, deadline)  # type: ignore[arg-type]
        )
        via = quote(host.server_name, safe="")
        status, answer = await client_call(
            session, joiner, "POST", f"/join/{room_path(room.room_id)}?via={via}&server_name={via}", token, {}
        )
        out["join_call_s"] = time.perf_counter() - t0
        out["join_status"] = status
        if status != 200:
            for task in (plain_task, lazy_task):
                task.cancel()
            out["refused"] = answer
            out["log_tail"] = joiner.log_tail()
            plain.close()
            lazy.close()
            return out
        try:
            out["in_sync_s"] = await plain_task
            out["in_lazy_sync_s"] = await lazy_task
        finally:
            plain.close()
            lazy.close()
        out["cpu_s"] = cpu_seconds(joiner.pid) - cpu0
        if peak_reset:
            out["peak_rss_mib"] = vm_hwm_kib(joiner.pid) / 1024
        out["rss_after_mib"] = rss_kib(joiner.pid) / 1024
        state = await client_ok(session, joiner, "GET", f"/rooms/{room_path(room.room_id)}/joined_members", token)
        out["joined_members_seen"] = len(state.get("joined", {}))
    return out


class _FilteredSync:
    """A `Connection` whose /sync carries a filter (the lazy-loading one)."""

    def __init__(self, conn: Connection, filter_param: str) -> None:
        self.conn = conn
        self.filter_param = filter_param

    async def sync(self, since: str, timeout_ms: int) -> Any:
        path = f"/sync?timeout={timeout_ms}&filter={self.filter_param}&since={quote(since, safe='')}"
        status, answer = await self.conn.request("GET", path, timeout=timeout_ms / 1000 + 30)
        if status != 200:
            raise BenchError(f"GET /sync -> {status} {answer}")
        return answer


# -- (c) latency across servers --------------------------------------------------------------------


async def cross_latency(ours: RunningServer, synapse: RunningServer, rounds: int, room_version: str) -> dict[str, Any]:
    """Send -> waiting /sync across the servers, both ways, and on each server alone (a second local
    user in the same room), the baseline each direction's figure contains part of."""
    _alice, alice_token = register(ours, "alice" + uuid.uuid4().hex[:6])
    carol, carol_token = register(ours, "carol" + uuid.uuid4().hex[:6])
    bob, bob_token = register(synapse, "bob" + uuid.uuid4().hex[:6])
    dave, dave_token = register(synapse, "dave" + uuid.uuid4().hex[:6])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        body = {"preset": "public_chat", "room_version": room_version}
        made = await client_ok(session, ours, "POST", "/createRoom", alice_token, body)
        room_id = made["room_id"]
        via = quote(ours.server_name, safe="")
        for token in (bob_token, dave_token):
            join = f"/join/{room_path(room_id)}?server_name={via}&via={via}"
            await client_ok(session, synapse, "POST", join, token, {})
        await client_ok(session, ours, "POST", f"/join/{room_path(room_id)}", carol_token, {})
        # Both sides see all four members before timing starts.
        for server, token in ((ours, alice_token), (synapse, bob_token)):
            deadline = time.monotonic() + 60
            while True:
                path = f"/rooms/{room_path(room_id)}/joined_members"
                joined = (await client_ok(session, server, "GET", path, token)).get("joined", {})
                if {bob, carol, dave} <= set(joined):
                    break
                if time.monotonic() > deadline:
                    raise BenchError(f"{server.kind} never saw every member join")
                await asyncio.sleep(0.05)
    out: dict[str, Any] = {"room_id": room_id}
    for label, (src, src_token), (dst, dst_token) in (
        ("ours_to_synapse", (ours, alice_token), (synapse, bob_token)),
        ("synapse_to_ours", (synapse, bob_token), (ours, alice_token)),
        ("ours_alone", (ours, carol_token), (ours, alice_token)),
        ("synapse_alone", (synapse, dave_token), (synapse, bob_token)),
    ):
        latencies = await wakeups(src, src_token, dst, dst_token, room_id, rounds)
        out[label] = {
            "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000,
            "rounds": len(latencies),
        }
    return out


async def wakeups(
    src: RunningServer, src_token: str, dst: RunningServer, dst_token: str, room_id: str, rounds: int
) -> list[float]:
    syncing, sending = Connection(dst.base_url, dst_token), Connection(src.base_url, src_token)
    since = await _first_since(syncing)
    latencies: list[float] = []
    for i in range(rounds + 1):  # the first round warms the path up and is not counted
        poll = asyncio.create_task(syncing.sync(since, timeout_ms=30_000))
        await asyncio.sleep(0.05)  # let the long poll park
        if poll.done():
            since = (await poll)["next_batch"]
            continue
        t0 = time.perf_counter()
        event_id = await sending.send(room_id, f"across {i}")
        deadline = time.monotonic() + 60
        while True:
            answer = await poll
            since = answer["next_batch"]
            timeline = answer.get("rooms", {}).get("join", {}).get(room_id, {}).get("timeline", {}).get("events", [])
            if any(e.get("event_id") == event_id for e in timeline):
                if i:
                    latencies.append(time.perf_counter() - t0)
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{dst.kind}'s /sync never delivered {event_id}")
            poll = asyncio.create_task(syncing.sync(since, timeout_ms=30_000))
    syncing.close()
    sending.close()
    return latencies


async def _first_since(conn: Connection) -> str:
    status, answer = await conn.request("GET", "/sync?timeout=0")
    if status != 200:
        raise BenchError(f"GET /sync -> {status} {answer}")
    return str(answer["next_batch"])


# -- (d) /keys/query for remote users -----------------------------------------------------------


async def keys_query(session: aiohttp.ClientSession, server: RunningServer, token: str, users: list[str]) -> float:
    """One `POST /keys/query` for every device of `users`; seconds. The answer must hold each user's
    device, master and self-signing keys, and no failures."""
    body = {"device_keys": {u: [] for u in users}, "timeout": 60_000}
    t0 = time.perf_counter()
    answer = await client_ok(session, server, "POST", "/keys/query", token, body)
    elapsed = time.perf_counter() - t0
    if answer.get("failures"):
        raise BenchError(f"{server.kind} /keys/query failures: {json.dumps(answer['failures'])[:500]}")
    for field_name in ("device_keys", "master_keys", "self_signing_keys"):
        got = answer.get(field_name) or {}
        missing = [u for u in users if not got.get(u)]
        if missing:
            raise BenchError(f"{server.kind} /keys/query: no {field_name} for {len(missing)} users, e.g. {missing[0]}")
    for u in users:
        device_id = "DEV" + u.split(":")[0][1:].upper()
        if device_id not in answer["device_keys"][u]:
            raise BenchError(f"{server.kind} /keys/query: {u} without device {device_id}")
    return elapsed


async def remote_keys(
    target: RunningServer, ca: LoopbackCA, users: int, servers: int, repeats: int, room_version: str
) -> dict[str, Any]:
    """`users` remote users spread over `servers` fake servers, all joined to a room of a local user
    of `target` (so `target` tracks their device lists), and as many again who share no room with it.
    Times `/keys/query` for all of the first set: the first call (cold: nothing cached, every
    server asked in parallel) and then `repeats` more (warm: the device lists of users who share a
    room may be cached); and `repeats` calls for the second set (nobody caches those: every call
    asks the servers). Every answer must hold all users' keys."""
    _, token = register(target, "keys" + uuid.uuid4().hex[:6])
    fakes = [FakeServer(ca, f"f_keys{i}") for i in range(servers)]
    for fake in fakes:
        await fake.start()
    try:
        per = [users // servers + (1 if i < users % servers else 0) for i in range(servers)]
        tracked = [fake.add_user_keys(f"t{n}") for fake, count in zip(fakes, per, strict=True) for n in range(count)]
        untracked = [fake.add_user_keys(f"u{n}") for fake, count in zip(fakes, per, strict=True) for n in range(count)]
        t_setup = time.perf_counter()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
            body = {"preset": "public_chat", "room_version": room_version}
            room_id = (await client_ok(session, target, "POST", "/createRoom", token, body))["room_id"]
            chain: RoomChain | None = None
            for fake in fakes:
                joined = await remote_join(fake, target.server_name, room_id, fake.user("t0"))
                if chain is None:
                    chain = joined
                else:
                    chain.last, chain.depth = joined.last, joined.depth
                    chain.members.update(joined.members)
            assert chain is not None
            for fake, count in zip(fakes, per, strict=True):
                names = list(range(1, count))
                for start in range(0, len(names), TXN_PDUS):
                    joins = [chain.join(fake, fake.user(f"t{n}")) for n in names[start : start + TXN_PDUS]]
                    await send_processed(fake, target, token, joins, chain.rv)
            path = f"/rooms/{room_path(room_id)}/joined_members"
            joined_count = len((await client_ok(session, target, "GET", path, token)).get("joined", {}))
            if joined_count != users + 1:
                raise BenchError(f"{target.kind}: {joined_count} members in the room, not {users + 1}")
            setup_s = time.perf_counter() - t_setup
            served0 = [dict(f.served) for f in fakes]
            cpu0 = cpu_seconds(target.pid)
            cold = await keys_query(session, target, token, tracked)
            cpu_cold = cpu_seconds(target.pid) - cpu0
            served_cold = [_served_since(f, s) for f, s in zip(fakes, served0, strict=True)]
            served_warm0 = [dict(f.served) for f in fakes]
            cpu0 = cpu_seconds(target.pid)
            warm = [await keys_query(session, target, token, tracked) for _ in range(repeats)]
            cpu_warm = (cpu_seconds(target.pid) - cpu0) / repeats
            served_warm = [_served_since(f, s) for f, s in zip(fakes, served_warm0, strict=True)]
            served1 = [dict(f.served) for f in fakes]
            cpu0 = cpu_seconds(target.pid)
            untracked_times = [await keys_query(session, target, token, untracked) for _ in range(repeats)]
            cpu_untracked = (cpu_seconds(target.pid) - cpu0) / repeats
            served_untracked = [_served_since(f, s) for f, s in zip(fakes, served1, strict=True)]
        return {
            "users": users,
            "servers": servers,
            "setup_s": setup_s,
            "cold_s": cold,
            "cold_cpu_s": cpu_cold,
            "warm_s": statistics.median(warm),
            "warm_cpu_s": cpu_warm,
            "warm_all_s": warm,
            "untracked_s": statistics.median(untracked_times),
            "untracked_cpu_s": cpu_untracked,
            "untracked_all_s": untracked_times,
            "requests_cold": _sum_served(served_cold),
            "requests_warm": _sum_served(served_warm),
            "requests_untracked_per_call": {k: v / repeats for k, v in _sum_served(served_untracked).items()},
        }
    finally:
        for fake in fakes:
            await fake.stop()


def _served_since(fake: FakeServer, before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in fake.served.items() if v - before.get(k, 0)}


def _sum_served(served: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for one in served:
        for k, v in one.items():
            total[k] = total.get(k, 0) + v
    return total


# -- (e) remote media ----------------------------------------------------------------------------


async def download(
    session: aiohttp.ClientSession, server: RunningServer, token: str, origin: str, media_id: str
) -> tuple[float, bytes]:
    url = f"{server.base_url}/_matrix/client/v1/media/download/{quote(origin, safe='')}/{media_id}"
    t0 = time.perf_counter()
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as r:
        body = await r.read()
        if r.status != 200:
            raise BenchError(f"{server.kind} GET {url} -> {r.status} {body[:300]!r}")
    return time.perf_counter() - t0, body


async def remote_media(target: RunningServer, ca: LoopbackCA, size: int, repeats: int) -> dict[str, Any]:
    """A `size`-byte file on a fake origin, downloaded by a local user of `target` through
    `/_matrix/client/v1/media/download/{origin}/{mediaId}`: the first download (cold: `target`
    fetches it over federation, multipart/mixed) and `repeats` more (warm: from its cache). The
    bytes must be the origin's. Also `target`'s peak RSS (VmHWM) during the cold download."""
    _, token = register(target, "media" + uuid.uuid4().hex[:6])
    fake = FakeServer(ca, "f_media")
    await fake.start()
    try:
        content = os.urandom(size)
        warmup_id, media_id = fake.add_media(b"warm-up"), fake.add_media(content)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as session:
            await download(session, target, token, fake.server_name, warmup_id)  # connection, origin's name
            rss_before = rss_kib(target.pid) / 1024
            peak_reset = peak_rss_reset(target.pid)
            cpu0 = cpu_seconds(target.pid)
            cold, body = await download(session, target, token, fake.server_name, media_id)
            cpu_cold = cpu_seconds(target.pid) - cpu0
            if body != content:
                raise BenchError(f"{target.kind}: the downloaded media differs from the origin's ({len(body)} bytes)")
            peak = vm_hwm_kib(target.pid) / 1024 if peak_reset else None
            warm = []
            cpu0 = cpu_seconds(target.pid)
            for _ in range(repeats):
                seconds, body = await download(session, target, token, fake.server_name, media_id)
                if body != content:
                    raise BenchError(f"{target.kind}: the cached media differs from the origin's")
                warm.append(seconds)
            cpu_warm = (cpu_seconds(target.pid) - cpu0) / repeats
        if fake.served.get("media_download") != 2:
            raise BenchError(f"{target.kind} asked the origin {fake.served} times, not once per media")
        mb = size / 1_000_000
        return {
            "bytes": size,
            "cold_s": cold,
            "cold_mb_s": mb / cold,
            "cold_cpu_s": cpu_cold,
            "warm_cpu_s": cpu_warm,
            "warm_s": statistics.median(warm),
            "warm_mb_s": mb / statistics.median(warm),
            "warm_all_s": warm,
            "rss_before_mib": rss_before,
            "peak_rss_mib": peak,
        }
    finally:
        await fake.stop()


# -- servers and the run ---------------------------------------------------------------------------


def synapse_python() -> Path:
    """Synapse's interpreter: the test venv (`scripts/setup-synapse`), else the bench venv."""
    for candidate in (SYNAPSE_PYTHON, REPO_ROOT / "bench" / ".venv" / "bin" / "python"):
        if candidate.exists():
            return candidate
    raise BenchError("no Synapse: run `bash scripts/setup-synapse` (or `bash bench/setup.sh`)")


def start_ours(data_dir: Path, ca: LoopbackCA) -> RunningServer:
    return start_homeserver_peer(data_dir, ca, presence=False, password_hash_cost="low")


def start_synapse(data_dir: Path, ca: LoopbackCA) -> RunningServer:
    return start_synapse_peer(
        data_dir, ca, python=synapse_python(), log_level="WARNING", presence=False, overrides=SYNAPSE_OVERRIDES
    )


def synapse_version(python: Path) -> str:
    import subprocess

    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('matrix-synapse'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() or "?"


async def run(args: argparse.Namespace, tmp: Path, log: Any) -> dict[str, Any]:
    ca = LoopbackCA(tmp / "ca")
    servers: dict[str, RunningServer] = {}
    out: dict[str, Any] = {
        "inbound": {},
        "inbound_rooms": {},
        "big_room": [],
        "latency": None,
        "keys": {},
        "media": {},
    }
    parts = args.only

    def say(text: str) -> None:
        print(text, file=log, flush=True)

    try:
        say("starting our server and Synapse ...")
        servers["ours"] = start_ours(tmp / "ours", ca)
        servers["synapse"] = start_synapse(tmp / "synapse", ca)
        if args.members and "join" in parts:
            servers["synapse2"] = start_synapse(tmp / "synapse2", ca)
        ours, syn = servers["ours"], servers["synapse"]
        for label, target in (("homeserver", ours), ("synapse", syn)) if "inbound" in parts else ():
            say(f"(a) {args.pdus} PDUs into one room of {label} ...")
            out["inbound"][label] = await inbound_pdus(target, ca, args.pdus, 1, args.room_version)
            say(f"(a) {args.pdus} PDUs over {args.rooms} rooms of {label} ...")
            out["inbound_rooms"][label] = await inbound_pdus(target, ca, args.pdus, args.rooms, args.room_version)
        if "latency" in parts:
            say(f"(c) latency across servers, {args.wakeups} rounds each way ...")
            out["latency"] = await cross_latency(ours, syn, args.wakeups, args.room_version)
        for label, target in (("homeserver", ours), ("synapse", syn)) if "keys" in parts else ():
            rounds = []
            for n in range(args.rounds):
                say(
                    f"(d) /keys/query of {args.key_users} remote users on {args.key_servers} servers, "
                    f"{label}, round {n + 1} ..."
                )
                rounds.append(
                    await remote_keys(target, ca, args.key_users, args.key_servers, args.repeats, args.room_version)
                )
                r = rounds[-1]
                say(
                    f"    setup {r['setup_s']:.1f} s; cold {r['cold_s'] * 1000:.0f} ms, warm "
                    f"{r['warm_s'] * 1000:.0f} ms, untracked {r['untracked_s'] * 1000:.0f} ms; "
                    f"origin requests cold {r['requests_cold']}, warm {r['requests_warm']}, "
                    f"untracked {r['requests_untracked_per_call']}"
                )
            out["keys"][label] = _medians(rounds)
        for label, target in (("homeserver", ours), ("synapse", syn)) if "media" in parts else ():
            rounds = []
            for n in range(args.rounds):
                say(f"(e) a {args.media_mb} MB remote file through {label}, round {n + 1} ...")
                rounds.append(await remote_media(target, ca, int(args.media_mb * 1_000_000), args.repeats))
                r = rounds[-1]
                say(
                    f"    cold {r['cold_mb_s']:.1f} MB/s, warm {r['warm_mb_s']:.1f} MB/s, "
                    f"peak RSS {r['peak_rss_mib'] or 0:.1f} MiB (before {r['rss_before_mib']:.1f})"
                )
            out["media"][label] = _medians(rounds)
        for members in args.members if "join" in parts else ():
            say(f"(b) a Synapse room with {members} members from {args.member_servers} fake servers ...")
            room = await build_big_room(syn, ca, members, args.member_servers, args.room_version)
            say(f"    setup took {room.setup_s:.1f} s; Synapse joins it ...")
            try:
                entry: dict[str, Any] = {"members": members, "servers": args.member_servers, "setup_s": room.setup_s}
                entry["synapse"] = await join_big_room(servers["synapse2"], room, syn, args.join_limit)
                say("    our server joins it ...")
                entry["homeserver"] = await join_big_room(ours, room, syn, args.join_limit)
                if entry["homeserver"].get("join_status") != 200:
                    say(f"    our join was refused; our log ends:\n{entry['homeserver'].get('log_tail')}")
                out["big_room"].append(entry)
            finally:
                for fake in room.fakes:
                    await fake.stop()
    except Exception as e:
        tails = "\n".join(f"--- {k} log ---\n{s.log_tail()}" for k, s in servers.items())
        raise BenchError(f"{e}\n{tails}") from e
    finally:
        for server in servers.values():
            server.stop()
    return out


def _medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number's median over the rounds (the rounds themselves kept under `rounds`)."""
    out: dict[str, Any] = {"rounds": rounds}
    for key, value in rounds[0].items():
        if isinstance(value, int | float) and value is not None:
            out[key] = statistics.median(r[key] for r in rounds)
        elif key not in out:
            out[key] = value
    return out


def _ratio(ours: float | None, theirs: float | None, higher_better: bool) -> float | None:
    if not ours or not theirs:
        return None
    return ours / theirs if higher_better else theirs / ours


def rows_of(out: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(label: str, unit: str, ours: Any, theirs: Any, higher: bool) -> None:
        rows.append(
            {
                "label": label,
                "unit": unit,
                "homeserver": ours,
                "synapse": theirs,
                "ratio": _ratio(ours, theirs, higher) if isinstance(ours, float | int) else None,
            }
        )

    for key, label in (("inbound", "one room"), ("inbound_rooms", f"{args.rooms} rooms")):
        res = out[key]
        if not res:
            continue
        add(
            f"(a) PDUs/s via /send, {label}",
            "PDU/s",
            res["homeserver"]["pdus_per_s"],
            res["synapse"]["pdus_per_s"],
            True,
        )
        add(
            "    server CPU per PDU",
            "ms",
            res["homeserver"]["cpu_ms_per_pdu"],
            res["synapse"]["cpu_ms_per_pdu"],
            False,
        )
    for entry in out["big_room"]:
        m = f"{entry['members']:,}"
        ours, theirs = entry["homeserver"], entry["synapse"]
        if ours.get("join_status") != 200:
            ours_text = f"refused: {ours.get('join_status')} {json.dumps(ours.get('refused'))[:300]}"
            add(f"(b) join {m}-member room: /join answer", "s", ours_text, theirs["join_call_s"], False)
            add("    time until in /sync", "s", "-", theirs.get("in_sync_s"), False)
            add("    time until in lazy-loading /sync", "s", "-", theirs.get("in_lazy_sync_s"), False)
            add("    joiner peak RSS during the join", "MiB", "-", theirs.get("peak_rss_mib"), False)
            add("    joiner RSS before the join", "MiB", ours["rss_before_mib"], theirs["rss_before_mib"], False)
            continue
        add(f"(b) join {m}-member room: /join answer", "s", ours["join_call_s"], theirs["join_call_s"], False)
        add("    time until in /sync", "s", ours["in_sync_s"], theirs["in_sync_s"], False)
        add("    time until in lazy-loading /sync", "s", ours["in_lazy_sync_s"], theirs["in_lazy_sync_s"], False)
        add("    joiner CPU for the join", "s", ours["cpu_s"], theirs["cpu_s"], False)
        add("    joiner peak RSS during the join", "MiB", ours.get("peak_rss_mib"), theirs.get("peak_rss_mib"), False)
        add("    joiner RSS before the join", "MiB", ours["rss_before_mib"], theirs["rss_before_mib"], False)
    lat = out["latency"]
    if lat is not None:
        _latency_rows(add, lat)
    keys = out["keys"]
    if keys:
        ours, theirs = keys["homeserver"], keys["synapse"]
        n = f"{ours['users']} users on {ours['servers']} servers"
        add(f"(d) /keys/query, {n}: cold", "ms", ours["cold_s"] * 1000, theirs["cold_s"] * 1000, False)
        add("    warm (device lists tracked)", "ms", ours["warm_s"] * 1000, theirs["warm_s"] * 1000, False)
        add(
            "    sharing no room (asked every time)",
            "ms",
            ours["untracked_s"] * 1000,
            theirs["untracked_s"] * 1000,
            False,
        )
        for key, label in (("cold", "cold"), ("warm", "warm"), ("untracked", "sharing no room")):
            cpu = f"{key}_cpu_s"
            add(f"    server CPU per call, {label}", "ms", ours[cpu] * 1000, theirs[cpu] * 1000, False)
    media = out["media"]
    if media:
        ours, theirs = media["homeserver"], media["synapse"]
        mb = f"{ours['bytes'] / 1_000_000:g} MB"
        add(f"(e) remote media, {mb}: cold", "MB/s", ours["cold_mb_s"], theirs["cold_mb_s"], True)
        add("    warm (cached)", "MB/s", ours["warm_mb_s"], theirs["warm_mb_s"], True)
        add("    server CPU, cold download", "ms", ours["cold_cpu_s"] * 1000, theirs["cold_cpu_s"] * 1000, False)
        add("    server CPU per warm download", "ms", ours["warm_cpu_s"] * 1000, theirs["warm_cpu_s"] * 1000, False)
        add("    peak RSS during the cold download", "MiB", ours.get("peak_rss_mib"), theirs.get("peak_rss_mib"), False)
        add("    RSS before it", "MiB", ours["rss_before_mib"], theirs["rss_before_mib"], False)
    return rows


def _latency_rows(add: Any, lat: dict[str, Any]) -> None:
    # (c) has one value per direction: "ours" is the direction that ends at our server's /sync.
    add(
        "(c) send -> other side's /sync, p50",
        "ms",
        lat["synapse_to_ours"]["p50_ms"],
        lat["ours_to_synapse"]["p50_ms"],
        False,
    )
    add("    p99", "ms", lat["synapse_to_ours"]["p99_ms"], lat["ours_to_synapse"]["p99_ms"], False)
    add("(c) the same on one server, p50", "ms", lat["ours_alone"]["p50_ms"], lat["synapse_alone"]["p50_ms"], False)
    add("    p99", "ms", lat["ours_alone"]["p99_ms"], lat["synapse_alone"]["p99_ms"], False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}" if abs(value) < 10 else f"{value:,.1f}"


def print_table(report: dict[str, Any]) -> None:
    head = f"{'metric':<40} {'unit':>5} {'homeserver':>12} {'synapse':>12} {'ratio':>8}"
    print(head)
    print("-" * len(head))
    for row in report["rows"]:
        ours = _cell(row["homeserver"])
        if len(ours) > 12:  # a refusal: print it on its own line
            print(f"{row['label']:<40} {row['unit']:>5} {'(see below)':>12} {_cell(row['synapse']):>12} {'-':>8}")
            print(f"      ours: {ours}")
            continue
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] else "-"
        print(f"{row['label']:<40} {row['unit']:>5} {ours:>12} {_cell(row['synapse']):>12} {ratio:>8}")
    meta = report["meta"]
    print(
        f"\nratio: how many times better ours is (>1 = ours better). Synapse {meta['synapse_version']}, "
        f"room version {meta['room_version']}, parts: {','.join(meta['only'])}."
    )
    if report["raw"]["inbound"]:
        print(f"(a): {meta['pdus']} PDUs per run in transactions of {TXN_PDUS}, one in flight.")
    if report["raw"]["big_room"]:
        print(
            "(b): the host is a Synapse in both cases; the Synapse joiner asks for a partial-state join "
            "(omit_members) as Synapse does by default, so its /join answers before the room's member list "
            "has arrived; its plain /sync shows the room once the full state has been synced."
        )
    for entry in report["raw"]["big_room"]:
        print(
            f"(b) setup of the {entry['members']:,}-member room (create, {entry['servers']} fake servers' "
            f"make_join/send_join, the other joins over /send): {entry['setup_s']:.1f} s"
        )
    if report["raw"]["latency"] is not None:
        print(
            "(c): 'homeserver' = a send on Synapse until our waiting /sync has it; 'synapse' = a send on ours "
            "until Synapse's waiting /sync has it (the room lives on our server); 'the same on one server': "
            "two local users of each server in that room."
        )
    if report["raw"]["keys"]:
        for label, res in report["raw"]["keys"].items():
            print(
                f"(d) {label}: medians of {len(res['rounds'])} rounds (warm and untracked: median of "
                f"{meta['repeats']} calls per round); room setup {res['setup_s']:.1f} s; requests to the remote "
                f"servers for the cold call: {res['requests_cold']}, for {meta['repeats']} warm calls: "
                f"{res['requests_warm']}, per untracked call: "
                f"{res['requests_untracked_per_call']}"
            )
    if report["raw"]["media"]:
        print(
            f"(e): medians of {meta['rounds']} rounds, each a new media id (warm: median of {meta['repeats']} "
            "downloads); MB = 10^6 bytes; the bytes are checked against the origin's."
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON (to stdout: no table)")
    parser.add_argument("--pdus", type=int, default=2000, help="(a) PDUs sent per run (plus a warm-up transaction)")
    parser.add_argument("--rooms", type=int, default=5, help="(a) rooms of the parallel variant")
    parser.add_argument("--members", default="1000", help="(b) member counts, comma-separated; 0 skips (b)")
    parser.add_argument("--member-servers", type=int, default=10, help="(b) fake servers the members come from")
    parser.add_argument("--join-limit", type=float, default=900.0, help="(b) seconds a join may take")
    parser.add_argument("--wakeups", type=int, default=100, help="(c) rounds in each direction")
    parser.add_argument("--room-version", default="12", help="of every room made (Synapse's default: 12)")
    parser.add_argument("--key-users", type=int, default=200, help="(d) remote users asked for")
    parser.add_argument("--key-servers", type=int, default=2, help="(d) fake servers they live on")
    parser.add_argument("--media-mb", type=float, default=10, help="(e) size of the remote file, in MB (10^6 bytes)")
    parser.add_argument("--rounds", type=int, default=3, help="(d), (e) rounds, each with new remote data (median)")
    parser.add_argument("--repeats", type=int, default=10, help="(d), (e) warm calls per round (median)")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"parts to run, comma-separated, of {','.join(PARTS)} (or their letters a-e); default: all",
    )
    parser.add_argument("--quick", action="store_true", help="a small workload, to try the script out")
    args = parser.parse_args(argv)
    args.members = [int(m) for m in args.members.split(",") if int(m) > 0]
    letters = dict(zip("abcde", PARTS, strict=True))
    args.only = [letters.get(p.strip(), p.strip()) for p in args.only.split(",") if p.strip()]
    unknown = [p for p in args.only if p not in PARTS]
    if unknown:
        parser.error(f"--only: unknown part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    if args.quick:
        args.pdus, args.rooms, args.wakeups, args.member_servers = 200, 3, 10, 3
        args.members = [100] if args.members else []
        args.key_users, args.media_mb, args.rounds = 20, 1, 1
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    log = sys.stderr if args.json == "-" else sys.stdout
    compile_bytecode(REPO_ROOT)
    with tempfile.TemporaryDirectory(prefix="bench-federation-") as tmp:
        raw = asyncio.run(run(args, Path(tmp), log))
    report = {
        "rows": rows_of(raw, args),
        "raw": raw,
        "meta": {
            "synapse_version": synapse_version(synapse_python()),
            "pdus": args.pdus,
            "rooms": args.rooms,
            "members": args.members,
            "member_servers": args.member_servers,
            "wakeups": args.wakeups,
            "room_version": args.room_version,
            "only": args.only,
            "key_users": args.key_users,
            "key_servers": args.key_servers,
            "media_mb": args.media_mb,
            "rounds": args.rounds,
            "repeats": args.repeats,
            "cpus": os.cpu_count(),
        },
    }
    if args.json:
        text = json.dumps(report, indent=2)
        if args.json == "-":
            print(text)
            return 0
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
