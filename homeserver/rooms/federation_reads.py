"""What this server hands to other servers about a room: events, the state at an event, auth chains,
missing events and backfill, each filtered for the asking server.

spec: server-server-api "Retrieving events", "Backfilling and retrieving missing events",
"Retrieving event authorisation information". Which events a server may see follows the room's
history visibility at each event, as for users (client-server "Room History Visibility"), with the
server standing for its users, as Synapse does:
- `world_readable` or `shared` (also a missing or unknown value): the event;
- `invited`: the event if one of the server's users was invited or joined at the event;
- `joined`: the event if one of the server's users was joined at the event;
- otherwise the event redacted (its id, place in the graph and auth fields stay, content goes),
  so the asking server can still follow the graph.
Rejected events and outliers are never served as history (an outlier may serve as an auth or state
event, where its id is what matters).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

from homeserver.protocol.redaction import redact
from homeserver.protocol.room_versions import RoomVersion, get_room_version
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.restricted import join_authoriser
from homeserver.state.event_source import reference_ids
from storage.cache import LruCache
from storage.database import Database
from storage.events import EventMeta

MAX_BACKFILL = 100
MAX_MISSING = 20


class NotInRoom(Exception):
    """The asking server has no business with this room or event (not joined, or unknown event)."""


class FederationReads:
    def __init__(self, db: Database, server_name: str) -> None:
        self.db = db
        self.server_name = server_name
        self.queries = RoomQueries(server_name, db.ids, db.rooms, db.events, db.snapshots)
        # (state snapshot, server) -> the best membership the server's users have in it
        self._server_membership: LruCache[tuple[int, str], str | None] = db.caches.lru(
            "federation.server_membership", "federation", part=0.5
        )

    # -- who may ask -------------------------------------------------------------------------------

    def room_version(self, room_id: str) -> tuple[int, RoomVersion]:
        room = self.db.ids.room(room_id)
        info = self.db.rooms.info(room) if room is not None else None
        if room is None or info is None:
            raise NotInRoom(f"unknown room {room_id}")
        return room, get_room_version(info["version"])

    def join_authoriser(self, room: int, user_id: str) -> str | None:
        """Our member to name in `join_authorised_via_users_server` when `user_id` joins a restricted
        room now; None when no authoriser is needed. `MatrixError` (400 `M_UNABLE_TO_AUTHORISE_JOIN`,
        400 `M_UNABLE_TO_GRANT_JOIN`, 403) when we cannot let them in: see `homeserver/rooms/restricted.py`."""
        return join_authoriser(self.queries, room, user_id)

    def servers_in_room(self, room: int) -> list[str]:
        return self.db.rooms.servers(room)

    def server_in_room(self, room: int, server: str) -> bool:
        return server in self.db.rooms.servers(room)

    def check_server_in_room(self, room_id: str, server: str) -> tuple[int, RoomVersion]:
        room, rv = self.room_version(room_id)
        if not self.server_in_room(room, server):
            raise NotInRoom(f"{server} is not in {room_id}")
        return room, rv

    # -- single events -----------------------------------------------------------------------------

    def event_for(self, server: str, event_id: str) -> dict[str, Any]:
        """`/event/{eventId}`: the PDU, if the server may see it (redacted when its history is hidden)."""
        short, meta = self._stored(event_id)
        rv = self._rv_of(meta.room)
        if not self.server_in_room(meta.room, server) and not self._world_readable_at(meta):
            raise NotInRoom(f"{server} may not see {event_id}")
        return self._visible_pdu(short, meta, server, rv)

    def _stored(self, event_id: str) -> tuple[int, EventMeta]:
        short = self.db.ids.event(event_id)
        meta = self.db.events.get_meta(short) if short is not None else None
        if short is None or meta is None or meta.rejected:
            raise NotInRoom(f"unknown event {event_id}")
        return short, meta

    def _rv_of(self, room: int) -> RoomVersion:
        info = self.db.rooms.info(room) or {}
        return get_room_version(info.get("version", "1"))

    # -- state and auth ----------------------------------------------------------------------------

    def state_ids_at(self, server: str, room_id: str, event_id: str) -> tuple[list[str], list[str]]:
        """`/state_ids`: the state before the event and the auth chain of that state (event ids)."""
        state, chain = self._state_at(server, room_id, event_id)
        ids = self.db.ids
        return [ids.event_id(s) for s in state], [ids.event_id(s) for s in chain]

    def state_at(self, server: str, room_id: str, event_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """`/state`: the same as full PDUs."""
        state, chain = self._state_at(server, room_id, event_id)
        return [self._pdu(s) for s in state], [self._pdu(s) for s in chain]

    def _state_at(self, server: str, room_id: str, event_id: str) -> tuple[list[int], list[int]]:
        room, _ = self.check_server_in_room(room_id, server)
        _, meta = self._stored(event_id)
        if meta.room != room or meta.outlier:
            raise NotInRoom(f"{event_id} is not in the timeline of {room_id}")
        state = sorted(self.db.snapshots.load(meta.state_before).values()) if meta.state_before else []
        return state, self._auth_chain(state)

    def join_answer(self, room_id: str, event_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What `send_join` answers once the join is accepted: the state before the join and that
        state's auth chain (with the join's own auth events), as full PDUs. No membership check: the
        joining server is not in the room yet, and its join passed the auth rules."""
        room, _ = self.room_version(room_id)
        short, meta = self._stored(event_id)
        if meta.room != room or meta.outlier:
            raise NotInRoom(f"{event_id} is not in the timeline of {room_id}")
        state = sorted(self.db.snapshots.load(meta.state_before).values()) if meta.state_before else []
        return [self._pdu(s) for s in state], [self._pdu(s) for s in self._auth_chain([*state, short]) if s != short]

    def auth_chain_of(self, server: str, room_id: str, event_id: str) -> list[dict[str, Any]]:
        """`/event_auth`: the auth chain of one event (its auth events and theirs, recursively)."""
        room, rv = self.check_server_in_room(room_id, server)
        short, meta = self._stored(event_id)
        if meta.room != room:
            raise NotInRoom(f"{event_id} is not in {room_id}")
        event = self.db.events.get_json(short) or {}
        auth = [
            s for s in (self.db.ids.event(a) for a in reference_ids(event.get("auth_events"), rv.event_format)) if s
        ]
        return [self._pdu(s) for s in self._auth_chain(auth)]

    def _auth_chain(self, shorts: Iterable[int]) -> list[int]:
        chain: set[int] = set()
        for s in shorts:
            chain.add(s)
            stored = self.db.events.auth_chain(s)
            if stored is not None:
                chain.update(stored)
            else:  # not a state event: walk its auth events
                chain.update(self._walk_auth(s))
        return sorted(chain)

    def _walk_auth(self, short: int) -> set[int]:
        seen: set[int] = set()
        todo = [short]
        while todo:
            s = todo.pop()
            event = self.db.events.get_json(s) or {}
            meta = self.db.events.get_meta(s)
            rv = self._rv_of(meta.room) if meta is not None else get_room_version("1")
            for a in reference_ids(event.get("auth_events"), rv.event_format):
                a_short = self.db.ids.event(a)
                if a_short is not None and a_short not in seen:
                    seen.add(a_short)
                    todo.append(a_short)
        return seen

    def _pdu(self, short: int) -> dict[str, Any]:
        return dict(self.db.events.get_json(short) or {})

    # -- history -----------------------------------------------------------------------------------

    def missing_events(
        self, server: str, room_id: str, earliest: list[str], latest: list[str], limit: int, min_depth: int
    ) -> list[dict[str, Any]]:
        """`/get_missing_events`: the ancestors of `latest` (walking prev events breadth-first) not at
        or before `earliest`, with depth at least `min_depth`, at most `limit`, oldest first."""
        room, rv = self.check_server_in_room(room_id, server)
        stop = {s for s in (self.db.ids.event(e) for e in earliest) if s is not None}
        found = self._walk_back(room, rv, latest, min(max(limit, 0), MAX_MISSING), stop, min_depth, include_start=False)
        return [self._visible_pdu(s, m, server, rv) for s, m in found]

    def backfill(self, server: str, room_id: str, start: list[str], limit: int) -> list[dict[str, Any]]:
        """`/backfill`: the events `start` and their ancestors, newest first, at most `limit`."""
        room, rv = self.check_server_in_room(room_id, server)
        found = self._walk_back(room, rv, start, min(max(limit, 0), MAX_BACKFILL), set(), 0, include_start=True)
        found.sort(key=lambda sm: (sm[1].depth, sm[0]), reverse=True)
        return [self._visible_pdu(s, m, server, rv) for s, m in found]

    def _walk_back(
        self,
        room: int,
        rv: RoomVersion,
        start: list[str],
        limit: int,
        stop: set[int],
        min_depth: int,
        *,
        include_start: bool,
    ) -> list[tuple[int, EventMeta]]:
        out: list[tuple[int, EventMeta]] = []
        seen: set[int] = set(stop)
        queue: deque[int] = deque()
        for eid in start:
            s = self.db.ids.event(eid)
            if s is None or s in seen:
                continue
            meta = self.db.events.get_meta(s)
            if meta is None or meta.room != room:
                continue
            seen.add(s)
            if include_start:
                queue.append(s)
            else:
                queue.extend(self._prevs(s, rv, seen))
        while queue and len(out) < limit:
            s = queue.popleft()
            meta = self.db.events.get_meta(s)
            if meta is None or meta.room != room or meta.outlier or meta.rejected or meta.depth < min_depth:
                continue
            out.append((s, meta))
            queue.extend(self._prevs(s, rv, seen))
        out.sort(key=lambda sm: (sm[1].depth, sm[0]))
        return out

    def _prevs(self, short: int, rv: RoomVersion, seen: set[int]) -> list[int]:
        event = self.db.events.get_json(short) or {}
        out = []
        for p in reference_ids(event.get("prev_events"), rv.event_format):
            ps = self.db.ids.event(p)
            if ps is not None and ps not in seen:
                seen.add(ps)
                out.append(ps)
        return out

    def event_at_time(self, server: str, room_id: str, ts: int, *, forwards: bool) -> tuple[str, int] | None:
        """`/timestamp_to_event`: the event closest to `ts` in the direction asked that the server may
        see whole (at most 10,000 candidates looked at); None when there is none."""
        room, _ = self.check_server_in_room(room_id, server)
        for i, (event_ts, short) in enumerate(self.db.room_extras.events_by_time(room, ts, forwards=forwards)):
            if i >= 10_000:
                break
            meta = self.db.events.get_meta(short)
            if meta is not None and not meta.outlier and not meta.rejected and self._server_may_see(meta, server):
                return self.db.ids.event_id(short), event_ts
        return None

    # -- visibility for servers --------------------------------------------------------------------

    def _visible_pdu(self, short: int, meta: EventMeta, server: str, rv: RoomVersion) -> dict[str, Any]:
        pdu = self._pdu(short)
        return pdu if self._server_may_see(meta, server) else redact(pdu, rv)

    def _world_readable_at(self, meta: EventMeta) -> bool:
        return self._visibility_at(meta.state_before) == "world_readable"

    def _visibility_at(self, snapshot: int) -> str:
        sk = self.db.ids.state_key("m.room.history_visibility", "")
        short = self.db.snapshots.get(snapshot, sk) if sk is not None and snapshot else None
        event = self.db.events.get_json(short) if short is not None else None
        content = event.get("content") if isinstance(event, dict) else None
        value = content.get("history_visibility") if isinstance(content, dict) else None
        return value if value in ("world_readable", "shared", "invited", "joined") else "shared"

    def _server_may_see(self, meta: EventMeta, server: str) -> bool:
        if meta.outlier:
            return True  # an auth or state event: its place in the graph is what is asked for
        visibility = self._visibility_at(meta.state_before)
        if visibility in ("world_readable", "shared"):
            return True
        membership = self._server_membership_at(meta.state_before, server)
        if visibility == "invited":
            return membership in ("join", "invite")
        return membership == "join"

    def _server_membership_at(self, snapshot: int, server: str) -> str | None:
        """ "join" if one of the server's users was joined in the state, else "invite" if one was
        invited, else None."""
        if not snapshot:
            return None
        key = (snapshot, server)
        if key in self._server_membership:
            return self._server_membership.get(key)
        suffix = ":" + server
        best: str | None = None
        ids = self.db.ids
        for sk, ev in self.db.snapshots.load(snapshot).items():
            etype, state_key = ids.state_key_of(sk)
            if etype != "m.room.member" or not state_key.endswith(suffix):
                continue
            content = (self.db.events.get_json(ev) or {}).get("content")
            membership = content.get("membership") if isinstance(content, dict) else None
            if membership == "join":
                best = "join"
                break
            if membership == "invite":
                best = "invite"
        self._server_membership.put(key, best)
        return best
