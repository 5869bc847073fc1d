"""Bounded caches sized from one memory budget, with counters an admin can read.

The server has one setting for memory, `cache_mb` (MiB). It is divided by `SHARES` among LevelDB's
block cache and write buffers and the in-process caches; a cache that counts entries gets
`share × budget ÷ entry_bytes` entries, where `entry_bytes` is the estimated cost of one entry in
Python (key, value, and the OrderedDict's own bookkeeping), measured with tracemalloc on this
server's real values (see `ENTRY_BYTES`). Every cache is registered with a `CacheRegistry` that hangs
off the server object, and the admin endpoint `GET /_homeserver/admin/v1/caches` reports them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
MIB = 1024 * 1024
DEFAULT_BUDGET_MB = 64  # the default of `cache_mb` (homeserver/config.py)

# The budget's shares (they add up to 1). LevelDB's write buffer is held twice at worst (the memtable
# being filled and the one being flushed), which its share allows for.
SHARES: dict[str, float] = {
    "leveldb.block_cache": 0.16,
    "leveldb.write_buffer": 0.125,  # 4 MiB at 64: smaller buffers cost CPU in flushes
    "leveldb.open_tables": 0.035,  # open table files (OPEN_TABLE_BYTES each)
    "events.json": 0.20,  # parsed events
    "events.meta": 0.04,
    "events.auth_chains": 0.04,
    "ids.events": 0.10,  # event id <-> short id, both directions
    "ids.state_keys": 0.02,
    "ids.rooms": 0.01,
    "state.snapshots": 0.10,  # decoded snapshot records and full states, counted in entries
    "state.entries": 0.01,
    "state.resolutions": 0.005,
    "rooms.info": 0.01,  # room info and forward extremities
    "rooms.receipts": 0.005,
    "rooms.auth_selections": 0.005,  # the auth events of ordinary events, per (state, sender)
    "auth.tokens": 0.02,
    "push": 0.05,  # rulesets, members, counts
    "sync": 0.04,  # filters, per-connection "sent" state
    "federation": 0.01,  # well-known answers, key fetch times, servers' memberships per state
    "other": 0.015,  # pure-function caches (push patterns, event filters) and what is not listed
}

# Estimated bytes of one entry, measured with tracemalloc on values like this server's (Python 3.11,
# 64-bit): 20,000 entries built in an OrderedDict, the traced growth divided by 20,000.
ENTRY_BYTES: dict[str, int] = {
    "events.json": 2_600,  # a parsed m.room.message PDU (~630 B as JSON): 2,330 B measured, plus keys
    "events.meta": 340,  # an EventMeta (slots) and its ints
    "events.auth_chains": 480,  # a tuple of ~8 ints
    "ids.events": 240,  # one direction: a 44-byte id as bytes, an int, the ordered-dict link
    "ids.state_keys": 220,
    "ids.rooms": 220,
    "state.snapshots": 100,  # per state entry (int -> int in a dict)
    "state.entries": 200,
    "state.resolutions": 300,
    "rooms.info": 1_000,
    "rooms.receipts": 150,
    "rooms.auth_selections": 900,  # two 3-entry dicts (the event dicts are shared) and a list of 3 ids
    "auth.tokens": 600,  # a Requester and its strings
    "push": 600,
    "sync": 2_000,
    "federation": 300,
}


class LruCache(Generic[K, V]):
    """A least-recently-used cache of at most `capacity` entries, counting hits and misses.

    `get` counts; `peek` does not (for callers that check a cache on the way to something else).
    """

    __slots__ = ("_data", "capacity", "entry_bytes", "hits", "misses", "name")

    def __init__(self, name: str, capacity: int, entry_bytes: int = 0) -> None:
        self.name = name
        self.capacity = max(1, capacity)
        self.entry_bytes = entry_bytes
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        data = self._data
        value = data.get(key)
        if value is None:
            self.misses += 1
            return None
        data.move_to_end(key)
        self.hits += 1
        return value

    def peek(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        data = self._data
        data[key] = value
        data.move_to_end(key)
        if len(data) > self.capacity:
            data.popitem(last=False)

    def discard(self, key: K) -> None:
        self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def list_keys(self) -> list[K]:
        """The keys, least recent first (a copy: the cache may change while they are used)."""
        return list(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def stats(self) -> dict[str, Any]:
        return cache_stats(
            self.name, len(self._data), self.capacity, len(self._data) * self.entry_bytes, self.hits, self.misses
        )


def cache_stats(name: str, entries: int, capacity: int, size: int, hits: int, misses: int) -> dict[str, Any]:
    asked = hits + misses
    return {
        "name": name,
        "entries": entries,
        "capacity": capacity,
        "estimated_bytes": size,
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / asked, 4) if asked else None,
    }


class CacheRegistry:
    """Every cache of one server, sized from its budget (`cache_mb`). Services ask it for their
    caches by name; `report` lists them all for the admin endpoint."""

    def __init__(self, budget_mb: int) -> None:
        self.budget_mb = budget_mb
        self._caches: list[LruCache[Any, Any]] = []
        self._reporters: list[Callable[[], dict[str, Any]]] = []

    def bytes_for(self, share: str) -> int:
        return int(self.budget_mb * MIB * SHARES[share])

    def entries_for(self, share: str, *, minimum: int = 16) -> int:
        """How many entries of kind `share` its share of the budget holds."""
        return max(minimum, self.bytes_for(share) // ENTRY_BYTES[share])

    def lru(self, name: str, share: str, *, part: float = 1.0, minimum: int = 16) -> LruCache[Any, Any]:
        """A new registered cache holding `part` of share `share` (several caches may split one)."""
        capacity = max(minimum, int(self.entries_for(share, minimum=minimum) * part))
        cache: LruCache[Any, Any] = LruCache(name, capacity, ENTRY_BYTES[share])
        self._caches.append(cache)
        return cache

    def add_reporter(self, report: Callable[[], dict[str, Any]]) -> None:
        """A cache that is not an `LruCache` (its owner reports it in `cache_stats`' shape)."""
        self._reporters.append(report)

    def report(self) -> list[dict[str, Any]]:
        return [c.stats() for c in self._caches] + [r() for r in self._reporters]


# What one open table file costs: its index and bloom filter blocks on the heap (~18 KiB for a 2 MiB
# table at 16 KiB blocks and 10 bits a key), and the pages of the file LevelDB reads through mmap,
# which stay in RSS while the table is open (soak at 200k events: 64 open tables, ~13 MiB of mapped
# table pages; with 286 the mapped pages kept growing with the store, to 50 MiB at 400k events).
OPEN_TABLE_BYTES = 36 * 1024
MIN_OPEN_TABLES = 64  # below this, reads of older data would reopen tables all the time


def leveldb_sizes(budget_mb: int) -> dict[str, int]:
    """LevelDB's options from the budget: block cache and write buffer in bytes, open table files."""
    budget = budget_mb * MIB
    tables = int(budget * SHARES["leveldb.open_tables"]) // OPEN_TABLE_BYTES
    return {
        "block_cache": max(MIB, int(budget * SHARES["leveldb.block_cache"])),
        # held twice at worst (filling and flushing); LevelDB wants at least 64 KiB
        "write_buffer": max(256 * 1024, min(16 * MIB, int(budget * SHARES["leveldb.write_buffer"] / 2))),
        "max_open_files": max(MIN_OPEN_TABLES, min(1000, tables)),
    }


def function_cache_stats(name: str, fn: Any, entry_bytes: int) -> Callable[[], dict[str, Any]]:
    """A reporter for a `functools.lru_cache` on a pure function (small and fixed in size)."""

    def report() -> dict[str, Any]:
        info = fn.cache_info()
        return cache_stats(name, info.currsize, info.maxsize or 0, info.currsize * entry_bytes, info.hits, info.misses)

    return report


def leveldb_stats(db: Any, budget_mb: int) -> dict[str, Any]:
    """LevelDB's own memory (block cache in use plus memtables, its `approximate-memory-usage`)
    against what the budget gives it; LevelDB counts no hits."""
    sizes = leveldb_sizes(budget_mb)
    used = 0
    try:
        raw = db.get_property(b"leveldb.approximate-memory-usage")
        used = int(raw) if raw else 0
    except Exception:  # a closed store or an older LevelDB: report nothing rather than fail
        pass
    out = cache_stats("leveldb", 0, sizes["block_cache"] + 2 * sizes["write_buffer"], used, 0, 0)
    out.update(entries=None, hits=None, misses=None, max_open_files=sizes["max_open_files"])
    return out
