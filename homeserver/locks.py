"""One asyncio lock per key (a room, a user), kept only while someone holds it or waits for it.

A dict of plain locks grows by one lock for every key ever seen; a server that runs for months sees
every room and user of its store. Here a key's lock is dropped when its last user leaves, so the
dict holds only the keys in use at this moment.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class _Entry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holders and waiters


class KeyedLock(Generic[K]):
    """`async with locks(key):` — mutual exclusion per key."""

    __slots__ = ("_entry", "_key", "_owner")

    def __init__(self, owner: KeyedLocks[K], key: K) -> None:
        self._owner = owner
        self._key = key
        self._entry: _Entry | None = None

    async def __aenter__(self) -> None:
        held = self._owner._held
        entry = held.get(self._key)
        if entry is None:
            entry = held[self._key] = _Entry()
        entry.users += 1
        self._entry = entry
        try:
            await entry.lock.acquire()
        except BaseException:  # cancelled while waiting
            self._leave(entry)
            raise

    async def __aexit__(self, *exc: object) -> None:
        entry = self._entry
        assert entry is not None
        entry.lock.release()
        self._leave(entry)

    def _leave(self, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._owner._held[self._key]


class KeyedLocks(Generic[K]):
    def __init__(self) -> None:
        self._held: dict[K, _Entry] = {}

    def __call__(self, key: K) -> KeyedLock[K]:
        return KeyedLock(self, key)

    def __len__(self) -> int:
        """Keys locked or waited for now."""
        return len(self._held)
