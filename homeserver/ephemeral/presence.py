"""Presence (spec: modules/presence.md).

A user's presence is kept in memory and stored on each change of state or status message, at a
position on the global stream that `/sync` reads changes by. Activity (sending an event, setting
`online`) only moves the last-active time, which is not a change. A user whose clients stopped
syncing goes offline after `SYNC_TIMEOUT_S`; an online user idle for `IDLE_TIMEOUT_S` becomes
unavailable (spec: "Idle timeout").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from homeserver.notifier import Notifier
from homeserver.rooms.queries import RoomQueries
from storage.engine import Store
from storage.presence import PresenceStore

log = logging.getLogger(__name__)

STATES = ("online", "unavailable", "offline")
SYNC_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 300.0
ACTIVE_WINDOW_S = 60.0  # `currently_active` while the last activity is this recent
CHECK_EVERY_S = 5.0


class UserPresence:
    __slots__ = ("last_active_ts", "last_sync_ts", "presence", "status_msg", "stream")

    presence: str
    status_msg: str | None
    last_active_ts: int  # ms
    stream: int
    last_sync_ts: int  # ms, not stored

    def __init__(
        self,
        presence: str = "offline",
        status_msg: str | None = None,
        last_active_ts: int = 0,
        stream: int = 0,
        last_sync_ts: int = 0,
    ) -> None:
        self.presence = presence
        self.status_msg = status_msg
        self.last_active_ts = last_active_ts
        self.stream = stream
        self.last_sync_ts = last_sync_ts

    def record(self) -> dict[str, Any]:
        return {
            "presence": self.presence,
            "status_msg": self.status_msg,
            "last_active_ts": self.last_active_ts,
            "stream": self.stream,
        }


class Presence:
    def __init__(
        self,
        store: Store,
        presence: PresenceStore,
        queries: RoomQueries,
        notifier: Notifier,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.presence = presence
        self.queries = queries
        self.notifier = notifier
        self.enabled = enabled
        self.clock = clock
        self._users: dict[str, UserPresence] = {}
        self._checker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listeners: list[Callable[[str], None]] = []

    def add_change_listener(self, listener: Callable[[str], None]) -> None:
        """At wiring time: told the user whose presence changed (federation passes ours on)."""
        self._listeners.append(listener)

    async def remote(self, user_id: str, update: dict[str, Any]) -> None:
        """Presence another server sent for one of its users (spec: server-server "Presence")."""
        if not self.enabled:
            return
        presence = update.get("presence")
        if presence not in ("online", "unavailable", "offline"):
            return
        status = update.get("status_msg")
        ago = update.get("last_active_ago")
        current = self.get(user_id)
        if isinstance(ago, int) and ago >= 0:
            current.last_active_ts = self._now() - ago
        await self._store(user_id, current, presence, status if isinstance(status, str) else None)

    def _now(self) -> int:
        return int(self.clock() * 1000)

    def get(self, user_id: str) -> UserPresence:
        found = self._users.get(user_id)
        if found is None:
            record = self.presence.get(user_id)
            found = UserPresence()
            if record is not None:
                found.presence = record["presence"]
                found.status_msg = record.get("status_msg")
                found.last_active_ts = int(record.get("last_active_ts", 0))
                found.stream = int(record["stream"])
            self._users[user_id] = found
        return found

    def known(self, user_id: str) -> bool:
        return user_id in self._users or self.presence.get(user_id) is not None

    # -- changes ---------------------------------------------------------------------------------

    async def set(
        self, user_id: str, presence: str, status_msg: str | None = None, *, keep_status: bool = False
    ) -> None:
        """Set a user's presence (PUT /presence/{userId}/status replaces the status message)."""
        if not self.enabled:
            return
        current = self.get(user_id)
        new_status = current.status_msg if keep_status else status_msg
        if presence == "online":
            current.last_active_ts = self._now()  # spec: "changing presence state to online" is activity
        if presence == current.presence and new_status == current.status_msg:
            return
        await self._store(user_id, current, presence, new_status)
        self._ensure_checker()

    async def _store(self, user_id: str, current: UserPresence, presence: str, status_msg: str | None) -> None:
        batch = self.store.batch()
        with batch:
            old_stream = current.stream
            updated = UserPresence(presence, status_msg, current.last_active_ts, batch.next_count())
            self.presence.put(user_id, updated.record(), old_stream, batch)
            await batch.commit()
        current.presence, current.status_msg, current.stream = presence, status_msg, updated.stream
        self.notifier.notify(users=(user_id,), rooms=self.queries.joined_rooms(user_id))
        for listener in self._listeners:
            listener(user_id)

    async def syncing(self, user_id: str, set_presence: str | None) -> None:
        """A sync started (spec: GET /sync `set_presence`; omitted means online)."""
        if not self.enabled:
            return
        current = self.get(user_id)
        current.last_sync_ts = self._now()
        wanted = set_presence or "online"
        if wanted == "offline":
            return
        if wanted == "online" and current.presence == "offline":
            await self.set(user_id, "online", keep_status=True)
        elif wanted == "unavailable" and current.presence != "unavailable":
            await self.set(user_id, "unavailable", keep_status=True)

    def active(self, user_id: str) -> None:
        """The user did something pro-active (sent an event): bump last active, wake from idle."""
        if not self.enabled:
            return
        current = self.get(user_id)
        current.last_active_ts = self._now()
        if current.presence == "unavailable":
            self._spawn(self.set(user_id, "online", keep_status=True))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure_checker(self) -> None:
        if self._checker is None or self._checker.done():
            self._checker = asyncio.get_running_loop().create_task(self._check_loop())

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(CHECK_EVERY_S)
            try:
                await self.check_timeouts()
            except Exception:
                log.exception("presence timeout check failed")

    async def check_timeouts(self) -> None:
        """Offline when no client synced for a while; unavailable when idle (spec: "Idle timeout")."""
        now = self._now()
        for user_id, p in list(self._users.items()):
            if p.presence == "offline":
                continue
            quiet = now - max(p.last_sync_ts, p.last_active_ts) > SYNC_TIMEOUT_S * 1000
            if quiet and self.notifier.waiting(user_id) == 0:
                await self._store(user_id, p, "offline", p.status_msg)
            elif p.presence == "online" and now - p.last_active_ts > IDLE_TIMEOUT_S * 1000:
                await self._store(user_id, p, "unavailable", p.status_msg)

    # -- reading ---------------------------------------------------------------------------------

    def content(self, user_id: str) -> dict[str, Any]:
        """GET /presence/{userId}/status, and the content of `m.presence` events."""
        p = self.get(user_id)
        out: dict[str, Any] = {"presence": p.presence if self.enabled else "offline"}
        if p.last_active_ts and self.enabled:
            ago = max(0, self._now() - p.last_active_ts)
            out["last_active_ago"] = ago
            if p.presence == "online":
                out["currently_active"] = ago < ACTIVE_WINDOW_S * 1000
        if p.status_msg is not None and self.enabled:
            out["status_msg"] = p.status_msg
        return out

    def present_local_users(self) -> dict[str, int]:
        """Our users who are not offline, with when each was last active (ms). Read from memory: a
        user is online only after syncing or acting since start, which loads them there."""
        if not self.enabled:
            return {}
        is_local = self.queries.is_local
        return {
            user_id: p.last_active_ts
            for user_id, p in self._users.items()
            if p.presence != "offline" and is_local(user_id)
        }

    def event(self, user_id: str) -> dict[str, Any]:
        return {"type": "m.presence", "sender": user_id, "content": self.content(user_id)}

    def changed(self, after: int, upto: int) -> Iterable[str]:
        return self.presence.changed(after, upto)

    async def close(self) -> None:
        tasks = [t for t in (self._checker, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
