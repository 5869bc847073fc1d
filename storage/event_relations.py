"""Event relationships: parent -> children per relation type, a per-parent summary (counts, thread
summary), the threads of a room ordered by their latest reply, and who took part in each thread.

The room service decides what goes in (spec: client-server-api "Forming relationships between
events"); this module stores it. Parents are named by event id: a child may arrive before its parent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import orjson

from storage.batch_view import BatchView, Reader
from storage.codec import SEP, read_u64, u64
from storage.engine import Table

RELATIONS = Table(
    "relations",
    ("room", "str", "str", "order"),
    "json",
    "room, parent event id, rel_type, child order -> [child short, type, sender, key, has m.new_content]",
)
RELATION_SUMMARY = Table(
    "relation_summary", ("room", "str"), "json", "room, parent event id -> counts per rel_type, thread summary"
)
THREADS = Table("threads", ("room", "order", "str"), "empty", "room, order of the latest reply, thread root id")
THREAD_USERS = Table("thread_users", ("room", "str", "str"), "empty", "room, thread root id, user who replied")
TABLES = (RELATIONS, RELATION_SUMMARY, THREADS, THREAD_USERS)


class Child:
    __slots__ = ("key", "new_content", "order", "rel_type", "sender", "short", "type")

    order: Final[int]
    rel_type: Final[str]
    short: Final[int]
    type: Final[str]
    sender: Final[str]
    key: Final[str | None]  # the annotation key (m.annotation)
    new_content: Final[bool]  # has m.new_content (m.replace validity)

    def __init__(
        self, order: int, rel_type: str, short: int, type: str, sender: str, key: str | None, new_content: bool
    ) -> None:
        self.order = order
        self.rel_type = rel_type
        self.short = short
        self.type = type
        self.sender = sender
        self.key = key
        self.new_content = new_content


def _parent_prefix(room: int, parent_id: str) -> bytes:
    return u64(room) + parent_id.encode() + SEP


def _child_key(room: int, parent_id: str, rel_type: str, order: int) -> bytes:
    return _parent_prefix(room, parent_id) + rel_type.encode() + SEP + u64(order)


class RelationStore:
    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    # -- reading ---------------------------------------------------------------------------------

    def children(
        self,
        room: int,
        parent_id: str,
        rel_type: str | None = None,
        *,
        reverse: bool = False,
        reader: Reader | None = None,
    ) -> Iterator[Child]:
        """Children of a parent, by timeline order within each rel_type (all rel types: grouped by type)."""
        prefix = _parent_prefix(room, parent_id)
        if rel_type is not None:
            prefix += rel_type.encode() + SEP
        for k, v in (reader or self.reader).iterate(RELATIONS, prefix, reverse=reverse):
            rest = k[len(_parent_prefix(room, parent_id)) :]
            rt = rest[:-9].decode()
            short, etype, sender, key, new_content = orjson.loads(v)
            yield Child(read_u64(rest, len(rest) - 8), rt, short, etype, sender, key, bool(new_content))

    def summary(self, room: int, parent_id: str, reader: Reader | None = None) -> dict[str, Any] | None:
        raw = (reader or self.reader).get(RELATION_SUMMARY, u64(room) + parent_id.encode())
        return orjson.loads(raw) if raw is not None else None

    def thread_participant(self, room: int, root_id: str, user_id: str) -> bool:
        return self.reader.get(THREAD_USERS, u64(room) + root_id.encode() + SEP + user_id.encode()) is not None

    def threads(self, room: int, *, before: int | None = None) -> Iterator[tuple[int, str]]:
        """(latest reply order, root id) of a room's threads, most recently active first, order < `before`."""
        for k, _ in self.reader.iterate(THREADS, u64(room), reverse=True):
            order = read_u64(k, 8)
            if before is not None and order >= before:
                continue
            yield order, k[16:].decode()

    # -- writing (through a BatchView, so later events of the batch see earlier ones) -------------

    def add_child(self, view: BatchView, room: int, parent_id: str, child: Child) -> None:
        value = [child.short, child.type, child.sender, child.key, child.new_content]
        view.put(RELATIONS, _child_key(room, parent_id, child.rel_type, child.order), orjson.dumps(value))

    def remove_child(self, view: BatchView, room: int, parent_id: str, rel_type: str, order: int) -> None:
        view.delete(RELATIONS, _child_key(room, parent_id, rel_type, order))

    def put_summary(self, view: BatchView, room: int, parent_id: str, summary: dict[str, Any] | None) -> None:
        key = u64(room) + parent_id.encode()
        if summary:
            view.put(RELATION_SUMMARY, key, orjson.dumps(summary, option=orjson.OPT_SORT_KEYS))
        else:
            view.delete(RELATION_SUMMARY, key)

    def move_thread(
        self, view: BatchView, room: int, root_id: str, old_order: int | None, new_order: int | None
    ) -> None:
        if old_order:
            view.delete(THREADS, u64(room) + u64(old_order) + root_id.encode())
        if new_order:
            view.put(THREADS, u64(room) + u64(new_order) + root_id.encode(), b"")

    def set_thread_users(self, view: BatchView, room: int, root_id: str, add: set[str], remove: set[str]) -> None:
        prefix = u64(room) + root_id.encode() + SEP
        for user in remove - add:
            view.delete(THREAD_USERS, prefix + user.encode())
        for user in add:
            view.put(THREAD_USERS, prefix + user.encode(), b"")

    def thread_users(self, view: BatchView, room: int, root_id: str) -> set[str]:
        prefix = u64(room) + root_id.encode() + SEP
        return {k[len(prefix) :].decode() for k, _ in view.iterate(THREAD_USERS, prefix)}
