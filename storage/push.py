"""Push: each user's push rules, their pushers, and the notifications push rules produced.

Notifications are kept twice: per (user, room) by the event's timeline position, so unread counts
are one range scan from the read receipt; and per user by a position on the global stream, which
orders `/notifications` and tells `/sync` which rooms' counts changed since a token.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

PUSH_RULES = Table("push_rules", ("str",), "json", "user -> {stream, rules: user-defined rules, defaults: changes}")
PUSHERS = Table("pushers", ("str", "str", "str"), "json", "user, app id, pushkey -> pusher")
PUSHERS_BY_KEY = Table("pushers_by_key", ("str", "str", "str"), "empty", "app id, pushkey, user: pushers by key")
NOTIFY_ROOM = Table(
    "notify_room", ("str", "room", "u64"), "notify_count", "user, room, event position -> highlight flag, thread"
)
NOTIFY_USER = Table("notify_user", ("str", "u64"), "json", "user, position -> notification (room, event, actions)")
LAST_SENT = Table("last_sent", ("str", "room", "str"), "u64", "user, room, thread -> position of their last event")
TABLES = (PUSH_RULES, PUSHERS, PUSHERS_BY_KEY, NOTIFY_ROOM, NOTIFY_USER, LAST_SENT)

HIGHLIGHT = 1
_FLAGS = struct.Struct(">B")


@dataclass(slots=True, frozen=True)
class Unread:
    """A notification not yet read: its event's position, thread ("" = main timeline), highlight."""

    position: int
    thread_id: str
    highlight: bool


class PushStore:
    def __init__(self, store: Store) -> None:
        self.store = store

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
        batch.delete(PUSHERS, SEP.join(s.encode() for s in (user_id, app_id, pushkey)))
        batch.delete(PUSHERS_BY_KEY, SEP.join(s.encode() for s in (app_id, pushkey, user_id)))

    def has_pusher(self, user_id: str, app_id: str, pushkey: str) -> bool:
        return self.store.get(PUSHERS, SEP.join(s.encode() for s in (user_id, app_id, pushkey))) is not None

    # -- notifications ---------------------------------------------------------------------------

    def add_notification(
        self, user_id: str, room: int, position: int, stream: int, record: dict[str, Any], batch: Batch
    ) -> None:
        """A notification for the event at timeline `position`, logged at `stream`; `record` holds
        room_id, event (short id), actions, ts, highlight and thread ("" = main timeline)."""
        flags = HIGHLIGHT if record.get("highlight") else 0
        thread = str(record.get("thread") or "")
        uid = user_id.encode()
        batch.put(NOTIFY_ROOM, uid + SEP + u64(room) + u64(position), _FLAGS.pack(flags) + thread.encode())
        batch.put(NOTIFY_USER, uid + SEP + u64(stream), orjson.dumps({**record, "position": position, "room": room}))

    def add_notifications(
        self, user_ids: list[str], room: int, position: int, stream: int, record: dict[str, Any], batch: Batch
    ) -> None:
        """`add_notification` for several users with the same record, encoded once."""
        flags = HIGHLIGHT if record.get("highlight") else 0
        room_value = _FLAGS.pack(flags) + str(record.get("thread") or "").encode()
        room_suffix = SEP + u64(room) + u64(position)
        user_suffix = SEP + u64(stream)
        user_value = orjson.dumps({**record, "position": position, "room": room})
        room_table, user_table, ops = NOTIFY_ROOM.prefix, NOTIFY_USER.prefix, batch.ops
        for user_id in user_ids:  # what batch.put does, without a call per row (a row per member and event)
            uid = user_id.encode()
            ops.append((room_table + uid + room_suffix, room_value))
            ops.append((user_table + uid + user_suffix, user_value))

    def unread(self, user_id: str, room: int, after: int) -> Iterator[Unread]:
        """Notifications in `room` for events after timeline position `after`."""
        prefix = user_id.encode() + SEP + u64(room)
        for k, v in self.store.iterate(NOTIFY_ROOM, prefix, start=u64(after + 1)):
            yield Unread(read_u64(k, len(prefix)), v[1:].decode(), bool(v[0] & HIGHLIGHT))

    def notifications(
        self, user_id: str, *, before: int | None = None, after: int = 0
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """(stream position, record) of a user's notifications, newest first, in (after, before)."""
        prefix = user_id.encode() + SEP
        stop = u64(before) if before is not None else None
        for k, v in self.store.iterate(NOTIFY_USER, prefix, start=u64(after + 1), stop=stop, reverse=True):
            yield read_u64(k, len(prefix)), orjson.loads(v)

    def set_last_sent(self, user_id: str, room: int, thread_id: str, position: int, batch: Batch) -> None:
        """A user's own event counts as read up to it (spec: push "Marking notifications as read")."""
        batch.put(LAST_SENT, user_id.encode() + SEP + u64(room) + thread_id.encode(), u64(position))

    def last_sent(self, user_id: str, room: int) -> dict[str, int]:
        """Thread ("" = main timeline) -> position of the user's last event there."""
        prefix = user_id.encode() + SEP + u64(room)
        return {k[len(prefix) :].decode(): read_u64(v) for k, v in self.store.iterate(LAST_SENT, prefix)}

    def rooms_changed(self, user_id: str, after: int, upto: int) -> set[int]:
        """Rooms that got a notification for this user logged at a position in (after, upto]."""
        prefix = user_id.encode() + SEP
        return {
            int(orjson.loads(v)["room"])
            for _, v in self.store.iterate(NOTIFY_USER, prefix, start=u64(after + 1), stop=u64(upto + 1))
        }
