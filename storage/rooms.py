"""Per-room tables: room info, current state, forward extremities, the timeline, membership indexes
and the servers in each room. The room service decides what goes in; this module stores it."""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import Any, Final

import orjson

from storage.cache import DEFAULT_BUDGET_MB, CacheRegistry, LruCache
from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

ROOM_INFO = Table("room_info", ("room",), "json", "short room id -> version, current state snapshot, creator...")
ROOM_STATE = Table("room_state", ("room", "statekey"), "event", "room, short state key -> event in the current state")
ROOM_EXTREMITIES = Table("room_extremities", ("room", "event"), "empty", "room, short event id: forward extremities")
TIMELINE = Table("timeline", ("room", "order"), "event", "room, order -> short event id (live after backfilled)")
ROOM_MEMBERS = Table("room_members", ("room", "str", "str"), "event", "room, membership, user id -> member event")
USER_ROOMS = Table("user_rooms", ("str", "room"), "user_room", "user id, room -> membership, position, event")
ROOM_SERVERS = Table("room_servers", ("room", "str", "str"), "empty", "room, server, user: joined members by server")
INVITE_STATE = Table("invite_state", ("str", "room"), "json", "user id, room -> stripped state shown with an invite")
INDEX_FAILURES = Table(
    "index_failures", ("event",), "json", "short event id -> why its room indexes could not be written"
)
TABLES = (
    ROOM_INFO,
    ROOM_STATE,
    ROOM_EXTREMITIES,
    TIMELINE,
    ROOM_MEMBERS,
    USER_ROOMS,
    ROOM_SERVERS,
    INVITE_STATE,
    INDEX_FAILURES,
)

# Timeline order: live events at LIVE_BASE + stream position, backfilled ones below LIVE_BASE.
LIVE_BASE = 2**63

MEMBERSHIPS = ("join", "invite", "leave", "ban", "knock")
_USER_ROOM = struct.Struct(">BQQ")  # membership index, stream position, short event id

# Told of every membership change in its batch: (batch, room, user id, membership or None when
# removed, the membership it replaces, stream position). Indexes kept beside memberships (sliding
# sync's activity index) use it.
MembershipHook = Callable[[Batch, int, str, "str | None", "str | None", int], None]


def read_user_room(raw: bytes) -> tuple[str, int]:
    """(membership, stream position) of a `USER_ROOMS` value."""
    m, stream, _ = _USER_ROOM.unpack(raw)
    return MEMBERSHIPS[m], stream


class UserRoom:
    __slots__ = ("event", "membership", "room", "stream")

    room: Final[int]
    membership: Final[str]
    stream: Final[int]
    event: Final[int]

    def __init__(self, room: int, membership: str, stream: int, event: int) -> None:
        self.room = room
        self.membership = membership
        self.stream = stream
        self.event = event

    def __repr__(self) -> str:
        return (
            f"UserRoom(room={self.room!r}, membership={self.membership!r}, stream={self.stream!r}, "
            f"event={self.event!r})"
        )


