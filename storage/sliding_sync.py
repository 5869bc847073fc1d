"""Tables of simplified sliding sync (MSC4186): each local user's rooms ordered by activity, and the
state of each sliding sync connection.

The activity index answers "this user's rooms, most active first" with one prefix scan: its keys
are (user, inverted stamp, room), so LevelDB's order is the list order. A room's stamp for a user
is the position of their membership event, or for a joined room the later of that and the room's
last "bump" event (a message, not a reaction or state change: `ROOM_BUMP`). The service decides
what bumps and who is local; this module keeps the keys consistent, also when several events of
one batch touch the same user and room (the batch's own writes are remembered until it lands).

A connection (user, device, `conn_id`) keeps at most two positions: the one the client last
used and the one answered to it; each position holds what had been sent as of it (JSON).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

ROOM_BUMP = Table("room_bump", ("room",), "u64", "room -> stream position of its last bump event (sliding sync)")
USER_ACTIVITY = Table(
    "user_activity", ("str", "u64", "room"), "empty", "local user, inverted activity stamp, room: rooms by activity"
)
USER_ACTIVITY_AT = Table("user_activity_at", ("str", "room"), "u64", "local user, room -> its activity stamp")
SS_CONNECTIONS = Table(
    "ss_connections", ("str", "str", "str"), "json", "user, device, conn_id -> live positions of a sliding sync"
)
SS_POSITIONS = Table(
    "ss_positions", ("str", "str", "str", "u64"), "json", "user, device, conn_id, position -> what was sent as of it"
)
TABLES = (ROOM_BUMP, USER_ACTIVITY, USER_ACTIVITY_AT, SS_CONNECTIONS, SS_POSITIONS)

_MAX = 2**64 - 1


def _activity_key(user: bytes, stamp: int, room: int) -> bytes:
    return user + SEP + u64(_MAX - stamp) + u64(room)


class _Pending:
    """What one uncommitted batch wrote to the index, so later events of the batch build on it."""

    __slots__ = ("bumps", "joined", "stamps")

    def __init__(self) -> None:
        self.stamps: dict[tuple[str, int], int | None] = {}  # (user, room) -> stamp (None: removed)
        self.bumps: dict[int, int] = {}
        self.joined: dict[int, dict[str, bool]] = {}  # room -> user -> joined now


class RoomActivityStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._pending: dict[int, _Pending] = {}

    def _of(self, batch: Batch) -> _Pending:
        key = id(batch)
        found = self._pending.get(key)
        if found is None:
            found = self._pending[key] = _Pending()

            def forget() -> None:
                self._pending.pop(key, None)

            batch.on_commit.append(forget)
            batch.on_abort.append(forget)
        return found

    # -- reading ---------------------------------------------------------------------------------

    def by_activity(self, user_id: str) -> Iterator[tuple[int, int]]:
        """(room, stamp) of the user's rooms, the most recently active first."""
        prefix = user_id.encode() + SEP
        cut = len(prefix)
        for k in self.store.keys(USER_ACTIVITY, prefix):
            yield read_u64(k, cut + 8), _MAX - read_u64(k, cut)

    def stamp(self, user_id: str, room: int) -> int | None:
        raw = self.store.get(USER_ACTIVITY_AT, user_id.encode() + SEP + u64(room))
        return read_u64(raw) if raw else None

    def bump(self, room: int, batch: Batch | None = None) -> int:
        if batch is not None:
            pending = self._pending.get(id(batch))
            if pending is not None and room in pending.bumps:
                return pending.bumps[room]
        raw = self.store.get(ROOM_BUMP, u64(room))
        return read_u64(raw) if raw else 0

    def joined_in_batch(self, room: int, batch: Batch) -> dict[str, bool]:
        """Users whose membership of `room` changed earlier in `batch`: True if they are joined now."""
        pending = self._pending.get(id(batch))
        return dict(pending.joined.get(room, {})) if pending is not None else {}

    # -- writing ---------------------------------------------------------------------------------

    def set_bump(self, room: int, stream: int, batch: Batch) -> None:
        batch.put(ROOM_BUMP, u64(room), u64(stream))
        self._of(batch).bumps[room] = stream

    def set_stamp(self, user_id: str, room: int, stamp: int, batch: Batch) -> None:
        pending = self._of(batch)
        old = self._old(pending, user_id, room)
        if old == stamp:
            return
        uid = user_id.encode()
        if old is not None:
            batch.delete(USER_ACTIVITY, _activity_key(uid, old, room))
        batch.put(USER_ACTIVITY, _activity_key(uid, stamp, room), b"")
        batch.put(USER_ACTIVITY_AT, uid + SEP + u64(room), u64(stamp))
        pending.stamps[(user_id, room)] = stamp

    def remove(self, user_id: str, room: int, batch: Batch) -> None:
        pending = self._of(batch)
        old = self._old(pending, user_id, room)
        uid = user_id.encode()
        if old is not None:
            batch.delete(USER_ACTIVITY, _activity_key(uid, old, room))
        batch.delete(USER_ACTIVITY_AT, uid + SEP + u64(room))
        pending.stamps[(user_id, room)] = None

    def note_membership(self, user_id: str, room: int, joined: bool, batch: Batch) -> None:
        self._of(batch).joined.setdefault(room, {})[user_id] = joined

    def _old(self, pending: _Pending, user_id: str, room: int) -> int | None:
        if (user_id, room) in pending.stamps:
            return pending.stamps[(user_id, room)]
        return self.stamp(user_id, room)


