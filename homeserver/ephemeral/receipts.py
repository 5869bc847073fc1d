"""Receipts and read markers (spec: modules/receipts.md, read_markers.md).

A receipt is one batch at a new position on the global stream. `m.read` receipts wake everyone in
the room; `m.read.private` ones only their owner (spec: MUST NOT be sent to anyone else). A read
receipt moves the owner's read point: listeners (the push service's unread counts) are told.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from homeserver.account_data.service import AccountData
from homeserver.errors import MatrixError
from homeserver.notifier import Notifier
from homeserver.rooms.queries import RoomQueries
from storage.engine import Store
from storage.events import BACKFILLED
from storage.receipts import Receipt, ReceiptStore

RECEIPT_TYPES = ("m.read", "m.read.private")
FULLY_READ = "m.fully_read"


class Receipts:
    def __init__(
        self,
        store: Store,
        receipts: ReceiptStore,
        queries: RoomQueries,
        notifier: Notifier,
        account_data: AccountData,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.receipts = receipts
        self.queries = queries
        self.notifier = notifier
        self.account_data = account_data
        self.clock = clock
        self.listeners: list[Callable[[str, int], None]] = []  # told (user, room) after a read receipt moved
        self._receipt_listeners: list[Callable[[int, Receipt], None]] = []

    def add_receipt_listener(self, listener: Callable[[int, Receipt], None]) -> None:
        """At wiring time: told (room, receipt) after any receipt was written (federation passes our
        users' public ones on)."""
        self._receipt_listeners.append(listener)

    def add_read_listener(self, listener: Callable[[str, int], None]) -> None:
        """At wiring time: `listener` is told (user, room) after the user's read receipt moved."""
        self.listeners.append(listener)

    def _room(self, user_id: str, room_id: str) -> int:
        room = self.queries.room(room_id)
        if room is None or not self.queries.is_joined(user_id, room):
            raise MatrixError(403, "M_FORBIDDEN", "You are not joined to this room")
        return room

    def _event(self, room: int, event_id: str) -> tuple[int, int]:
        """(short id, position on the live timeline: 0 for a backfilled event) of an event of the room."""
        short = self.queries.event_short(event_id)
        meta = self.queries.event_meta(short) if short is not None else None
        if short is None or meta is None or meta.room != room or meta.outlier or meta.rejected:
            raise MatrixError(404, "M_NOT_FOUND", "Event not found in this room")
        return short, 0 if meta.flags & BACKFILLED else meta.stream

    async def send(
        self, user_id: str, room_id: str, receipt_type: str, event_id: str, thread_id: str | None = None
    ) -> None:
        """POST /rooms/{roomId}/receipt/{receiptType}/{eventId}."""
        if receipt_type not in (*RECEIPT_TYPES, FULLY_READ):
            raise MatrixError(400, "M_INVALID_PARAM", f"unknown receipt type {receipt_type!r}")
        if thread_id is not None and (receipt_type == FULLY_READ):
            raise MatrixError(400, "M_INVALID_PARAM", "thread_id cannot be used with m.fully_read")
        room = self._room(user_id, room_id)
        _, position = self._event(room, event_id)
        if receipt_type == FULLY_READ:
            await self.account_data.set(user_id, FULLY_READ, {"event_id": event_id}, room_id)
            return
        await self._write(user_id, room, receipt_type, event_id, position, thread_id or "")

    async def remote(
        self, user_id: str, room_id: str, receipt_type: str, event_ids: list[str], data: dict[str, Any]
    ) -> None:
        """A receipt another server sent for one of its users (spec: server-server "Receipts"): the
        newest of the events named that is in the room's timeline here."""
        room = self.queries.room(room_id)
        if room is None or receipt_type not in RECEIPT_TYPES or receipt_type == "m.read.private":
            return  # private receipts never leave their server
        best: tuple[int, str] | None = None
        for event_id in event_ids:
            try:
                _, position = self._event(room, event_id)
            except MatrixError:
                continue  # an event this server has not received (yet)
            if best is None or position > best[0]:
                best = (position, event_id)
        thread = data.get("thread_id")
        if best is not None:
            await self._write(user_id, room, receipt_type, best[1], best[0], thread if isinstance(thread, str) else "")

    async def read_markers(self, user_id: str, room_id: str, body: dict[str, Any]) -> None:
        """POST /rooms/{roomId}/read_markers: the fully read marker and/or read receipts."""
        room = self._room(user_id, room_id)
        wanted: dict[str, tuple[str, int]] = {}  # receipt type -> event id, its position
        for key in (FULLY_READ, *RECEIPT_TYPES):
            value = body.get(key)
            if value is None:
                continue
            if not isinstance(value, str):
                raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be an event id")
            wanted[key] = (value, self._event(room, value)[1])
        for key, (event_id, position) in wanted.items():
            if key == FULLY_READ:
                await self.account_data.set(user_id, FULLY_READ, {"event_id": event_id}, room_id)
            else:
                await self._write(user_id, room, key, event_id, position, "")

    async def _write(
        self, user_id: str, room: int, receipt_type: str, event_id: str, position: int, thread: str
    ) -> None:
        old = self.receipts.get(room, user_id, receipt_type, thread)
        if old is not None and (old.event_id == event_id or old.event_position > position):
            return  # receipts only move forward (a read point is never rewound)
        batch = self.store.batch()
        with batch:
            stream = batch.next_count()
            receipt = Receipt(user_id, receipt_type, thread, event_id, position, int(self.clock() * 1000), stream)
            self.receipts.put(room, receipt, batch)
            await batch.commit()
        for listener in self.listeners:
            listener(user_id, room)
        for on_receipt in self._receipt_listeners:
            on_receipt(room, receipt)
        if receipt_type == "m.read":
            self.notifier.notify(rooms=(room,), users=(user_id,))
        else:
            self.notifier.notify(users=(user_id,))

    def changed_since(self, room: int, since: int) -> bool:
        """Whether a receipt in the room moved after stream position `since`."""
        return self.receipts.latest(room) > since

    def event_for_sync(self, room: int, user_id: str, after: int, upto: int) -> dict[str, Any] | None:
        """The room's `m.receipt` event with the receipts in (after, upto] that `user_id` may see."""
        content: dict[str, Any] = {}
        for r in self.receipts.in_room(room, after, upto):
            if r.receipt_type == "m.read.private" and r.user_id != user_id:
                continue
            entry: dict[str, Any] = {"ts": r.ts}
            if r.thread_id:
                entry["thread_id"] = r.thread_id
            content.setdefault(r.event_id, {}).setdefault(r.receipt_type, {})[r.user_id] = entry
        if not content:
            return None
        return {"type": "m.receipt", "content": content}

    def read_positions(self, user_id: str, room: int) -> tuple[int, dict[str, int]]:
        """Where the user's read receipts (public and private) stand on the live timeline:
        (unthreaded, thread ("" = main timeline) -> threaded), the most advanced of each."""
        unthreaded = 0
        threads: dict[str, int] = {}
        for receipt in self.receipts.of_user(room, user_id):
            if receipt.receipt_type not in RECEIPT_TYPES:
                continue
            if not receipt.thread_id:
                unthreaded = max(unthreaded, receipt.event_position)
            else:
                key = "" if receipt.thread_id == "main" else receipt.thread_id
                threads[key] = max(threads.get(key, 0), receipt.event_position)
        return unthreaded, threads
