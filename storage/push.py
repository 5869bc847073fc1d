"""Push: each user's push rules, their pushers, and the notifications push rules produced.

A notification is one row per user, keyed by (user, room, event position): unread counts are one
range scan from the read receipt. What the notification says (actions, time, thread) is the same for
most of the users an event notifies, so it is written once per event, as a list of groups; each
user's row names its group. `/notifications` merges the user's rooms by position.

Delivery to push gateways reads the same rows: a pusher's position is the stream position of the last
notification its gateway took, and what it is owed is the user's notifications after it
(`notified_after`). Nothing more is written with an event for its pushers.
"""

from __future__ import annotations

import heapq
import itertools
import struct
from collections.abc import Iterator
from typing import Any, Final

import orjson

from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

PUSH_RULES = Table("push_rules", ("str",), "json", "user -> {stream, rules: user-defined rules, defaults: changes}")
PUSHERS = Table("pushers", ("str", "str", "str"), "json", "user, app id, pushkey -> pusher")
PUSHERS_BY_KEY = Table("pushers_by_key", ("str", "str", "str"), "empty", "app id, pushkey, user: pushers by key")
NOTIFY_ROOM = Table(
    "notify_room",
    ("str", "room", "u64"),
    "notify_count",
    "user, room, event position -> highlight flag, group in the event's record, thread",
)
NOTIFY_EVENT = Table(
    "notify_event", ("room", "u64"), "json", "room, event position -> what it notified: groups of actions, ts, thread"
)
LAST_SENT = Table("last_sent", ("str", "room", "str"), "u64", "user, room, thread -> position of their last event")
PUSH_OUTBOX = Table(
    "push_outbox",
    ("str", "u64"),
    "u64",
    "user, event position -> room: what pushers were owed before pusher positions read notify_room (emptied at start)",
)
PUSHER_POSITIONS = Table(
    "pusher_positions",
    ("str", "str", "str"),
    "u64",
    "user, app id, pushkey -> position of the last notification its gateway took",
)
TABLES = (
    PUSH_RULES,
    PUSHERS,
    PUSHERS_BY_KEY,
    NOTIFY_ROOM,
    NOTIFY_EVENT,
    LAST_SENT,
    PUSH_OUTBOX,
    PUSHER_POSITIONS,
)

# notify_room values: a flags byte, then (with GROUPED) a 2-byte group index, then the thread id.
# Schema 1 rows (flags 0 or 1, then the thread) read as group 0.
HIGHLIGHT = 0x01
GROUPED = 0x80
_FLAGS = struct.Struct(">B")
_GROUP = struct.Struct(">BH")
MAX_GROUPS = 0xFFFF
_ROOM_POSITION = struct.Struct(">QQ")


def notify_value(highlight: bool, group: int, thread: str) -> bytes:
    flags = HIGHLIGHT if highlight else 0
    head = _GROUP.pack(flags | GROUPED, group) if group else _FLAGS.pack(flags)
    return head + thread.encode()


def read_notify_value(value: bytes) -> tuple[bool, int, str]:
    """(highlight, group, thread) of a notify_room value."""
    flags = value[0]
    if flags & GROUPED:
        return bool(flags & HIGHLIGHT), int.from_bytes(value[1:3], "big"), value[3:].decode()
    return bool(flags & HIGHLIGHT), 0, value[1:].decode()


class Unread:
    """A notification not yet read: its event's position, thread ("" = main timeline), highlight."""

    __slots__ = ("highlight", "position", "thread_id")

    position: Final[int]
    thread_id: Final[str]
    highlight: Final[bool]

    def __init__(self, position: int, thread_id: str, highlight: bool) -> None:
        self.position = position
        self.thread_id = thread_id
        self.highlight = highlight

    def __repr__(self) -> str:
        return f"Unread(position={self.position!r}, thread_id={self.thread_id!r}, highlight={self.highlight!r})"


