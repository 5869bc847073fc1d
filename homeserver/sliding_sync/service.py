"""POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync (MSC4186, as Synapse serves it;
DESIGN.md "Simplified sliding sync").

A request names a connection (user, device, `conn_id`) and, after the first, a position `pos` of
it. The answer holds: each list's room count and the room ids in its ranges (rooms ordered by
activity: `homeserver/sliding_sync/index.py`), the rooms of the lists' ranges and of the room
subscriptions that are new to the connection or changed since `pos` (rooms.py), and the enabled
extensions (extensions.py). What was sent is recorded at a new position (state.py), kept in the
store so a restart continues the connection; the connection keeps the position it was asked from
and the new one, so a retried request (a lost answer) works, and gets the same answer while it is
remembered. An unknown `pos` is 400 `M_UNKNOWN_POS`: the client starts the connection again.

With `timeout` and a `pos`, the request waits until something it would report happens: the
notifier wakes it for the user's rooms and for their to-device messages, key and device-list
changes, account data and receipts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from homeserver.account_data.service import AccountData
from homeserver.ephemeral.presence import Presence
from homeserver.errors import MatrixError
from homeserver.notifier import Notifier
from homeserver.rooms.membership import INVITE_PERMISSION_CONFIG, blocks_invites
from homeserver.rooms.queries import RoomQueries
from homeserver.sliding_sync.extensions import ExtensionResults, ExtensionScope
from homeserver.sliding_sync.index import RoomActivity, UserRooms
from homeserver.sliding_sync.request import Filters, ListParams, RoomParams, SlidingSyncBody
from homeserver.sliding_sync.rooms import RoomRequest, RoomResults
from homeserver.sliding_sync.state import ConnState, RoomConfig, RoomSent
from storage.cache import CacheRegistry, LruCache
from storage.engine import Batch, Store
from storage.rooms import UserRoom
from storage.sliding_sync import ConnectionStore

MAX_TIMEOUT_MS = 5 * 60 * 1000
VISIBLE_MEMBERSHIPS = ("join", "invite", "knock", "ban", "leave")


class SlidingSyncRequest:
    __slots__ = ("body", "device_id", "pos", "set_presence", "timeout_ms", "user_id")

    def __init__(
        self,
        user_id: str,
        device_id: str | None,
        body: SlidingSyncBody,
        pos: str | None,
        timeout_ms: int = 0,
        set_presence: str | None = None,
    ) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.body = body
        self.pos = pos
        self.timeout_ms = timeout_ms
        self.set_presence = set_presence


class _Answer:
    __slots__ = ("body", "news", "state")

    def __init__(self, body: dict[str, Any], state: ConnState, news: bool) -> None:
        self.body = body
        self.state = state
        self.news = news


class RoomFacts:
    """What list filters ask of a room, kept per room: its type never changes, nor does a room
    stop being encrypted."""

    def __init__(self, queries: RoomQueries, caches: CacheRegistry) -> None:
        self.queries = queries
        # bounded like every cache: a room evicted is looked up again
        self._types: LruCache[int, tuple[str | None]] = caches.lru("sliding_sync.room_types", "sync", part=0.1)
        self._encrypted: LruCache[int, bool] = caches.lru("sliding_sync.room_encrypted", "sync", part=0.1)

    def room_type(self, room: int, stripped: Callable[[], list[dict[str, Any]]]) -> str | None:
        known = self._types.get(room)
        if known is not None:
            return known[0]
        create = self.queries.current_state_event(room, "m.room.create")
        if create is not None:
            found = create.content.get("type")
            kind = found if isinstance(found, str) else None
            self._types.put(room, (kind,))
            return kind
        for event in stripped():
            if event.get("type") == "m.room.create":
                found = (event.get("content") or {}).get("type")
                return found if isinstance(found, str) else None
        return None

    def encrypted(self, room: int, stripped: Callable[[], list[dict[str, Any]]]) -> bool:
        if self._encrypted.get(room):
            return True
        if self.queries.current_state_event(room, "m.room.encryption") is not None:
            self._encrypted.put(room, True)
            return True
        return any(e.get("type") == "m.room.encryption" for e in stripped())


class SlidingSync:
    def __init__(
        self,
        store: Store,
        connections: ConnectionStore,
        queries: RoomQueries,
        activity: RoomActivity,
        notifier: Notifier,
        rooms: RoomResults,
        extensions: ExtensionResults,
        account_data: AccountData,
        presence: Presence,
        caches: CacheRegistry,
        forgotten: Callable[[str, int], bool],
    ) -> None:
        self.store = store
        self.forgotten = forgotten  # (user, room) -> whether the user forgot the room (POST /forget)
        self.connections = connections
        self.queries = queries
        self.activity = activity
        self.notifier = notifier
        self.rooms = rooms
        self.extensions = extensions
        self.account_data = account_data
        self.presence = presence
        self.facts = RoomFacts(queries, caches)
        # (user, device, conn_id) -> (pos asked from, body, answer, pos answered): a retry of the
        # same request gets the same answer
        self._last: LruCache[tuple[str, str, str], tuple[int | None, bytes, dict[str, Any]]] = caches.lru(
            "sliding_sync.answers", "sync", part=0.25
        )
        # the state at each connection's newest position, as the store holds it
        self._states: LruCache[tuple[str, str, str], tuple[int, ConnState]] = caches.lru(
            "sliding_sync.connections", "sync", part=0.25
        )

    # -- the request -----------------------------------------------------------------------------

    async def sync(self, req: SlidingSyncRequest) -> dict[str, Any]:
        device = req.device_id or ""
        conn_id = req.body.conn_id or ""
        key = (req.user_id, device, conn_id)
        parent = self._parse_pos(req.pos)
        fingerprint = orjson.dumps(req.body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        remembered = self._last.get(key)
        if parent is not None and remembered is not None and remembered[:2] == (parent, fingerprint):
            conn = self.connections.connection(req.user_id, device, conn_id)
            if conn is not None and int(remembered[2]["pos"]) in conn["live"]:
                return remembered[2]
        old: ConnState | None = None
        if parent is not None:
            cached = self._states.get(key)
            if cached is not None and cached[0] == parent:
                old = cached[1]
            else:
                stored = self.connections.position(req.user_id, device, conn_id, parent)
                if stored is None:
                    raise MatrixError(400, "M_UNKNOWN_POS", "Unknown position: start the connection again")
                old = ConnState.from_json(stored)
        await self.presence.syncing(req.user_id, req.set_presence)
        timeout = min(max(req.timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        if old is None or timeout <= 0:
            answer = await self._compute(req, old, self.notifier.token)
        else:
            answer = await self._wait(req, old, timeout)
        batch = self.store.batch()
        with batch:
            position = self.connections.save(req.user_id, device, conn_id, parent, answer.state.to_json(), batch)
            await batch.commit()
        self._states.put(key, (position, answer.state))
        body = answer.body
        body["pos"] = str(position)
        self._last.put(key, (parent, fingerprint, body))
        return body

    def warm(self) -> None:
        """Build the request body's validator now (models are built on first use, and this one takes
        tens of milliseconds): called once the server is up, so a phone's first sync does not wait."""
        SlidingSyncBody.model_rebuild()
        SlidingSyncBody.model_validate({"lists": {}, "room_subscriptions": {}, "extensions": {}})

    def devices_deleted(self, user_id: str, device_ids: list[str], batch: Batch) -> None:
        """In the batch that deletes devices: their connections go too."""
        for device_id in device_ids:
            self.connections.delete_device(user_id, device_id, batch)
            for cache in (self._last, self._states):
                for key in [k for k in cache.list_keys() if k[0] == user_id and k[1] == device_id]:
                    cache.discard(key)

    @staticmethod
    def _parse_pos(pos: str | None) -> int | None:
        if pos is None:
            return None
        if not pos.isdigit() or len(pos) > 18:
            raise MatrixError(400, "M_UNKNOWN_POS", "Unknown position: start the connection again")
        return int(pos)

    async def _wait(self, req: SlidingSyncRequest, old: ConnState, timeout: float) -> _Answer:
        deadline = time.monotonic() + timeout
        with self.notifier.listen(req.user_id, self.queries.joined_rooms(req.user_id)) as waiter:
            while True:
                waiter.reset()  # registered before reading: a write after this read wakes us
                answer = await self._compute(req, old, self.notifier.token)
                remaining = deadline - time.monotonic()
                if answer.news or remaining <= 0:
                    return answer
                await waiter.wait(remaining)

    # -- one answer ------------------------------------------------------------------------------

    async def _compute(self, req: SlidingSyncRequest, old: ConnState | None, upto: int) -> _Answer:
        user_id = req.user_id
        body = req.body
        since = old.stream if old is not None else None
        new = old.copy(upto) if old is not None else ConnState(upto)
        user_rooms = self.activity.rooms_of(user_id)
        memberships = user_rooms.memberships
        dms = self._dm_rooms(user_id)
        ignored = self.account_data.ignored(user_id)
        shown = self._shown(user_id, user_rooms, since, ignored)
        configs: dict[int, RoomConfig] = {}
        lists_out: dict[str, Any] = {}
        list_rooms: dict[str, list[str]] = {}
        room_ids: dict[int, str] = {}
        for name, params in (body.lists or {}).items():
            filters = params.filters
            if filters is None or not filters.model_fields_set - {"spaces", "room_name_like"}:
                rooms = shown
            else:
                rooms = [r for r in shown if self._passes(user_id, memberships[r], filters, dms)]
            ops = []
            in_ranges: list[str] = []
            for start, end in params.windows():
                window = rooms[start : end + 1]
                ids = [room_ids.setdefault(r, self.queries.room_id(r)) for r in window]
                ops.append({"op": "SYNC", "range": [start, end], "room_ids": ids})
                in_ranges.extend(ids)
                config = _config(params)
                for r in window:
                    configs[r] = configs[r].merged(config) if r in configs else config
            lists_out[name] = {"count": len(rooms), "ops": ops}
            list_rooms[name] = in_ranges
        subscribed: list[str] = []
        for room_id, sub in (body.room_subscriptions or {}).items():
            room = self.queries.room(room_id)
            ur = memberships.get(room) if room is not None else None
            if room is None or ur is None or ur.membership not in VISIBLE_MEMBERSHIPS:
                continue  # not a room of the user's: nothing to show (as Synapse)
            if ur.membership == "invite" and self._invite_hidden(user_id, ur, ignored):
                continue
            room_ids[room] = room_id
            subscribed.append(room_id)
            sub_config = _config(sub)
            configs[room] = configs[room].merged(sub_config) if room in configs else sub_config
        rooms_out: dict[str, Any] = {}
        initial_rooms: dict[str, list[str]] = {}
        for room, config in configs.items():
            room_id = room_ids[room]
            ur = memberships[room]
            prev = old.rooms.get(room_id) if old is not None else None
            room_since = self._room_since(prev, ur, since)
            request = RoomRequest(room_id, ur, config, prev)
            if room_since is not None and not self.rooms.needs_sending(request, room_since):
                new.rooms[room_id] = RoomSent(RoomSent.LIVE, 0, config.timeline_limit, config.required, ur.membership)
                continue
            lazy_known = set(new.lazy.get(room_id, ())) if room_since is not None else set()
            stamp = self.activity.stamp(user_id, room)
            answer = self.rooms.answer(
                request,
                user_id,
                req.device_id,
                room_since,
                since,
                upto,
                lazy_known,
                is_dm=room_id in dms,
                bump_stamp=stamp if stamp is not None else ur.stream,
                ignored=ignored,
            )
            if room_since is None or _has_news(answer.entry):
                rooms_out[room_id] = answer.entry
            if answer.entry.get("initial") or answer.entry.get("unstable_expanded_timeline"):
                initial_rooms[room_id] = answer.timeline_ids
            known = (lazy_known - answer.lazy_unsent) | answer.lazy_sent
            if known != lazy_known or room_since is None:
                new.lazy[room_id] = tuple(sorted(known))
            new.rooms[room_id] = RoomSent(RoomSent.LIVE, 0, config.timeline_limit, config.required, ur.membership)
        if old is not None and since is not None:
            self._mark_unsent(new, memberships, configs, since)
            self._forget_left(user_id, new, memberships, configs, ignored)
        out: dict[str, Any] = {"pos": "", "lists": lists_out, "rooms": rooms_out}
        ext_news = False
        if body.extensions is not None:
            scope = ExtensionScope(list_rooms, subscribed)
            ext, ext_news = await self.extensions.answer(
                body.extensions, user_id, req.device_id, since, upto, scope, initial_rooms, old, new
            )
            out["extensions"] = ext
        else:
            out["extensions"] = {}
        return _Answer(out, new, bool(rooms_out) or ext_news)

    def _room_since(self, prev: RoomSent | None, ur: UserRoom, since: int | None) -> int | None:
        """Where the room was last sent up to; None: send it whole (never sent, or just joined)."""
        if prev is None or since is None or prev.status == RoomSent.NEVER:
            return None
        if ur.membership == "join" and prev.membership != "join":
            return None
        return since if prev.status == RoomSent.LIVE else prev.last

    def _mark_unsent(
        self, new: ConnState, memberships: dict[int, UserRoom], sent: dict[int, RoomConfig], since: int
    ) -> None:
        """Rooms sent before but not now, that changed since `pos`: remember from where to resume."""
        sent_ids = {self.queries.room_id(r) for r in sent}
        for room_id, prev in list(new.rooms.items()):
            if prev.status != RoomSent.LIVE or room_id in sent_ids:
                continue
            room = self.queries.room(room_id)
            ur = memberships.get(room) if room is not None else None
            changed = (
                ur is None
                or ur.stream > since
                or (ur.membership == "join" and self.rooms.timeline.changed_since(ur.room, since))
            )
            if changed:
                new.rooms[room_id] = RoomSent(
                    RoomSent.PREVIOUSLY, since, prev.timeline_limit, prev.required, prev.membership
                )

    def _forget_left(
        self,
        user_id: str,
        new: ConnState,
        memberships: dict[int, UserRoom],
        sent: dict[int, RoomConfig],
        ignored: frozenset[str],
    ) -> None:
        """Drop what the connection remembers of rooms it will not show again: rooms the user left
        or was banned from, whose leave or ban it has already sent, and which no list shows any more
        (the user left on their own, or forgot the room). Each
        position stores the connection's whole record, so without this it grows with every room the
        user ever left; a room that comes back (rejoined, invited again) is sent whole, as new."""
        sent_rooms = set(sent)
        for room_id, prev in list(new.rooms.items()):
            room = self.queries.room(room_id)
            if room is not None and room in sent_rooms:
                continue
            ur = memberships.get(room) if room is not None else None
            if ur is not None:
                gone = ur.membership in ("leave", "ban")
                settled = gone and prev.status == RoomSent.LIVE and prev.membership == ur.membership
                if not settled or self._listed(user_id, ur, new.stream, ignored):
                    continue
            del new.rooms[room_id]
            for per_room in (new.lazy, new.receipts, new.account_data):
                per_room.pop(room_id, None)

    # -- lists -----------------------------------------------------------------------------------

    def _shown(self, user_id: str, rooms: UserRooms, since: int | None, ignored: frozenset[str]) -> list[int]:
        """The user's rooms a list may show, most recently active first. Left rooms only when
        someone else removed the user, or the leave is new to this connection (as Synapse); no
        invites from ignored users."""
        memberships = rooms.memberships
        return [r for r in rooms.order if self._listed(user_id, memberships[r], since, ignored)]

    def _listed(self, user_id: str, ur: UserRoom, since: int | None, ignored: frozenset[str]) -> bool:
        if ur.membership in ("leave", "ban") and self.forgotten(user_id, ur.room):
            return False  # spec: POST /forget — the room is gone from the user's lists
        if ur.membership in ("join", "knock", "ban"):
            return True
        if ur.membership == "invite":
            return not self._invite_hidden(user_id, ur, ignored)
        if ur.membership == "leave":
            if since is not None and ur.stream > since:
                return True
            event = self.queries.event(ur.event)
            return event is not None and event.sender != user_id
        return False

    def _invite_hidden(self, user_id: str, ur: UserRoom, ignored: frozenset[str]) -> bool:
        if blocks_invites(self.account_data.get(user_id, INVITE_PERMISSION_CONFIG)):
            return True
        event = self.queries.event(ur.event)
        return event is not None and event.sender in ignored

    def _passes(self, user_id: str, ur: UserRoom, filters: Filters | None, dms: set[str]) -> bool:
        if filters is None or not filters.model_fields_set - {"spaces", "room_name_like"}:
            return True
        room = ur.room
        if filters.is_invite is not None and (ur.membership == "invite") != filters.is_invite:
            return False
        if filters.is_dm is not None and (self.queries.room_id(room) in dms) != filters.is_dm:
            return False

        def stripped() -> list[dict[str, Any]]:
            return self.queries.invite_state(user_id, room) or []

        if filters.is_encrypted is not None and self.facts.encrypted(room, stripped) != filters.is_encrypted:
            return False
        if filters.room_types is not None or filters.not_room_types is not None:
            room_type = self.facts.room_type(room, stripped)
            if filters.not_room_types is not None and room_type in filters.not_room_types:
                return False
            if filters.room_types is not None and room_type not in filters.room_types:
                return False
        if filters.tags is not None or filters.not_tags is not None:
            tags = self.account_data.tags(user_id, self.queries.room_id(room))
            if filters.not_tags is not None and any(t in tags for t in filters.not_tags):
                return False
            if filters.tags is not None and not any(t in tags for t in filters.tags):
                return False
        return True

    def _dm_rooms(self, user_id: str) -> set[str]:
        """spec: m.direct — the rooms the user's account data marks as direct chats."""
        direct = self.account_data.get(user_id, "m.direct") or {}
        rooms: set[str] = set()
        for ids in direct.values():
            if isinstance(ids, list):
                rooms.update(r for r in ids if isinstance(r, str))
        return rooms


def _config(params: ListParams | RoomParams) -> RoomConfig:
    return RoomConfig(params.timeline_limit, frozenset((t, k) for t, k in params.required_state))


def _has_news(entry: dict[str, Any]) -> bool:
    """An incremental room entry says something (not only counts and `bump_stamp`)."""
    keys = ("timeline", "required_state", "name", "avatar", "heroes", "joined_count", "invite_state", "initial")
    return any(entry.get(k) for k in keys) or "invited_count" in entry