class ConnectionStore:
    """Sliding sync connections and the state kept at each of their positions."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def _key(user_id: str, device_id: str, conn_id: str) -> bytes:
        return user_id.encode() + SEP + device_id.encode() + SEP + conn_id.encode()

    def connection(self, user_id: str, device_id: str, conn_id: str) -> dict[str, Any] | None:
        raw = self.store.get(SS_CONNECTIONS, self._key(user_id, device_id, conn_id))
        return orjson.loads(raw) if raw is not None else None

    def position(self, user_id: str, device_id: str, conn_id: str, position: int) -> dict[str, Any] | None:
        raw = self.store.get(SS_POSITIONS, self._key(user_id, device_id, conn_id) + SEP + u64(position))
        return orjson.loads(raw) if raw is not None else None

    def save(
        self,
        user_id: str,
        device_id: str,
        conn_id: str,
        parent: int | None,
        state: dict[str, Any],
        batch: Batch,
    ) -> int:
        """Record a new position after `parent` (None: the connection starts again); every other
        position of the connection is dropped, so at most two stay. Returns the new position."""
        key = self._key(user_id, device_id, conn_id)
        conn = self.connection(user_id, device_id, conn_id) or {"live": [], "next": 1}
        position = int(conn["next"])
        keep = [parent] if parent is not None and parent in conn["live"] else []
        for old in conn["live"]:
            if old not in keep:
                batch.delete(SS_POSITIONS, key + SEP + u64(old))
        batch.put(SS_POSITIONS, key + SEP + u64(position), orjson.dumps(state))
        batch.put(SS_CONNECTIONS, key, orjson.dumps({"live": [*keep, position], "next": position + 1}))
        return position

    def delete_device(self, user_id: str, device_id: str, batch: Batch) -> None:
        prefix = user_id.encode() + SEP + device_id.encode() + SEP
        for k in self.store.keys(SS_CONNECTIONS, prefix):
            batch.delete(SS_CONNECTIONS, k)
        for k in self.store.keys(SS_POSITIONS, prefix):
            batch.delete(SS_POSITIONS, k)


# -- schema 4 -> 5: the activity index for data written before it existed ------------------------

BUMP_EVENT_TYPES = frozenset(
    {
        # Synapse's SLIDING_SYNC_DEFAULT_BUMP_EVENT_TYPES: what clients sort their room list by
        "m.room.create",
        "m.room.message",
        "m.room.encrypted",
        "m.sticker",
        "m.call.invite",
        "m.poll.start",
        "m.beacon_info",
    }
)
_SCAN_FOR_BUMP = 10_000  # events looked at per room for its last bump event


def backfill_room_activity(store: Store, batch: Batch) -> None:
    """Fill the activity index from the rooms, timelines and memberships already stored."""
    from storage.accounts import ACCOUNTS
    from storage.events import EVENT_JSON
    from storage.rooms import LIVE_BASE, ROOM_INFO, TIMELINE, USER_ROOMS, read_user_room

    bumps: dict[int, int] = {}
    for k in store.keys(ROOM_INFO):
        room = read_u64(k)
        for i, (tk, tv) in enumerate(store.iterate(TIMELINE, u64(room), start=u64(LIVE_BASE), reverse=True)):
            if i >= _SCAN_FOR_BUMP:
                break
            raw = store.get(EVENT_JSON, tv)
            event_type = orjson.loads(raw).get("type") if raw else None
            if event_type in BUMP_EVENT_TYPES:
                bumps[room] = read_u64(tk, 8) - LIVE_BASE
                batch.put(ROOM_BUMP, u64(room), u64(bumps[room]))
                break
    for k in store.keys(ACCOUNTS):
        user = k
        for uk, uv in store.iterate(USER_ROOMS, user + SEP):
            room = read_u64(uk, len(user) + 1)
            membership, stream = read_user_room(uv)
            stamp = max(stream, bumps.get(room, 0)) if membership == "join" else stream
            batch.put(USER_ACTIVITY, _activity_key(user, stamp, room), b"")
            batch.put(USER_ACTIVITY_AT, user + SEP + u64(room), u64(stamp))
