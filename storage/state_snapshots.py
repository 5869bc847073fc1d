"""State snapshots: a room state as a set of 16-byte entries `shortstatekey ‖ shorteventid`.

A snapshot is stored as a diff (entries added and removed) against a parent snapshot, a few layers
deep, so a state change costs about the size of the change, not the size of the room's state.
Identical states are stored once: each snapshot carries an order-free hash of its entries that is
updated from its parent's in O(change); a hash match is confirmed by comparing the states.

Layers: a root holds a full state of N entries; layer i (1 ≤ i < MAX_LAYERS) holds diffs of at most
cap(i) = (N/2)^((D-i+1)/D) entries, D = MAX_LAYERS - 1 (for N = 10,000: 5,000, 595, 71 and 8). A new
snapshot becomes a child of its parent if its diff fits the next layer; otherwise its diff is merged
with the parent's and it is attached one layer up, and so on; a diff too big for layer 1 makes a
new root. Like a counter in base cap(D), each layer is rewritten cap(i+1) times less often than the
one below, so a one-entry change costs a few times cap(D) stored entries amortised (≈ 25 for
N = 10,000, measured), not N. Reads load at most `MAX_LAYERS` records.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from storage.cache import DEFAULT_BUDGET_MB, ENTRY_BYTES, CacheRegistry, LruCache, cache_stats
from storage.codec import read_u64, u64
from storage.engine import Batch, Store, Table

SNAPSHOT = Table(
    "state_snapshot", ("snapshot",), "snapshot", "state snapshot: parent, layer, hash, added/removed entries"
)
SNAPSHOT_BY_HASH = Table(
    "state_snapshot_hash", ("bytes",), "snapshot", "hash of a state -> snapshot id (deduplication)"
)
TABLES = (SNAPSHOT, SNAPSHOT_BY_HASH)

MAX_LAYERS = 5
_NONE = 0  # a cached "no entry" (short event ids start at 1)
_HEAD = struct.Struct(">QB32sI")  # parent, layer, hash, number of added entries
_ENTRY = struct.Struct(">QQ")
_MOD = 2**256

State = Mapping[int, int]  # short state key -> short event id


def _entry_hash(k: int, v: int) -> int:
    return int.from_bytes(hashlib.sha256(_ENTRY.pack(k, v)).digest(), "big")


def state_hash(state: State) -> int:
    return sum(_entry_hash(k, v) for k, v in state.items()) % _MOD


class _Record:
    __slots__ = ("added", "hash", "layer", "parent", "removed")

    parent: int
    layer: int
    hash: int
    added: dict[int, int]
    removed: dict[int, int]

    def __init__(self, parent: int, layer: int, hash: int, added: dict[int, int], removed: dict[int, int]) -> None:
        self.parent = parent
        self.layer = layer
        self.hash = hash
        self.added = added
        self.removed = removed

    def encode(self) -> bytes:
        head = _HEAD.pack(self.parent, self.layer, self.hash.to_bytes(32, "big"), len(self.added))
        body = b"".join(_ENTRY.pack(k, v) for k, v in sorted(self.added.items()))
        body += b"".join(_ENTRY.pack(k, v) for k, v in sorted(self.removed.items()))
        return head + body

    @classmethod
    def decode(cls, raw: bytes) -> _Record:
        parent, layer, h, n_added = _HEAD.unpack_from(raw)
        off = _HEAD.size
        entries = [_ENTRY.unpack_from(raw, off + i * 16) for i in range((len(raw) - off) // 16)]
        return cls(parent, layer, int.from_bytes(h, "big"), dict(entries[:n_added]), dict(entries[n_added:]))

    @property
    def size(self) -> int:
        return len(self.added) + len(self.removed)


class StateSnapshots:
    def __init__(self, store: Store, caches: CacheRegistry | None = None, *, cache_entries: int | None = None) -> None:
        self.store = store
        last = next(store.keys(SNAPSHOT, reverse=True), None)
        self._last_id = read_u64(last) if last else 0
        caches = caches if caches is not None else CacheRegistry(DEFAULT_BUDGET_MB)
        if cache_entries is None:  # the budget's share, half for records and half for full states
            cache_entries = caches.entries_for("state.snapshots") // 2
        self._records: dict[int, _Record] = {}  # decoded records (roots hold a full state)
        self._record_entries = 0
        self._states: OrderedDict[int, State] = OrderedDict()
        self._cached_entries = 0
        self._cache_entries = cache_entries
        # (snapshot, key) -> `get`'s answer, `_NONE` for "no such entry"
        self._entries: LruCache[tuple[int, int], int] = caches.lru("state.entries", "state.entries")
        self._hits = self._misses = 0
        caches.add_reporter(self.cache_stats)
        # snapshots written by batches not yet committed, usable only by their own batch
        self._pending_by_hash: dict[int, tuple[Batch, int]] = {}
        self._pending_records: dict[int, _Record] = {}

    # -- reading ---------------------------------------------------------------------------------

    def _record(self, sid: int) -> _Record:
        rec = self._records.get(sid) or self._pending_records.get(sid)
        if rec is None:
            raw = self.store.get(SNAPSHOT, u64(sid))
            if raw is None:
                raise KeyError(f"unknown state snapshot {sid}")
            rec = _Record.decode(raw)
            self._keep_record(sid, rec)
        return rec

    def _keep_record(self, sid: int, rec: _Record) -> None:
        self._records[sid] = rec
        self._record_entries += rec.size
        while self._record_entries > self._cache_entries and len(self._records) > 1:
            old = self._records.pop(next(iter(self._records)))
            self._record_entries -= old.size

    def cache_stats(self) -> dict[str, Any]:
        """Decoded records and full states, counted in state entries (`cache_stats`' shape)."""
        entries = self._record_entries + self._cached_entries
        return cache_stats(
            "state.snapshots",
            entries,
            2 * self._cache_entries,
            entries * ENTRY_BYTES["state.snapshots"],
            self._hits,
            self._misses,
        )

    def get(self, sid: int, key: int) -> int | None:
        """One entry of a snapshot, found by walking its layers without building the whole state.
        Answers are remembered: snapshots never change, and each event asks the current one the same
        few keys (its auth events)."""
        state = self._states.get(sid)
        if state is not None:
            return state.get(key)
        entry = (sid, key)
        found = self._entries.get(entry)
        if found is not None:
            return found if found != _NONE else None
        value = self._walk(sid, key)
        self._entries.put(entry, _NONE if value is None else value)
        return value

    def _walk(self, sid: int, key: int) -> int | None:
        while sid:
            rec = self._record(sid)
            v = rec.added.get(key)
            if v is not None:
                return v
            if rec.layer == 0 or key in rec.removed:
                return None
            sid = rec.parent
        return None

    def load(self, sid: int) -> State:
        """The full state of snapshot `sid` (read-only)."""
        state = self._states.get(sid)
        if state is not None:
            self._states.move_to_end(sid)
            self._hits += 1
            return state
        self._misses += 1
        rec = self._record(sid)
        if rec.layer == 0:
            full = dict(rec.added)
        else:
            full = dict(self.load(rec.parent))
            for k in rec.removed:
                full.pop(k, None)
            full.update(rec.added)
        view = MappingProxyType(full)
        self._remember(sid, view)
        return view

    def _remember(self, sid: int, state: State) -> None:
        self._states[sid] = state
        self._cached_entries += len(state)
        while self._cached_entries > self._cache_entries and len(self._states) > 1:
            _, old = self._states.popitem(last=False)
            self._cached_entries -= len(old)

    def hash_of(self, sid: int) -> int:
        return self._record(sid).hash

    def chain_length(self, sid: int) -> int:
        return self._record(sid).layer + 1

    def stored_entries(self, sid: int) -> int:
        """How many entries the snapshot's own record holds (its cost on disk, in entries)."""
        return self._record(sid).size

    # -- writing ---------------------------------------------------------------------------------

    def save_changes(
        self, parent: int | None, changes: Mapping[int, int], removed: Iterable[int] = (), *, batch: Batch
    ) -> int:
        """Store `parent`'s state with `changes` applied (state key -> event) and `removed` keys dropped.

        Returns the snapshot id, an existing one if that state is already stored.
        """
        added: dict[int, int] = {}
        dropped: dict[int, int] = {}
        for k, v in changes.items():
            old = self.get(parent, k) if parent else None
            if old == v:
                continue
            if old is not None:
                dropped[k] = old
            added[k] = v
        for k in removed:
            if k not in changes:
                old = self.get(parent, k) if parent else None
                if old is not None:
                    dropped[k] = old
        if parent and not added and not dropped:
            return parent
        h = self.hash_of(parent) if parent else 0
        h = (h + sum(_entry_hash(k, v) for k, v in added.items())) % _MOD
        h = (h - sum(_entry_hash(k, v) for k, v in dropped.items())) % _MOD
        existing = self._find(h, parent, added, dropped, batch)
        if existing is not None:
            return existing
        return self._store_diff(parent or 0, added, dropped, h, batch)

    def save_state(self, state: State, *, near: int | None = None, batch: Batch) -> int:
        """Store a whole state (e.g. a state resolution result), as a diff against `near` if given."""
        base = self.load(near) if near else {}
        changes = {k: v for k, v in state.items() if base.get(k) != v}
        removed = [k for k in base if k not in state]
        return self.save_changes(near, changes, removed, batch=batch)

    def _find(
        self, h: int, parent: int | None, added: dict[int, int], dropped: dict[int, int], batch: Batch
    ) -> int | None:
        pending = self._pending_by_hash.get(h)
        sid = pending[1] if pending is not None and pending[0] is batch else None
        if sid is None:
            raw = self.store.get(SNAPSHOT_BY_HASH, h.to_bytes(32, "big"))
            sid = read_u64(raw) if raw else None
        if sid is None:
            return None
        candidate = self.load(sid)
        expected = dict(self.load(parent)) if parent else {}
        for k in dropped:
            expected.pop(k, None)
        expected.update(added)
        return sid if candidate == expected else None  # a hash collision is never trusted

    def _layer_caps(self, parent: int) -> list[float]:
        """cap(i) for i = 0..MAX_LAYERS-1 (index 0 unused), from the size of `parent`'s root."""
        rec = self._record(parent)
        while rec.layer:
            rec = self._record(rec.parent)
        half = max(len(rec.added) / 2, 1.0)
        depth = MAX_LAYERS - 1
        return [0.0] + [max(half ** ((depth - i + 1) / depth), 1.0) for i in range(1, depth + 1)]

    def _store_diff(self, parent: int, added: dict[int, int], dropped: dict[int, int], h: int, batch: Batch) -> int:
        full: dict[int, int] | None = None
        caps = self._layer_caps(parent) if parent else []
        while parent:
            prec = self._record(parent)
            layer = prec.layer + 1
            if layer < MAX_LAYERS and len(added) + len(dropped) <= caps[layer]:
                break  # fits as a child of `parent`
            if prec.layer == 0:
                # too big a diff against the root: a new root with the full state
                full = dict(self.load(parent))
                for k in dropped:
                    full.pop(k, None)
                full.update(added)
                parent = 0
                break
            # merge our diff into the parent's and try one layer up
            merged_added = dict(prec.added)
            merged_removed = dict(prec.removed)
            for k, v in dropped.items():
                if merged_added.get(k) == v:
                    del merged_added[k]
                else:
                    merged_removed.setdefault(k, v)
            for k, v in added.items():
                if merged_removed.get(k) == v:
                    del merged_removed[k]
                else:
                    merged_added[k] = v
            added, dropped, parent = merged_added, merged_removed, prec.parent
        if parent:
            rec = _Record(parent, self._record(parent).layer + 1, h, added, dropped)
        else:
            rec = _Record(0, 0, h, full if full is not None else dict(added), {})
        self._last_id += 1
        sid = self._last_id
        batch.put(SNAPSHOT, u64(sid), rec.encode())
        batch.put(SNAPSHOT_BY_HASH, h.to_bytes(32, "big"), u64(sid))
        self._pending_by_hash[h] = (batch, sid)
        self._pending_records[sid] = rec

        def forget() -> None:
            self._pending_by_hash.pop(h, None)
            self._pending_records.pop(sid, None)
            state = self._states.pop(sid, None)
            if state is not None:
                self._cached_entries -= len(state)

        def published() -> None:
            self._pending_by_hash.pop(h, None)
            self._pending_records.pop(sid, None)
            self._keep_record(sid, rec)

        batch.on_abort.append(forget)
        batch.on_commit.append(published)
        return sid
