"""Read receipts: the latest receipt of each (room, user, type, thread), and the room's receipts in
stream order so `/sync` reads what changed since a token with one range scan.

Each receipt sits at a position on the global stream; updating it moves it (the old stream entry is
deleted in the same batch), so the stream table holds exactly the current receipts of a room.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import orjson

from storage.cache import DEFAULT_BUDGET_MB, CacheRegistry, LruCache
from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

RECEIPTS = Table("receipts", ("room", "str", "str", "str"), "json", "room, user, receipt type, thread -> receipt")
RECEIPT_STREAM = Table("receipt_stream", ("room", "u64"), "json", "room, position -> receipt (current ones only)")
TABLES = (RECEIPTS, RECEIPT_STREAM)


class Receipt:
    __slots__ = ("event_id", "event_position", "receipt_type", "stream", "thread_id", "ts", "user_id")

    user_id: Final[str]
    receipt_type: Final[str]
    thread_id: Final[str]  # "" for an unthreaded receipt
    event_id: Final[str]
    event_position: Final[int]  # the event's place on the live timeline (0: older than every live event)
    ts: Final[int]
    stream: Final[int]

    def __init__(
        self,
        user_id: str,
        receipt_type: str,
        thread_id: str,
        event_id: str,
        event_position: int,
        ts: int,
        stream: int,
    ) -> None:
        self.user_id = user_id
        self.receipt_type = receipt_type
        self.thread_id = thread_id
        self.event_id = event_id
        self.event_position = event_position
        self.ts = ts
        self.stream = stream

    def __repr__(self) -> str:
        return (
            f"Receipt(user_id={self.user_id!r}, receipt_type={self.receipt_type!r}, thread_id={self.thread_id!r}, "
            f"event_id={self.event_id!r}, event_position={self.event_position!r}, ts={self.ts!r}, "
            f"stream={self.stream!r})"
        )

    def encode(self) -> bytes:
        # every field, in declaration order: `decode` passes them back by name
        return orjson.dumps(
            {
                "user_id": self.user_id,
                "receipt_type": self.receipt_type,
                "thread_id": self.thread_id,
                "event_id": self.event_id,
                "event_position": self.event_position,
                "ts": self.ts,
                "stream": self.stream,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Receipt:
        return cls(**orjson.loads(raw))


def _key(room: int, user_id: str, receipt_type: str, thread_id: str) -> bytes:
    return u64(room) + SEP.join(s.encode() for s in (user_id, receipt_type, thread_id))


class ReceiptStore:
    def __init__(self, store: Store, caches: CacheRegistry | None = None) -> None:
        self.store = store
        # room -> stream position of its newest receipt
        caches = caches if caches is not None else CacheRegistry(DEFAULT_BUDGET_MB)
        self._latest: LruCache[int, int] = caches.lru("receipts.latest", "rooms.receipts")

    def get(self, room: int, user_id: str, receipt_type: str, thread_id: str) -> Receipt | None:
        raw = self.store.get(RECEIPTS, _key(room, user_id, receipt_type, thread_id))
        return Receipt.decode(raw) if raw is not None else None

    def of_user(self, room: int, user_id: str) -> Iterator[Receipt]:
        """Every receipt (all types and threads) of one user in a room."""
        for _, raw in self.store.iterate(RECEIPTS, u64(room) + user_id.encode() + SEP):
            yield Receipt.decode(raw)

    def put(self, room: int, receipt: Receipt, batch: Batch) -> None:
        old = self.get(room, receipt.user_id, receipt.receipt_type, receipt.thread_id)
        if old is not None:
            batch.delete(RECEIPT_STREAM, u64(room) + u64(old.stream))
        raw = receipt.encode()
        batch.put(RECEIPTS, _key(room, receipt.user_id, receipt.receipt_type, receipt.thread_id), raw)
        batch.put(RECEIPT_STREAM, u64(room) + u64(receipt.stream), raw)

        def published() -> None:
            known = self._latest.peek(room)
            if known is not None:  # not cached: the next `latest` reads it from the store
                self._latest.put(room, max(known, receipt.stream))

        batch.on_commit.append(published)

    def latest(self, room: int) -> int:
        """The stream position of the room's newest receipt (0 if none)."""
        found = self._latest.get(room)
        if found is None:
            last = next(self.store.keys(RECEIPT_STREAM, u64(room), reverse=True), None)
            found = read_u64(last, 8) if last is not None else 0
            self._latest.put(room, found)
        return found

    def in_room(self, room: int, after: int = 0, upto: int | None = None) -> Iterator[Receipt]:
        """The room's current receipts with a stream position in (after, upto]."""
        stop = u64(upto + 1) if upto is not None else None
        for _, raw in self.store.iterate(RECEIPT_STREAM, u64(room), start=u64(after + 1), stop=stop):
            yield Receipt.decode(raw)
