"""Test helpers: a local server on a temporary store, and other "servers" that craft signed PDUs.

A `RemoteServer` builds events the way another homeserver would (hashes, signature with its own
key, event ids per room version) from the protocol functions; it reads what it needs to refer to
(prev/auth events and the state after them) from the local store, as if it shared the room's DAG.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing

from homeserver.protocol import unpadded_base64
from homeserver.protocol.auth_rules import auth_types_for_event
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.event_ids import new_v1_event_id
from homeserver.protocol.event_signing import add_hashes_and_signatures
from homeserver.protocol.hashes import reference_hash
from homeserver.protocol.room_versions import EventFormat, RoomVersion, get_room_version
from homeserver.protocol.signing import generate_signing_key
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.rooms.pipeline import EventPipeline, ServerIdentity
from storage.database import Database
from storage.events import EventMeta

LOCAL = "hs.test"


class Clock:
    """Milliseconds that never go back and never repeat, so that an event made later sorts later
    (state resolution v2 orders events of equal power by origin_server_ts)."""

    def __init__(self) -> None:
        self.last = 0

    def now(self) -> int:
        self.last = max(self.last + 1, int(time.time() * 1000))
        return self.last


@dataclass
class RemoteServer:
    name: str
    key_id: str = ""
    key: nacl.signing.SigningKey = field(default=None)  # type: ignore[assignment]
    clock: Clock = field(default_factory=lambda: Clock())

    def __post_init__(self) -> None:
        if self.key is None:
            self.key_id, self.key = generate_signing_key("remote")

    def sign(self, event: dict[str, Any], rv: RoomVersion) -> dict[str, Any]:
        add_hashes_and_signatures(event, rv, self.name, self.key_id, self.key)
        return event

    def build(
        self,
        local: Local,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        *,
        state_key: str | None = None,
        prev: Iterable[str],
        auth: Iterable[str] | None = None,
        depth: int | None = None,
        ts: int | None = None,
    ) -> dict[str, Any]:
        """A signed PDU. Without `auth`, auth events are selected from the state after the single prev."""
        rv = local.rv(room_id)
        prev = list(prev)
        event: dict[str, Any] = {
            "room_id": room_id,
            "sender": sender,
            "type": event_type,
            "content": content,
            "origin_server_ts": ts if ts is not None else self.clock.now(),
            "origin": self.name,
        }
        if state_key is not None:
            event["state_key"] = state_key
        if depth is None:
            depth = max((local.meta(p).depth for p in prev), default=0) + 1
        event["depth"] = depth
        if auth is None:
            assert len(prev) == 1, "give auth events explicitly for several prev events"
            state = local.state_after(prev[0])
            auth = [state[k] for k in auth_types_for_event(event, rv) if k in state]
        event["prev_events"] = [local.reference(p, rv) for p in prev]
        event["auth_events"] = [local.reference(a, rv) for a in auth]
        if rv.event_format is EventFormat.V1:
            event["event_id"] = new_v1_event_id(self.name)
        return self.sign(event, rv)


class Local:
    """The server under test: a store in a temporary folder and its pipeline."""

    def __init__(self, path: Path, *, server_name: str = LOCAL) -> None:
        self.path = path
        key_id, key = generate_signing_key("local")
        self.identity = ServerIdentity(server_name, key_id, key)
        self.clock = Clock()  # shared by the local server and every remote one
        self.db = Database(path)
        self.pipe = EventPipeline(self.db, self.identity, clock=self._seconds)
        self.remotes: dict[str, RemoteServer] = {}

    def _seconds(self) -> float:
        return (self.clock.now() + 0.5) / 1000  # the pipeline takes int(seconds * 1000): exactly now()

    def close(self) -> None:
        self.db.close()

    def reopen(self) -> None:
        self.db.close()
        self.db = Database(self.path)
        self.pipe = EventPipeline(self.db, self.identity, clock=self._seconds)

    def remote(self, name: str) -> RemoteServer:
        server = self.remotes.get(name)
        if server is None:
            server = self.remotes[name] = RemoteServer(name, clock=self.clock)
        return server

    async def keys(
        self, server: str, key_ids: list[str], valid_at: int | None = None
    ) -> Mapping[str, nacl.signing.VerifyKey]:
        await asyncio.sleep(0)  # a real lookup awaits: let other tasks run
        if server == self.identity.server_name:
            return {self.identity.key_id: self.identity.signing_key.verify_key}
        remote = self.remotes.get(server)
        return {remote.key_id: remote.key.verify_key} if remote is not None else {}

    # -- reading the store ---------------------------------------------------------------------

    def room_short(self, room_id: str) -> int:
        short = self.db.ids.room(room_id)
        assert short is not None
        return short

    @staticmethod
    def rv_of_version(version: str) -> RoomVersion:
        return get_room_version(version)

    def rv(self, room_id: str) -> RoomVersion:
        info = self.db.rooms.info(self.room_short(room_id))
        assert info is not None
        return get_room_version(info["version"])

    def short(self, event_id: str) -> int:
        short = self.db.ids.event(event_id)
        assert short is not None, event_id
        return short

    def meta(self, event_id: str) -> EventMeta:
        meta = self.db.events.get_meta(self.short(event_id))
        assert meta is not None
        return meta

    def event(self, event_id: str) -> dict[str, Any]:
        ev = self.db.events.get_json(self.short(event_id))
        assert ev is not None
        return ev

    def snapshot_ids(self, snapshot: int) -> dict[tuple[str, str], str]:
        if not snapshot:
            return {}
        ids = self.db.ids
        return {ids.state_key_of(sk): ids.event_id(ev) for sk, ev in self.db.snapshots.load(snapshot).items()}

    def state_after(self, event_id: str) -> dict[tuple[str, str], str]:
        return self.snapshot_ids(self.meta(event_id).state_after)

    def state_before(self, event_id: str) -> dict[tuple[str, str], str]:
        return self.snapshot_ids(self.meta(event_id).state_before)

    def current_state(self, room_id: str) -> dict[tuple[str, str], str]:
        """The room's current state from the `room_state` table."""
        ids = self.db.ids
        return {
            ids.state_key_of(sk): ids.event_id(ev)
            for sk, ev in self.db.rooms.current_state(self.room_short(room_id)).items()
        }

    def snapshot_state(self, room_id: str) -> dict[tuple[str, str], str]:
        """The room's current state from its snapshot in room_info."""
        info = self.db.rooms.info(self.room_short(room_id))
        assert info is not None
        return self.snapshot_ids(int(info["state"]))

    def extremities(self, room_id: str) -> set[str]:
        return {self.db.ids.event_id(s) for s in self.db.rooms.extremities(self.room_short(room_id))}

    def timeline(self, room_id: str) -> list[str]:
        return [self.db.ids.event_id(s) for _, s in self.db.rooms.timeline(self.room_short(room_id))]

    def members(self, room_id: str, membership: str) -> dict[str, str]:
        room = self.room_short(room_id)
        return {user: self.db.ids.event_id(ev) for user, ev in self.db.rooms.members(room, membership)}

    def reference(self, event_id: str, rv: RoomVersion) -> Any:
        if rv.event_format is EventFormat.V1:
            return [event_id, {"sha256": unpadded_base64.encode(reference_hash(self.event(event_id), rv))}]
        return event_id


