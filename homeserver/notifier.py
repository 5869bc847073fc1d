"""Wakes waiting `/sync` requests (DESIGN.md "Sync": long polling).

Infrastructure, not part of sync: every service whose writes a sync reports (account data, push,
receipts, typing, presence, E2EE, the event pipeline's listener) is handed the one `Notifier`
built in `homeserver/server.py`.

A sync registers its interest (its user and the rooms it is joined to) BEFORE it reads, then reads
up to the store's visible position. Every write that a sync could report (an event, a receipt,
typing, account data, presence, to-device, a device-list change) calls `notify` after its batch
committed, which sets the event of every waiter interested in that user or room. A write that lands
between registering and reading is either seen by the read or wakes the waiter: nothing is missed.

A write can commit while an earlier position is still being written (group commit); readers do not
see it yet. Its wake-up is then repeated once the visible position has caught up with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Iterator

from storage.engine import Batch, Store


class Waiter:
    """One waiting sync: woken by writes concerning its user or one of its rooms."""

    __slots__ = ("_event", "rooms", "user_id")

    def __init__(self, user_id: str, rooms: frozenset[int]) -> None:
        self.user_id = user_id
        self.rooms = rooms
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    def reset(self) -> None:
        """Forget earlier wake-ups; call before each read."""
        self._event.clear()

    async def wait(self, timeout: float) -> bool:
        """True if woken within `timeout` seconds."""
        if self._event.is_set():
            return True
        if timeout <= 0:
            return False
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Notifier:
    RECHECK_S = 0.005

    def __init__(self, store: Store) -> None:
        self.store = store
        self._by_user: dict[str, set[Waiter]] = {}
        self._by_room: dict[int, set[Waiter]] = {}
        # wake-ups to repeat once the visible position reaches the first number
        self._deferred: list[tuple[int, tuple[str, ...], tuple[int, ...]]] = []
        self._recheck: asyncio.TimerHandle | None = None

    @property
    def token(self) -> int:
        """The highest position a reader may rely on: every write at or below it has landed."""
        return self.store.counter.visible

    @contextlib.contextmanager
    def listen(self, user_id: str, rooms: Iterable[int]) -> Iterator[Waiter]:
        waiter = Waiter(user_id, frozenset(rooms))
        self._by_user.setdefault(user_id, set()).add(waiter)
        for room in waiter.rooms:
            self._by_room.setdefault(room, set()).add(waiter)
        try:
            yield waiter
        finally:
            self._discard(self._by_user, user_id, waiter)
            for room in waiter.rooms:
                self._discard(self._by_room, room, waiter)

    @staticmethod
    def _discard(index: dict[str, set[Waiter]] | dict[int, set[Waiter]], key: object, waiter: Waiter) -> None:
        waiters = index.get(key)  # type: ignore[call-overload]
        if waiters is not None:
            waiters.discard(waiter)
            if not waiters:
                del index[key]  # type: ignore[arg-type]

    def notify(self, *, users: Iterable[str] = (), rooms: Iterable[int] = ()) -> None:
        """Wake the syncs of these users and of everyone joined to these rooms."""
        users, rooms = tuple(users), tuple(rooms)
        self._wake(users, rooms)
        counter = self.store.counter
        if counter.visible < counter.high:
            self._deferred.append((counter.high, users, rooms))
            self._schedule_recheck()
        elif self._deferred:
            self._run_deferred()

    def _wake(self, users: Iterable[str], rooms: Iterable[int]) -> None:
        for user in users:
            for waiter in self._by_user.get(user, ()):
                waiter.wake()
        for room in rooms:
            for waiter in self._by_room.get(room, ()):
                waiter.wake()

    def _schedule_recheck(self) -> None:
        if self._recheck is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (offline tools): nobody can be waiting
            self._deferred.clear()
            return
        self._recheck = loop.call_later(self.RECHECK_S, self._run_deferred)

    def _run_deferred(self) -> None:
        self._recheck = None
        visible = self.store.counter.visible
        waiting = []
        for target, users, rooms in self._deferred:
            if target <= visible:
                self._wake(users, rooms)
            else:
                waiting.append((target, users, rooms))
        self._deferred = waiting
        if waiting:
            self._schedule_recheck()

    def close(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        self._deferred.clear()

    def notify_users(self, users: Iterable[str]) -> None:
        self.notify(users=users)

    def waiting(self, user_id: str) -> int:
        """How many syncs of this user are waiting now (presence: a user with one is online)."""
        return len(self._by_user.get(user_id, ()))


async def advance_stream(store: Store, batch: Batch | None = None) -> int:
    """Take one position on the global stream for a change kept outside the store (typing), write
    the counter with it, and return it once readers can see it."""
    batch = batch if batch is not None else store.batch()
    with batch:
        position = batch.next_count()
        await batch.commit()
    return position