class NotificationGroup:
    """Users an event notified with the same actions."""

    __slots__ = ("actions", "highlight", "user_ids")

    actions: list[Any]
    highlight: bool
    user_ids: list[str]

    def __init__(self, actions: list[Any], highlight: bool, user_ids: list[str]) -> None:
        self.actions = actions
        self.highlight = highlight
        self.user_ids = user_ids


class PushStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        # user -> the start of their notify_room keys (prefix and user): a row per notified member and event
        self._notify_heads: dict[str, bytes] = {}

    # -- rules -----------------------------------------------------------------------------------

    def rules(self, user_id: str) -> dict[str, Any] | None:
        raw = self.store.get(PUSH_RULES, user_id.encode())
        return orjson.loads(raw) if raw is not None else None

    def put_rules(self, user_id: str, record: dict[str, Any], batch: Batch) -> None:
        batch.put(PUSH_RULES, user_id.encode(), orjson.dumps(record))

    # -- pushers ---------------------------------------------------------------------------------

    def pushers(self, user_id: str) -> list[dict[str, Any]]:
        return [orjson.loads(v) for _, v in self.store.iterate(PUSHERS, user_id.encode() + SEP)]

    def pusher_users(self, app_id: str, pushkey: str) -> list[str]:
        prefix = app_id.encode() + SEP + pushkey.encode() + SEP
        return [k[len(prefix) :].decode() for k in self.store.keys(PUSHERS_BY_KEY, prefix)]

    def put_pusher(self, user_id: str, pusher: dict[str, Any], batch: Batch) -> None:
        app_id, pushkey = pusher["app_id"], pusher["pushkey"]
        batch.put(PUSHERS, SEP.join(s.encode() for s in (user_id, app_id, pushkey)), orjson.dumps(pusher))
        batch.put(PUSHERS_BY_KEY, SEP.join(s.encode() for s in (app_id, pushkey, user_id)), b"")

    def delete_pusher(self, user_id: str, app_id: str, pushkey: str, batch: Batch) -> None:
        key = SEP.join(s.encode() for s in (user_id, app_id, pushkey))
        batch.delete(PUSHERS, key)
        batch.delete(PUSHER_POSITIONS, key)
        batch.delete(PUSHERS_BY_KEY, SEP.join(s.encode() for s in (app_id, pushkey, user_id)))

    def users_with_pushers(self) -> Iterator[str]:
        """Every user with at least one pusher, once each (skipping from user to user)."""
        start: bytes | None = None
        while True:
            key = next(self.store.keys(PUSHERS, b"", start=start), None)
            if key is None:
                return
            user = key.split(SEP, 1)[0]
            yield user.decode()
            start = user + SEP + b"\xff"

    # -- delivery to push gateways ---------------------------------------------------------------

    def notified_after(self, user_id: str, after: int, upto: int, limit: int) -> list[tuple[int, int]]:
        """(position, room) of the user's notifications with `after` < position <= `upto`, oldest
        first, at most `limit`: each room the user has notifications in, merged by position."""
        uid = user_id.encode() + SEP
        start, stop = u64(after + 1), u64(upto + 1)

        def room_rows(room: int) -> Iterator[tuple[int, int]]:
            prefix = uid + u64(room)
            for key in self.store.keys(NOTIFY_ROOM, prefix, start=start, stop=stop):
                yield read_u64(key, len(prefix)), room

        rows = heapq.merge(*(room_rows(room) for room in self._notified_rooms(user_id)))
        return list(itertools.islice(rows, limit))

    def settle_positions(self, high: int) -> None:
        """At start: every HTTP pusher has a position. A store written before pusher positions read
        notify_room owed through `push_outbox` rows: a pusher moves to just before the first row it
        was owed, or to `high` when none (the notifications the user had before the pusher are not
        owed), and the rows go. A pusher without a position (an email pusher made HTTP, then) starts
        at `high` too."""
        outbox = next(self.store.keys(PUSH_OUTBOX), None) is not None
        batch = self.store.batch()
        with batch:
            for key, raw in self.store.iterate(PUSHERS):
                if orjson.loads(raw).get("kind") != "http":
                    continue
                found = self.store.get(PUSHER_POSITIONS, key)
                if found is not None and not outbox:
                    continue
                position = read_u64(found) if found is not None else 0
                user = key.split(SEP, 1)[0]
                first = next(self.store.keys(PUSH_OUTBOX, user + SEP, start=u64(position + 1)), None)
                moved = read_u64(first, len(user) + 1) - 1 if first is not None else high
                batch.put(PUSHER_POSITIONS, key, u64(max(position, moved)))
            for key in self.store.keys(PUSH_OUTBOX):
                batch.delete(PUSH_OUTBOX, key)
            if batch.ops:
                self.store.commit_now(batch)

    def pusher_position(self, user_id: str, app_id: str, pushkey: str) -> int:
        raw = self.store.get(PUSHER_POSITIONS, SEP.join(s.encode() for s in (user_id, app_id, pushkey)))
        return read_u64(raw) if raw is not None else 0

    def set_pusher_position(self, user_id: str, app_id: str, pushkey: str, position: int, batch: Batch) -> None:
        batch.put(PUSHER_POSITIONS, SEP.join(s.encode() for s in (user_id, app_id, pushkey)), u64(position))

    def notification_at(self, user_id: str, room: int, position: int) -> tuple[dict[str, Any], bool, list[Any]] | None:
        """(the event's notification record, highlight, the user's actions) of a notification."""
        value = self.store.get(NOTIFY_ROOM, user_id.encode() + SEP + u64(room) + u64(position))
        raw = self.store.get(NOTIFY_EVENT, u64(room) + u64(position))
        if value is None or raw is None:
            return None
        record = orjson.loads(raw)
        highlight, group, _ = read_notify_value(value)
        groups = record.get("groups") or []
        actions = groups[group]["actions"] if group < len(groups) else []
        return record, highlight, actions

    def has_pusher(self, user_id: str, app_id: str, pushkey: str) -> bool:
        return self.store.get(PUSHERS, SEP.join(s.encode() for s in (user_id, app_id, pushkey))) is not None

    # -- notifications ---------------------------------------------------------------------------

    def add_notifications(
        self,
        room_id: str,
        room: int,
        position: int,
        event: int,
        ts: int,
        thread: str,
        groups: list[NotificationGroup],
        batch: Batch,
    ) -> None:
        """The notifications of the event at timeline `position` (short id `event`): one row per user,
        the record once. `thread` is the thread root ("" = main timeline)."""
        groups = groups[:MAX_GROUPS]
        record = {
            "room_id": room_id,
            "event": event,
            "ts": ts,
            "thread": thread,
            "groups": [{"actions": g.actions, "highlight": g.highlight} for g in groups],
        }
        at = _ROOM_POSITION.pack(room, position)  # u64(room) + u64(position)
        ops = batch.ops  # what batch.put does, without a call per row (one row per notified member)
        ops.append((NOTIFY_EVENT.prefix + at, orjson.dumps(record)))
        suffix = SEP + at
        heads = self._notify_heads
        for index, group in enumerate(groups):
            value = notify_value(group.highlight, index, thread)
            try:
                ops.extend([(heads[user_id] + suffix, value) for user_id in group.user_ids])
            except KeyError:  # someone not seen lately: learn their key prefix, then the rows again
                if len(heads) >= 100_000:
                    heads.clear()
                for user_id in group.user_ids:
                    if user_id not in heads:
                        heads[user_id] = NOTIFY_ROOM.prefix + user_id.encode()
                ops.extend([(heads[user_id] + suffix, value) for user_id in group.user_ids])

    def unread(self, user_id: str, room: int, after: int) -> Iterator[Unread]:
        """Notifications in `room` for events after timeline position `after`."""
        prefix = user_id.encode() + SEP + u64(room)
        for k, v in self.store.iterate(NOTIFY_ROOM, prefix, start=u64(after + 1)):
            highlight, _, thread = read_notify_value(v)
            yield Unread(read_u64(k, len(prefix)), thread, highlight)

    def _notified_rooms(self, user_id: str) -> Iterator[int]:
        """The rooms in which `user_id` has notifications, by skipping from room to room."""
        prefix = user_id.encode() + SEP
        start: bytes | None = None
        while True:
            key = next(self.store.keys(NOTIFY_ROOM, prefix, start=start), None)
            if key is None:
                return
            room = read_u64(key, len(prefix))
            yield room
            start = u64(room + 1)

    def notifications(self, user_id: str, *, before: int | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """(position, record) of a user's notifications, newest first, before `before`. A record has
        room_id, room, event (short id), position, actions, highlight, ts and thread."""
        uid = user_id.encode() + SEP
        stop = u64(before) if before is not None else None

        def room_rows(room: int) -> Iterator[tuple[int, int, bytes]]:
            prefix = uid + u64(room)
            for k, v in self.store.iterate(NOTIFY_ROOM, prefix, stop=stop, reverse=True):
                yield -read_u64(k, len(prefix)), room, v

        merged = heapq.merge(*(room_rows(room) for room in self._notified_rooms(user_id)))
        for neg_position, room, value in merged:
            position = -neg_position
            raw = self.store.get(NOTIFY_EVENT, u64(room) + u64(position))
            if raw is None:
                continue
            record = orjson.loads(raw)
            highlight, group, thread = read_notify_value(value)
            groups = record.get("groups") or []
            actions = groups[group]["actions"] if group < len(groups) else []
            yield (
                position,
                {
                    "room_id": record["room_id"],
                    "room": room,
                    "event": record["event"],
                    "position": position,
                    "actions": actions,
                    "highlight": highlight,
                    "ts": record["ts"],
                    "thread": thread,
                },
            )

    def set_last_sent(self, user_id: str, room: int, thread_id: str, position: int, batch: Batch) -> None:
        """A user's own event counts as read up to it (spec: push "Marking notifications as read")."""
        batch.put(LAST_SENT, user_id.encode() + SEP + u64(room) + thread_id.encode(), u64(position))

    def last_sent(self, user_id: str, room: int) -> dict[str, int]:
        """Thread ("" = main timeline) -> position of the user's last event there."""
        prefix = user_id.encode() + SEP + u64(room)
        return {k[len(prefix) :].decode(): read_u64(v) for k, v in self.store.iterate(LAST_SENT, prefix)}


# Schema 1 kept a copy of the whole record per user: user, position -> record (with room, position).
_SCHEMA1_NOTIFY_USER = b"notify_user" + SEP


def migrate_notification_records(store: Store, batch: Batch) -> None:
    """Schema 1 -> 2: the per-user copies of each notification record become one record per event,
    and each user's notify_room row names its group in it."""
    records: dict[tuple[int, int], dict[str, Any]] = {}
    regroup: list[tuple[bytes, int, int, bool, str, int]] = []
    for key, value in store.db.iterator(prefix=_SCHEMA1_NOTIFY_USER):
        batch.ops.append((key, None))
        user = key[len(_SCHEMA1_NOTIFY_USER) : -9]
        old = orjson.loads(value)
        room, position = int(old["room"]), int(old["position"])
        thread = str(old.get("thread") or "")
        record = records.setdefault(
            (room, position),
            {"room_id": old["room_id"], "event": old["event"], "ts": old["ts"], "thread": thread, "groups": []},
        )
        groups: list[dict[str, Any]] = record["groups"]
        actions = old.get("actions") or []
        index = next((i for i, g in enumerate(groups) if g["actions"] == actions), None)
        if index is None:
            index = len(groups)
            groups.append({"actions": actions, "highlight": bool(old.get("highlight"))})
        if index:
            regroup.append((user, room, position, bool(old.get("highlight")), thread, index))
    for (room, position), record in records.items():
        batch.put(NOTIFY_EVENT, u64(room) + u64(position), orjson.dumps(record))
    for user, room, position, highlight, thread, index in regroup:
        batch.put(NOTIFY_ROOM, user + SEP + u64(room) + u64(position), notify_value(highlight, index, thread))
