"""Events, their metadata and their auth chains.

An event is stored once as canonical JSON under its short id. Its metadata (room, stream position,
depth, the state snapshot before it, flags) is a fixed-size record beside it, so indexes can be
checked and rebuilt without parsing JSON.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

import orjson

from storage.cache import DEFAULT_BUDGET_MB, CacheRegistry, LruCache
from storage.codec import u64
from storage.engine import Batch, Store, Table

EVENT_JSON = Table("event_json", ("event",), "json", "short event id -> the event (PDU) as canonical JSON")
EVENT_META = Table("event_meta", ("event",), "event_meta", "short event id -> room, position, depth, state, flags")
EVENT_REJECTION = Table("event_rejection", ("event",), "str", "short event id -> why it was rejected")
AUTH_CHAIN = Table("auth_chain", ("event",), "event*", "short event id -> its full auth chain (short ids, sorted)")
TABLES = (EVENT_JSON, EVENT_META, EVENT_REJECTION, AUTH_CHAIN)

OUTLIER = 1  # stored without a place in the timeline or known state (fetched for auth or state)
REJECTED = 2  # failed the auth rules; kept so it is not fetched again, never served
SOFT_FAILED = 4  # valid but not allowed by the current state; not in the timeline's current state
REDACTED = 8  # the stored JSON is the redacted form (content hash mismatch, or redaction applied)
STATE = 16  # a state event
BACKFILLED = 32  # placed in the timeline before the live events

_META = struct.Struct(">QQQQQQB")  # room, stream position, depth, state before, state after, state key, flags


class EventMeta:
    __slots__ = ("depth", "flags", "room", "state_after", "state_before", "state_key", "stream")

    room: Final[int]
    stream: Final[int]  # position on the global stream (live events) or in the backfill order; 0 for outliers
    depth: Final[int]
    state_before: Final[int]  # snapshot id of the state before the event; 0 when unknown (outliers)
    state_after: Final[int]  # the state after it: state_before plus the event if it is accepted state
    state_key: Final[int]  # short state key for state events, else 0
    flags: Final[int]

    def __init__(
        self, room: int, stream: int, depth: int, state_before: int, state_after: int, state_key: int, flags: int
    ) -> None:
        self.room = room
        self.stream = stream
        self.depth = depth
        self.state_before = state_before
        self.state_after = state_after
        self.state_key = state_key
        self.flags = flags

    def __repr__(self) -> str:
        return (
            f"EventMeta(room={self.room!r}, stream={self.stream!r}, depth={self.depth!r}, "
            f"state_before={self.state_before!r}, state_after={self.state_after!r}, "
            f"state_key={self.state_key!r}, flags={self.flags!r})"
        )

    def encode(self) -> bytes:
        return _META.pack(
            self.room, self.stream, self.depth, self.state_before, self.state_after, self.state_key, self.flags
        )

    @classmethod
    def decode(cls, raw: bytes) -> EventMeta:
        return cls(*_META.unpack(raw))

    @property
    def outlier(self) -> bool:
        return bool(self.flags & OUTLIER)

    @property
    def rejected(self) -> bool:
        return bool(self.flags & REJECTED)

    @property
    def soft_failed(self) -> bool:
        return bool(self.flags & SOFT_FAILED)


class EventStore:
    def __init__(self, store: Store, caches: CacheRegistry | None = None) -> None:
        self.store = store
        caches = caches if caches is not None else CacheRegistry(DEFAULT_BUDGET_MB)
        self._json: LruCache[int, dict[str, Any]] = caches.lru("events.json", "events.json")
        self._meta: LruCache[int, EventMeta] = caches.lru("events.meta", "events.meta")
        self._chains: LruCache[int, tuple[int, ...]] = caches.lru("events.auth_chains", "events.auth_chains")

    # -- reading ---------------------------------------------------------------------------------

    def get_json(self, short: int) -> dict[str, Any] | None:
        """The stored event as a dict. Shared with the cache: callers must not modify it."""
        ev = self._json.get(short)
        if ev is not None:
            return ev
        raw = self.store.get(EVENT_JSON, u64(short))
        if raw is None:
            return None
        ev = orjson.loads(raw)
        self._json.put(short, ev)
        return ev  # type: ignore[no-any-return]

    def get_raw(self, short: int) -> bytes | None:
        return self.store.get(EVENT_JSON, u64(short))

    def get_meta(self, short: int) -> EventMeta | None:
        meta = self._meta.get(short)
        if meta is not None:
            return meta
        raw = self.store.get(EVENT_META, u64(short))
        if raw is None:
            return None
        meta = EventMeta.decode(raw)
        self._meta.put(short, meta)
        return meta

    def has(self, short: int) -> bool:
        return self.get_meta(short) is not None

    def rejection_reason(self, short: int) -> str | None:
        raw = self.store.get(EVENT_REJECTION, u64(short))
        return raw.decode() if raw is not None else None

    def auth_chain(self, short: int) -> tuple[int, ...] | None:
        """The stored auth chain of a state event (sorted short ids), or None if not stored."""
        chain = self._chains.get(short)
        if chain is not None:
            return chain
        raw = self.store.get(AUTH_CHAIN, u64(short))
        if raw is None:
            return None
        chain = struct.unpack(f">{len(raw) // 8}Q", raw)
        self._chains.put(short, chain)
        return chain

    # -- writing ---------------------------------------------------------------------------------

    def put(
        self,
        short: int,
        event_json: bytes,
        meta: EventMeta,
        batch: Batch,
        *,
        parsed: dict[str, Any] | None = None,
        rejection: str | None = None,
    ) -> None:
        batch.put(EVENT_JSON, u64(short), event_json)
        self.put_meta(short, meta, batch)
        if rejection is not None:
            batch.put(EVENT_REJECTION, u64(short), rejection.encode())
        if parsed is not None:
            batch.on_commit.append(lambda: self._json.put(short, parsed))
        else:
            batch.on_commit.append(lambda: self._json.discard(short))

    def put_meta(self, short: int, meta: EventMeta, batch: Batch) -> None:
        batch.put(EVENT_META, u64(short), meta.encode())
        # the cache is updated only once the write is durable
        batch.on_commit.append(lambda: self._meta.put(short, meta))

    def replace_json(self, short: int, event_json: bytes, batch: Batch) -> None:
        """Overwrite the stored JSON (redaction of a stored event)."""
        batch.put(EVENT_JSON, u64(short), event_json)
        batch.on_commit.append(lambda: self._json.discard(short))

    def put_auth_chain(self, short: int, chain: Iterable[int], batch: Batch) -> tuple[int, ...]:
        ordered = tuple(sorted(set(chain)))
        batch.put(AUTH_CHAIN, u64(short), struct.pack(f">{len(ordered)}Q", *ordered))
        batch.on_commit.append(lambda: self._chains.put(short, ordered))
        return ordered
