"""Typing notifications (spec: modules/typing_notifications.md).

Who is typing is kept in memory only (it is worthless after a restart); each change (start, stop,
expiry) takes a position on the global stream so `/sync` can tell whether a room's list changed
since a token, and wakes the room's syncs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from homeserver.notifier import Notifier, advance_stream
from storage.engine import Store

DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 120_000


class Typing:
    def __init__(self, store: Store, notifier: Notifier, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.notifier = notifier
        self.clock = clock
        self._typing: dict[int, dict[str, float]] = {}  # room -> user -> expiry (clock seconds)
        self._changed: dict[int, int] = {}  # room -> stream position of the last change
        self._timers: dict[int, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[Callable[[int, str, bool], None]] = []

    def add_change_listener(self, listener: Callable[[int, str, bool], None]) -> None:
        """At wiring time: told (room, user, typing) when a user starts or stops typing (not when an
        expiry merely moves). Federation passes our users' changes on."""
        self._listeners.append(listener)

    async def set_typing(self, room: int, user_id: str, typing: bool, timeout_ms: int | None = None) -> None:
        users = self._typing.setdefault(room, {})
        was = user_id in users
        if typing:
            timeout = min(max(timeout_ms if timeout_ms is not None else DEFAULT_TIMEOUT_MS, 0), MAX_TIMEOUT_MS)
            users[user_id] = self.clock() + timeout / 1000
            self._schedule(room)
            if was:
                return  # still typing: the list is unchanged, only the expiry moved
        elif was:
            del users[user_id]
        else:
            return
        for listener in self._listeners:
            listener(room, user_id, typing)
        await self._changed_now(room)

    async def _changed_now(self, room: int) -> None:
        position = await advance_stream(self.store)
        self._changed[room] = max(self._changed.get(room, 0), position)
        self.notifier.notify(rooms=(room,))

    def _schedule(self, room: int) -> None:
        users = self._typing.get(room)
        old = self._timers.pop(room, None)
        if old is not None:
            old.cancel()
        if not users:
            return
        delay = max(0.0, min(users.values()) - self.clock())
        self._timers[room] = asyncio.get_running_loop().call_later(delay, self._expire, room)

    def _expire(self, room: int) -> None:
        self._timers.pop(room, None)
        users = self._typing.get(room, {})
        now = self.clock()
        gone = [u for u, until in users.items() if until <= now]
        for u in gone:
            del users[u]
        self._schedule(room)
        if gone:
            task = asyncio.get_running_loop().create_task(self._changed_now(room))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def users(self, room: int) -> list[str]:
        return sorted(self._typing.get(room, ()))

    def changed_since(self, room: int, since: int) -> bool:
        return self._changed.get(room, 0) > since

    def event_for_sync(self, room: int, since: int | None) -> dict[str, object] | None:
        """The room's `m.typing` event if its list changed since `since` (initial: if anyone types)."""
        users = self.users(room)
        if since is None:
            if not users:
                return None
        elif not self.changed_since(room, since):
            return None
        return {"type": "m.typing", "content": {"user_ids": users}}

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
