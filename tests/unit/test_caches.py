"""Bounded caches (storage/cache.py) and per-key locks (homeserver/locks.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from homeserver.locks import KeyedLocks
from storage.cache import SHARES, CacheRegistry, LruCache, leveldb_sizes
from storage.database import Database


def test_an_lru_keeps_its_capacity_and_drops_the_least_recent() -> None:
    cache: LruCache[int, str] = LruCache("t", 3, 10)
    for i in range(3):
        cache.put(i, str(i))
    assert cache.get(0) == "0"  # 0 is now the most recent
    cache.put(3, "3")
    assert len(cache) == 3 and 1 not in cache and 0 in cache
    assert cache.get(1) is None
    stats = cache.stats()
    assert (stats["hits"], stats["misses"], stats["entries"], stats["estimated_bytes"]) == (1, 1, 3, 30)
    assert stats["hit_rate"] == 0.5


def test_every_registered_cache_of_a_store_respects_its_capacity(tmp_path: Path) -> None:
    with Database(tmp_path / "db", cache_mb=4) as db:
        caches = db.caches._caches
        assert {c.name for c in caches} >= {"events.json", "events.meta", "ids.event_to_short", "ids.short_to_event"}
        for cache in caches:
            for i in range(cache.capacity + 50):
                cache.put(i, i + 1)
            assert len(cache) == cache.capacity, cache.name
            assert cache.stats()["estimated_bytes"] <= db.caches.budget_mb * 1024 * 1024


def test_capacities_follow_the_budget() -> None:
    small, large = CacheRegistry(32), CacheRegistry(256)
    assert large.entries_for("events.json") == 8 * small.entries_for("events.json")
    assert abs(sum(SHARES.values()) - 1.0) < 1e-9
    a, b = leveldb_sizes(32), leveldb_sizes(256)
    assert abs(b["block_cache"] - 8 * a["block_cache"]) <= 8 and a["write_buffer"] <= b["write_buffer"]


def test_the_estimates_of_the_in_process_caches_stay_within_their_shares(tmp_path: Path) -> None:
    with Database(tmp_path / "db", cache_mb=64) as db:
        capacity_bytes = sum(c.capacity * c.entry_bytes for c in db.caches._caches)
        assert capacity_bytes <= 64 * 1024 * 1024 * (1 - SHARES["leveldb.block_cache"] - SHARES["leveldb.write_buffer"])


@pytest.mark.asyncio
async def test_keyed_locks_exclude_per_key_and_keep_only_keys_in_use() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    order: list[str] = []

    async def worker(key: str, name: str) -> None:
        async with locks(key):
            order.append(f"{name} in")
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            order.append(f"{name} out")

    await asyncio.gather(worker("room", "a"), worker("room", "b"), worker("other", "c"))
    assert order.index("a out") < order.index("b in")  # one at a time in "room"
    assert len(locks) == 0  # nothing kept once released

    async with locks("room"):
        waiting = asyncio.ensure_future(worker("room", "d"))
        await asyncio.sleep(0)
        waiting.cancel()  # a waiter that gives up leaves nothing behind either
        await asyncio.gather(waiting, return_exceptions=True)
        assert len(locks) == 1
    assert len(locks) == 0