class RoomStore:
    def __init__(self, store: Store, caches: CacheRegistry | None = None) -> None:
        self.store = store
        caches = caches if caches is not None else CacheRegistry(DEFAULT_BUDGET_MB)
        self._info: LruCache[int, dict[str, Any]] = caches.lru("rooms.info", "rooms.info", part=0.5)
        # room -> forward extremities, in key order
        self._extremities: LruCache[int, list[int]] = caches.lru("rooms.extremities", "rooms.info", part=0.5)
        self.membership_hooks: list[MembershipHook] = []

    # -- room info -------------------------------------------------------------------------------

    def record_index_failure(self, batch: Batch, event: int, event_id: str, room_id: str, error: str) -> None:
        value = {"event_id": event_id, "room_id": room_id, "error": error}
        batch.put(INDEX_FAILURES, u64(event), orjson.dumps(value))

    def index_failures(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Events whose room indexes could not be written, with why."""
        for key, raw in self.store.iterate(INDEX_FAILURES):
            yield read_u64(key), orjson.loads(raw)

    def info(self, room: int) -> dict[str, Any] | None:
        info = self._info.get(room)
        if info is None:
            raw = self.store.get(ROOM_INFO, u64(room))
            if raw is None:
                return None
            info = orjson.loads(raw)
            self._info.put(room, info)
        return info

    def set_info(self, room: int, info: dict[str, Any], batch: Batch) -> None:
        batch.put(ROOM_INFO, u64(room), orjson.dumps(info, option=orjson.OPT_SORT_KEYS))
        frozen = dict(info)
        batch.on_commit.append(lambda: self._info.put(room, frozen))

    def rooms(self) -> Iterator[int]:
        for k in self.store.keys(ROOM_INFO):
            yield read_u64(k)

    # -- current state ---------------------------------------------------------------------------

    def state_event(self, room: int, state_key: int) -> int | None:
        raw = self.store.get(ROOM_STATE, u64(room) + u64(state_key))
        return read_u64(raw) if raw else None

    def current_state(self, room: int) -> dict[int, int]:
        return {read_u64(k, 8): read_u64(v) for k, v in self.store.iterate(ROOM_STATE, u64(room))}

    def set_state(self, room: int, changes: dict[int, int], removed: list[int], batch: Batch) -> None:
        for sk, ev in changes.items():
            batch.put(ROOM_STATE, u64(room) + u64(sk), u64(ev))
        for sk in removed:
            if sk not in changes:
                batch.delete(ROOM_STATE, u64(room) + u64(sk))

    # -- forward extremities ---------------------------------------------------------------------

    def extremities(self, room: int) -> list[int]:
        # Cached: every event deletes the previous extremity, and a LevelDB scan over a range full of
        # fresh deletions walks every one of them (hundreds of µs after a few thousand messages).
        cached = self._extremities.get(room)
        if cached is None:
            cached = [read_u64(k, 8) for k in self.store.keys(ROOM_EXTREMITIES, u64(room))]
            self._extremities.put(room, cached)
        return list(cached)

    def update_extremities(self, room: int, remove: list[int], add: list[int], batch: Batch) -> None:
        for ev in remove:
            batch.delete(ROOM_EXTREMITIES, u64(room) + u64(ev))
        for ev in add:
            batch.put(ROOM_EXTREMITIES, u64(room) + u64(ev), b"")

        def committed() -> None:
            cached = self._extremities.peek(room)
            if cached is not None:  # not cached: the next read scans the store, which has this write
                gone = set(remove)
                kept = [e for e in cached if e not in gone]
                self._extremities.put(room, sorted({*kept, *add}))

        batch.on_commit.append(committed)

    # -- timeline --------------------------------------------------------------------------------

    def append_timeline(self, room: int, order: int, event: int, batch: Batch) -> None:
        batch.put(TIMELINE, u64(room) + u64(order), u64(event))

    def timeline(
        self, room: int, *, after: int | None = None, before: int | None = None, reverse: bool = False
    ) -> Iterator[tuple[int, int]]:
        """(order, short event id) in timeline order, `after` < order < `before`."""
        start = u64(after + 1) if after is not None else None
        stop = u64(before) if before is not None else None
        for k, v in self.store.iterate(TIMELINE, u64(room), start=start, stop=stop, reverse=reverse):
            yield read_u64(k, 8), read_u64(v)

    def first_backfill_order(self, room: int) -> int:
        first = next(self.timeline(room), None)
        return min(first[0], LIVE_BASE) if first else LIVE_BASE

    # -- membership ------------------------------------------------------------------------------

    def set_membership(
        self,
        room: int,
        user_id: str,
        membership: str,
        event: int,
        stream: int,
        batch: Batch,
        *,
        previous: str | None,
        server: str,
    ) -> None:
        """Record `user_id`'s new membership; `previous` is the one it replaces (None if none)."""
        uid = user_id.encode()
        if previous is not None:
            batch.delete(ROOM_MEMBERS, u64(room) + previous.encode() + SEP + uid)
        batch.put(ROOM_MEMBERS, u64(room) + membership.encode() + SEP + uid, u64(event))
        batch.put(USER_ROOMS, uid + SEP + u64(room), _USER_ROOM.pack(MEMBERSHIPS.index(membership), stream, event))
        server_key = u64(room) + server.encode() + SEP + uid
        if membership == "join":
            batch.put(ROOM_SERVERS, server_key, b"")
        elif previous == "join":
            batch.delete(ROOM_SERVERS, server_key)
        if membership not in ("invite", "knock"):
            batch.delete(INVITE_STATE, uid + SEP + u64(room))
        for hook in self.membership_hooks:
            hook(batch, room, user_id, membership, previous, stream)

    def remove_membership(self, room: int, user_id: str, batch: Batch, *, previous: str, server: str) -> None:
        """Forget `user_id`'s membership (its member event left the room's state)."""
        uid = user_id.encode()
        batch.delete(ROOM_MEMBERS, u64(room) + previous.encode() + SEP + uid)
        batch.delete(USER_ROOMS, uid + SEP + u64(room))
        batch.delete(ROOM_SERVERS, u64(room) + server.encode() + SEP + uid)
        batch.delete(INVITE_STATE, uid + SEP + u64(room))
        for hook in self.membership_hooks:
            hook(batch, room, user_id, None, previous, 0)

    def members(self, room: int, membership: str = "join") -> Iterator[tuple[str, int]]:
        """(user id, member event) of everyone in `room` with that membership."""
        prefix = u64(room) + membership.encode() + SEP
        for k, v in self.store.iterate(ROOM_MEMBERS, prefix):
            yield k[len(prefix) :].decode(), read_u64(v)

    def member_count(self, room: int, membership: str = "join") -> int:
        return self.store.count(ROOM_MEMBERS, u64(room) + membership.encode() + SEP)

    def user_rooms(self, user_id: str) -> Iterator[UserRoom]:
        prefix = user_id.encode() + SEP
        for k, v in self.store.iterate(USER_ROOMS, prefix):
            m, stream, event = _USER_ROOM.unpack(v)
            yield UserRoom(read_u64(k, len(prefix)), MEMBERSHIPS[m], stream, event)

    def user_room(self, user_id: str, room: int) -> UserRoom | None:
        raw = self.store.get(USER_ROOMS, user_id.encode() + SEP + u64(room))
        if raw is None:
            return None
        m, stream, event = _USER_ROOM.unpack(raw)
        return UserRoom(room, MEMBERSHIPS[m], stream, event)

    def servers(self, room: int) -> list[str]:
        servers: list[str] = []
        prefix_len = 8
        for k in self.store.keys(ROOM_SERVERS, u64(room)):
            server = k[prefix_len:].split(SEP, 1)[0].decode()
            if not servers or servers[-1] != server:
                servers.append(server)
        return servers

    def has_server_member(self, room: int, server: str) -> bool:
        """Whether a user of `server` is joined to `room` (one key read, whatever the room's size)."""
        return next(self.store.keys(ROOM_SERVERS, u64(room) + server.encode() + SEP), None) is not None

    def server_members(self, room: int, server: str) -> Iterator[str]:
        """The users of `server` joined to `room`, in key order (stop early to read only a few)."""
        prefix = u64(room) + server.encode() + SEP
        for k in self.store.keys(ROOM_SERVERS, prefix):
            yield k[len(prefix) :].decode()

    def set_invite_state(self, user_id: str, room: int, stripped: list[dict[str, Any]], batch: Batch) -> None:
        batch.put(INVITE_STATE, user_id.encode() + SEP + u64(room), orjson.dumps(stripped))

    def invite_state(self, user_id: str, room: int) -> list[dict[str, Any]] | None:
        raw = self.store.get(INVITE_STATE, user_id.encode() + SEP + u64(room))
        return orjson.loads(raw) if raw is not None else None
