"""Reading a room: state, /messages, /context, /event, /members, /joined_members, /joined_rooms and
/timestamp_to_event — always through the history visibility rules (visibility.py).

spec: client-server-api "Getting events for a room", "Room membership", GET /rooms/{roomId}/members.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.protocol.events import content_of
from homeserver.rooms.client_format import EventSerializer, Viewer
from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.timeline import walk
from homeserver.rooms.tokens import before_token, order_of, parse_counter, parse_position, position_token
from homeserver.rooms.visibility import RoomAccess, Visibility, room_access
from storage.database import Database

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
BACKFILL_ROUNDS = 3  # /backfill requests one /messages page may wait for
BACKFILL_TIMEOUT_S = 20.0  # and how long, in all


class HistorySource(Protocol):
    """Older history of a room from other servers (federation/backfill.py, wired by the server)."""

    async def backfill(self, room_id: str, limit: int) -> int:
        """Fetch and store up to `limit` events older than those held; how many joined the timeline."""
        ...


MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")


def require_room_id(room_id: str) -> None:
    if not room_id.startswith("!") or len(room_id.encode()) > 255:
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id!r} is not a room id")


def not_member() -> MatrixError:
    return forbidden("You aren't a member of the room and weren't previously a member of the room")


class RoomReader:
    def __init__(self, db: Database, queries: RoomQueries, serializer: EventSerializer) -> None:
        self.db = db
        self.queries = queries
        self.serializer = serializer
        self._history: list[HistorySource] = []  # at most one: the federation's
        self._tasks: set[asyncio.Future[int]] = set()

    def add_history_source(self, source: HistorySource) -> None:
        """At wiring time: where `/messages` gets the history before what this server holds."""
        if self._history:
            raise ValueError("a history source is wired already")
        self._history.append(source)

    # -- helpers ---------------------------------------------------------------------------------

    def room(self, room_id: str) -> int:
        """The short id of a room this server knows; 404 `M_NOT_FOUND` otherwise."""
        require_room_id(room_id)
        room = self.queries.known_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        return room

    def readable(self, user_id: str, room_id: str) -> tuple[int, RoomAccess]:
        room = self.room(room_id)
        access = room_access(self.db, user_id, room)
        if not access.can_read:
            raise not_member()
        return room, access

    def state_snapshot_at(self, room: int, order: int) -> int | None:
        """The state after the last timeline event at or before `order`."""
        last = next(self.db.rooms.timeline(room, before=order + 1, reverse=True), None)
        if last is None:
            return None
        meta = self.db.events.get_meta(last[1])
        return meta.state_after if meta is not None else None

    def state_events(
        self, snapshot: int, viewer: Viewer, vis: Visibility | None, keys: Iterable[int] | None = None
    ) -> list[dict[str, Any]]:
        state = self.db.snapshots.load(snapshot) if snapshot else {}
        shorts = list(state.values()) if keys is None else [state[k] for k in keys if k in state]
        return self.serializer.serialize_many(shorts, viewer, vis=vis, bundle=False)

    def member_state(
        self, snapshot: int, senders: Iterable[str], viewer: Viewer, vis: Visibility
    ) -> list[dict[str, Any]]:
        """The member events of `senders` in a state (lazy-loading members, spec: "Lazy-loading room members")."""
        keys = []
        for sender in dict.fromkeys(senders):
            sk = self.db.ids.state_key("m.room.member", sender)
            if sk is not None:
                keys.append(sk)
        return self.state_events(snapshot, viewer, vis, keys)

    # -- state -----------------------------------------------------------------------------------

    def state(self, viewer: Viewer, room_id: str) -> list[dict[str, Any]]:
        room, access = self.readable(viewer.user_id, room_id)
        snapshot = access.state_snapshot(self.db)
        if snapshot is None:
            raise not_member()
        return self.state_events(snapshot, viewer, Visibility(self.db, viewer.user_id, room, access))

    def state_event(self, viewer: Viewer, room_id: str, event_type: str, state_key: str) -> dict[str, Any]:
        """One state event in the client format (the caller picks `content` for format=content)."""
        _, access = self.readable(viewer.user_id, room_id)
        snapshot = access.state_snapshot(self.db)
        if snapshot is None:
            raise not_member()
        short = self.queries.state_short_at(snapshot, event_type, state_key)
        event = self.serializer.serialize(short, viewer, bundle=False) if short is not None else None
        if event is None:
            raise not_found(f"The room has no state with type {event_type!r} and state key {state_key!r}")
        return event

    # -- timeline --------------------------------------------------------------------------------

    async def messages(
        self,
        viewer: Viewer,
        room_id: str,
        *,
        from_token: str | None,
        to_token: str | None,
        forwards: bool,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> dict[str, Any]:
        """A page of the timeline; going backwards past the start of the history held here (a room
        joined over federation: its first event is not the create event), older history is asked
        of the other servers in the room first (spec: server-server-api "Backfilling")."""
        args = (viewer, room_id, from_token, to_token, forwards, limit, event_filter)
        body = self._messages(*args)
        if forwards or to_token or not self._history or "end" in body or not event_filter.allows_room(room_id):
            return body  # `to` bounds the page within what is held: older history cannot be in it
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BACKFILL_TIMEOUT_S
        for _ in range(BACKFILL_ROUNDS):
            room = self.room(room_id)
            remaining = deadline - loop.time()
            if remaining <= 0 or self._history_complete(room):
                break
            wanted = max(min(limit, MAX_LIMIT) - len(body["chunk"]), 1) * 2
            # never cancelled half-way: a backfill that outlasts the page finishes for the next one
            task = asyncio.ensure_future(self._history[0].backfill(room_id, wanted))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            done, _ = await asyncio.wait({task}, timeout=remaining)
            if not done:
                log.info("backfill of %s takes longer than %.0f s", room_id, BACKFILL_TIMEOUT_S)
                break
            try:
                added = task.result()
            except Exception:
                log.exception("backfill of %s failed", room_id)
                break
            if not added:
                break
            body = self._messages(*args)
            if "end" in body:
                break
        return body

    def _history_complete(self, room: int) -> bool:
        """Whether the first event held of the room is its create event (nothing older exists)."""
        first = next(self.db.rooms.timeline(room), None)
        event = self.db.events.get_json(first[1]) if first is not None else None
        return event is not None and event.get("type") == "m.room.create"

    def _messages(
        self,
        viewer: Viewer,
        room_id: str,
        from_token: str | None,
        to_token: str | None,
        forwards: bool,
        limit: int,
        event_filter: RoomEventFilter,
    ) -> dict[str, Any]:
        room, access = self.readable(viewer.user_id, room_id)
        if not event_filter.allows_room(room_id):
            return {"chunk": [], "start": from_token or self._edge_token(room, forwards)}
        vis = Visibility(self.db, viewer.user_id, room, access)
        start = parse_position(from_token, "from") if from_token else None
        stop = parse_position(to_token, "to") if to_token else None
        limit = min(limit, MAX_LIMIT)
        # a past member of a room that is not world-readable sees nothing after they left
        cap = access.position_limit(self.db)
        if cap is not None:
            if forwards:
                stop = cap if stop is None else min(stop, cap)
            elif start is None or start > cap:
                start = cap
        result = walk(
            self.db.rooms,
            self.db.events,
            room,
            start,
            forwards=forwards,
            limit=limit,
            vis=vis,
            event_filter=event_filter,
            stop=stop,
        )
        shorts = [s for _, s in result.events]
        body: dict[str, Any] = {
            "chunk": self.serializer.serialize_many(shorts, viewer, vis=vis),
            "start": from_token or self._edge_token(room, forwards),
        }
        if not result.exhausted:
            body["end"] = position_token(result.position)
        if event_filter.lazy_load_members and shorts:
            meta = self.db.events.get_meta(shorts[-1])
            if meta is not None:
                senders = [e["sender"] for e in body["chunk"]]
                body["state"] = self.member_state(meta.state_after, senders, viewer, vis)
        return body

    def _edge_token(self, room: int, forwards: bool) -> str:
        first = next(self.db.rooms.timeline(room, reverse=not forwards), None)
        if first is None:
            return position_token(0)
        return before_token(first[0]) if forwards else position_token(first[0])

    def context(
        self, viewer: Viewer, room_id: str, event_id: str, *, limit: int, event_filter: RoomEventFilter
    ) -> dict[str, Any]:
        room, access = self.readable(viewer.user_id, room_id)
        vis = Visibility(self.db, viewer.user_id, room, access)
        short = self._visible_event(room, event_id, vis)
        meta = self.db.events.get_meta(short)
        assert meta is not None
        order = order_of(meta)
        limit = min(limit, MAX_LIMIT)
        n_before = limit // 2
        before = walk(
            self.db.rooms,
            self.db.events,
            room,
            order - 1,
            forwards=False,
            limit=n_before,
            vis=vis,
            event_filter=event_filter,
        )
        after = walk(
            self.db.rooms,
            self.db.events,
            room,
            order,
            forwards=True,
            limit=limit - n_before,
            vis=vis,
            event_filter=event_filter,
        )
        event = self.serializer.serialize(short, viewer, vis=vis)
        before_events = self.serializer.serialize_many([s for _, s in before.events], viewer, vis=vis)
        after_events = self.serializer.serialize_many([s for _, s in after.events], viewer, vis=vis)
        last = after.events[-1][1] if after.events else short
        last_meta = self.db.events.get_meta(last)
        snapshot = last_meta.state_after if last_meta is not None else 0
        if event_filter.lazy_load_members:
            senders = [e["sender"] for e in (*before_events, event or {}, *after_events) if "sender" in e]
            state = self.member_state(snapshot, senders, viewer, vis)
        else:
            state = [e for e in self.state_events(snapshot, viewer, vis) if event_filter.allows(e)]
        return {
            "event": event,
            "events_before": before_events,
            "events_after": after_events,
            "start": position_token(before.position),
            "end": position_token(after.position),
            "state": state,
        }

    def _visible_event(self, room: int, event_id: str, vis: Visibility) -> int:
        short = self.db.ids.event(event_id) if event_id.startswith("$") else None
        if short is None or not vis.allows(short):
            raise not_found("Event not found, or you may not see it")
        return short

    def event(self, viewer: Viewer, room_id: str, event_id: str) -> dict[str, Any]:
        room = self.room(room_id)
        vis = Visibility(self.db, viewer.user_id, room)
        short = self._visible_event(room, event_id, vis)
        event = self.serializer.serialize(short, viewer, vis=vis)
        if event is None:
            raise not_found("Event not found")
        return event

    # -- members ---------------------------------------------------------------------------------

    def members(
        self, viewer: Viewer, room_id: str, *, at: str | None, membership: str | None, not_membership: str | None
    ) -> list[dict[str, Any]]:
        room, access = self.readable(viewer.user_id, room_id)
        snapshot = access.state_snapshot(self.db)
        if snapshot is None:
            raise not_member()
        if at is not None:
            at_order = parse_position(at, "at")
            cap = access.position_limit(self.db)
            if cap is not None:
                at_order = min(at_order, cap)
            snapshot = self.state_snapshot_at(room, at_order) or 0
        state = self.db.snapshots.load(snapshot) if snapshot else {}
        wanted: list[int] = []
        for sk, short in state.items():
            etype, _ = self.db.ids.state_key_of(sk)
            if etype != "m.room.member":
                continue
            if membership is not None or not_membership is not None:
                m = content_of(self.db.events.get_json(short)).get("membership")
                # spec: both given form an "or": membership is `membership` or is not `not_membership`
                ok_in = membership is not None and m == membership
                ok_out = not_membership is not None and m != not_membership
                if not (ok_in or ok_out):
                    continue
            wanted.append(short)
        vis = Visibility(self.db, viewer.user_id, room, access)
        return self.serializer.serialize_many(wanted, viewer, vis=vis, bundle=False)

    def joined_members(self, user_id: str, room_id: str) -> dict[str, dict[str, str]]:
        room = self.room(room_id)
        if not self.queries.is_joined(user_id, room):
            raise forbidden("You aren't a member of the room")
        joined: dict[str, dict[str, str]] = {}
        for member, short in self.queries.members(room):
            content = content_of(self.serializer.stored_event(short))
            info: dict[str, str] = {}
            if isinstance(content.get("displayname"), str):
                info["display_name"] = content["displayname"]
            if isinstance(content.get("avatar_url"), str):
                info["avatar_url"] = content["avatar_url"]
            joined[member] = info
        return joined

    def joined_rooms(self, user_id: str) -> list[str]:
        return self.queries.joined_room_ids(user_id)

    # -- timestamp_to_event ----------------------------------------------------------------------

    def timestamp_to_event(self, user_id: str, room_id: str, ts: int, *, forwards: bool) -> dict[str, Any]:
        room, access = self.readable(user_id, room_id)
        vis = Visibility(self.db, user_id, room, access)
        for i, (event_ts, short) in enumerate(self.db.room_extras.events_by_time(room, ts, forwards=forwards)):
            if i >= 10_000:
                break
            if vis.allows(short):
                return {"event_id": self.db.ids.event_id(short), "origin_server_ts": event_ts}
        raise not_found(f"No event found {'after' if forwards else 'before'} {ts}")

    # -- GET /rooms/{roomId}/initialSync (room previews) -------------------------------------------

    def initial_sync(self, viewer: Viewer, room_id: str, *, published: bool, limit: int = 20) -> dict[str, Any]:
        """spec: GET /rooms/{roomId}/initialSync — the latest messages and the state, for peeking."""
        room, access = self.readable(viewer.user_id, room_id)
        snapshot = access.state_snapshot(self.db)
        vis = Visibility(self.db, viewer.user_id, room, access)
        start = access.position_limit(self.db)
        latest = walk(self.db.rooms, self.db.events, room, start, forwards=False, limit=limit, vis=vis)
        shorts = [s for _, s in reversed(latest.events)]
        end_order = latest.events[0][0] if latest.events else (start or 0)
        messages: dict[str, Any] = {
            "chunk": self.serializer.serialize_many(shorts, viewer, vis=vis),
            "end": position_token(end_order),
        }
        if not latest.exhausted:
            messages["start"] = position_token(latest.position)
        body: dict[str, Any] = {
            "room_id": room_id,
            "messages": messages,
            "state": self.state_events(snapshot, viewer, vis) if snapshot else [],
            "visibility": "public" if published else "private",
        }
        # spec: roomInitialSync `membership` is one of invite, join, leave, ban: a knock is not listed
        if access.membership in ("invite", "join", "leave", "ban"):
            body["membership"] = access.membership
        return body

    # -- GET /v1/mutual_rooms --------------------------------------------------------------------

    def mutual_rooms(self, user_id: str, other: str, from_token: str | None, limit: int = 100) -> dict[str, Any]:
        """spec: GET /v1/mutual_rooms — rooms both users are joined to, in room id order."""
        offset = 0
        if from_token is not None:
            kind, _, value = from_token.partition("_")
            found = parse_counter(value)
            if kind != "m" or found is None:
                raise MatrixError(400, "M_INVALID_PARAM", "from is not a token from /mutual_rooms")
            offset = found
        mine = set(self.queries.joined_rooms(user_id))
        shared = sorted(self.queries.room_id(r) for r in self.queries.joined_rooms(other) if r in mine)
        body: dict[str, Any] = {"joined": shared[offset : offset + limit], "count": len(shared)}
        if offset + limit < len(shared):
            body["next_batch"] = f"m_{offset + limit}"
        return body
