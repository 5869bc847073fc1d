"""Older history of a room from the servers in it: `/backfill`, stored below the live timeline.

spec: server-server-api "Backfilling and retrieving missing events": a server that lacks the
history before the events it holds asks another server in the room for it with `/backfill`, from
the events it is missing (the prev events of its earliest events), and checks what comes back like
any PDU (homeserver/rooms/receiving.py `receive_backfilled`). The room's current state and forward
extremities stay as they are, and nothing is announced to clients as new: `/messages` reads it.

Bounded: at most `MAX_SERVERS` servers tried, one request each, at most `limit` events (capped at
`MAX_LIMIT`), and a room where nobody had anything is not asked again for `RETRY_AFTER_S`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from federation.client import path_of
from federation.inbound import GapError, Inbound
from homeserver.errors import MatrixError
from homeserver.protocol.errors import ProtocolError
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.room_versions import RoomVersion
from homeserver.rooms.pipeline import EventPipeline, MissingEventsError, MissingStateError
from homeserver.state.event_source import reference_ids
from storage.cache import LruCache

log = logging.getLogger(__name__)

MAX_SERVERS = 3
MAX_LIMIT = 100
REQUEST_TIMEOUT_S = 10.0
RETRY_AFTER_S = 30.0


def _depth(event: dict[str, Any]) -> int:
    d = event.get("depth")
    return d if isinstance(d, int) else 0


def _of_room(pdu: dict[str, Any], room_id: str) -> bool:
    """Whether a PDU says it is of the room (rooms v12: the create event names none; the pipeline
    checks the room its id makes)."""
    return pdu.get("room_id") == room_id or ("room_id" not in pdu and pdu.get("type") == "m.room.create")


class Requester(Protocol):
    async def request(
        self, destination: str, method: str, path: str, *, content: Any | None = None, timeout: float = ...
    ) -> Any: ...


class Backfiller:
    """What `RoomReader` calls when a `/messages` page reaches the start of the history held here
    (homeserver/rooms/messages.py `HistorySource`)."""

    def __init__(
        self,
        server_name: str,
        pipeline: EventPipeline,
        inbound: Inbound,
        client: Requester,
        servers_in_room: Callable[[str], list[str]],
        fruitless: LruCache[str, float],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server_name = server_name
        self.pipeline = pipeline
        self.inbound = inbound
        self.client = client
        self.servers_in_room = servers_in_room
        self.fruitless = fruitless  # room id -> when nobody had anything older for it
        self.clock = clock

    async def backfill(self, room_id: str, limit: int) -> int:
        """Fetch up to `limit` events older than those held of `room_id` and store them; returns how
        many joined the timeline (0 when the history is whole here or nobody could give more)."""
        tried_at = self.fruitless.get(room_id)
        if tried_at is not None and self.clock() - tried_at < RETRY_AFTER_S:
            return 0
        try:
            _, wanted = self.pipeline.history_start(room_id)
        except MatrixError:
            return 0
        rv = self.inbound.room_version(room_id)
        if not wanted or rv is None:
            return 0
        limit = max(1, min(limit, MAX_LIMIT))
        for server in self._servers(room_id)[:MAX_SERVERS]:
            try:
                pdus = await self._fetch(server, room_id, wanted, limit)
            except Exception as e:  # unreachable, an error answer, a bad body: the next server
                log.info("backfill of %s from %s: %s", room_id, server, e)
                continue
            added = await self._store(server, room_id, rv, pdus)
            if added:
                return added
        self.fruitless.put(room_id, self.clock())
        return 0

    def _servers(self, room_id: str) -> list[str]:
        """The other servers in the room, the room creator's server first (rooms v1-v11 name it in
        the room id) as the one most likely to hold the oldest history."""
        servers = sorted(s for s in self.servers_in_room(room_id) if s != self.server_name)
        origin = room_id.split(":", 1)[1] if ":" in room_id else ""
        return sorted(servers, key=lambda s: s != origin)

    async def _fetch(self, server: str, room_id: str, wanted: list[str], limit: int) -> list[dict[str, Any]]:
        path = path_of(
            "_matrix", "federation", "v1", "backfill", room_id, query={"v": wanted[:20], "limit": str(limit)}
        )
        answer = await self.client.request(server, "GET", path, timeout=REQUEST_TIMEOUT_S)
        pdus = answer.get("pdus") if isinstance(answer, dict) else None
        if not isinstance(pdus, list):
            raise GapError(f"{server} answered /backfill without pdus")
        return [p for p in pdus if isinstance(p, dict) and _of_room(p, room_id)][:limit]

    async def _store(self, origin: str, room_id: str, rv: RoomVersion, pdus: list[dict[str, Any]]) -> int:
        """Store a `/backfill` answer, oldest first (each event's state needs its prev events), each
        at its own order below what the room holds: older events lower."""
        by_id: dict[str, dict[str, Any]] = {}
        for pdu in pdus:
            try:
                by_id.setdefault(compute_event_id(pdu, rv), pdu)
            except ProtocolError:
                continue
        events = sorted(by_id.items(), key=lambda item: (_depth(item[1]), item[0]))
        added = 0
        async with self.inbound.room_lock(room_id):
            first, _ = self.pipeline.history_start(room_id)
            base = first - len(events)
            for i, (eid, pdu) in enumerate(events):
                if self._in_timeline(room_id, eid):
                    continue
                try:
                    persisted = await self._accept(origin, room_id, rv, eid, pdu, base + i)
                except (MissingEventsError, MissingStateError, GapError, ProtocolError, MatrixError, ValueError) as e:
                    log.info("backfilled event %s from %s not stored: %s", eid, origin, e)
                    continue
                except Exception as e:  # the peer failed us mid-way (unreachable, an error answer)
                    log.info("backfilled event %s from %s not stored: %s", eid, origin, e)
                    continue
                if persisted:
                    added += 1
        return added

    def _in_timeline(self, room_id: str, eid: str) -> bool:
        ctx = self.pipeline.load_context(room_id)
        short = self.pipeline.stored_short(ctx, eid)
        return short is not None and not self.pipeline.meta(ctx, short).outlier

    async def _accept(
        self, origin: str, room_id: str, rv: RoomVersion, eid: str, pdu: dict[str, Any], order: int
    ) -> bool:
        """One event, its auth chain fetched when it lacks auth events, the state before it from
        `/state_ids` when its prev events are not held with their state. True if it joined the timeline."""
        auth_ids = set(reference_ids(pdu.get("auth_events"), rv.event_format))
        keys = self.inbound.keys
        state_ids: list[str] | None = None
        fetched_auth = fetched_state = False
        while True:
            try:
                persisted = await self.pipeline.receive_backfilled(pdu, keys, order, state_ids)
                return persisted.rejected is None
            except MissingEventsError as e:
                missing = set(e.event_ids)
                if missing & auth_ids and not fetched_auth:
                    fetched_auth = True
                    await self.inbound.fetch_auth_chain(origin, room_id, eid, rv)
                    continue
                if fetched_state:
                    raise
            except MissingStateError:
                if fetched_state:
                    raise
            fetched_state = True
            state_ids = await self.inbound.state_before(origin, room_id, eid, rv)