def event_id_of(pdu: Mapping[str, Any], rv: RoomVersion) -> str:
    return compute_event_id(pdu, rv)


def dump(db: Database) -> dict[bytes, bytes]:
    """Every key and value in the store (to prove that nothing was written)."""
    return dict(db.store.db.iterator())


RESIDENT = "resident.test"
ALICE_R = f"@alice:{RESIDENT}"
CAROL_R = f"@carol:{RESIDENT}"
BOB_L = f"@bob:{LOCAL}"


def msg(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body}


def only(items: set[str]) -> str:
    assert len(items) == 1, items
    return next(iter(items))


class Pair:
    """Our server (`local`) and the resident server of the room (`resident`), each knowing the
    other's signing key, and `us`: our server as the resident sees it, to sign our events."""

    def __init__(self, tmp: Path) -> None:
        self.local = Local(tmp / "local")
        self.resident = Local(tmp / "resident", server_name=RESIDENT)
        ours = self.local.identity
        self.us = RemoteServer(LOCAL, ours.key_id, ours.signing_key, clock=self.resident.clock)
        self.resident.remotes[LOCAL] = self.us
        theirs = self.resident.identity
        self.local.remotes[RESIDENT] = RemoteServer(RESIDENT, theirs.key_id, theirs.signing_key, clock=self.local.clock)

    def close(self) -> None:
        self.local.close()
        self.resident.close()

    async def room(self, version: str) -> str:
        """A public room on the resident server with some history: a name, a second member, messages."""
        res = self.resident
        room_id = await create_room(res.pipe, RoomCreation(creator=ALICE_R, room_version=version, preset="public_chat"))
        await res.pipe.send(room_id, ALICE_R, "m.room.name", {"name": "Friends"}, "")
        await res.pipe.send(room_id, CAROL_R, "m.room.member", {"membership": "join"}, CAROL_R)
        for i in range(3):
            await res.pipe.send(room_id, CAROL_R, "m.room.message", msg(f"before the join {i}"))
        return room_id

    async def send_join(
        self, room_id: str, user: str = BOB_L
    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
        """Our join built on the resident's tip (make_join), accepted there (send_join), and what
        send_join answers: the join, the state before it and that state's auth chain."""
        res = self.resident
        join = self.us.build(
            res,
            room_id,
            user,
            "m.room.member",
            {"membership": "join"},
            state_key=user,
            prev=[only(res.extremities(room_id))],
        )
        accepted = await res.pipe.receive(copy.deepcopy(join), res.keys)
        assert accepted.rejected is None
        state_ids = res.state_before(accepted.event_id).values()
        chain: set[int] = set()
        for eid in [*state_ids, *(join["auth_events"] if isinstance(join["auth_events"][0], str) else [])]:
            short = res.short(eid)
            chain.update(res.db.events.auth_chain(short) or ())
        state = [copy.deepcopy(res.event(e)) for e in state_ids]
        auth_chain = [copy.deepcopy(res.db.events.get_json(s)) for s in sorted(chain)]
        return join, state, [e for e in auth_chain if e is not None]
