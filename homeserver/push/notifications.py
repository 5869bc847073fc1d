"""Unread notification counts and the notification list (spec: modules/push.md "Receiving
notifications", "Marking notifications as read", GET /notifications).

Counts are the notifications after the user's read point: the most advanced of their `m.read` and
`m.read.private` receipts (asked of the receipts service) and their own last event, per thread
("main" for the main timeline). The notifications themselves are written at send time
(`PushService.write_hook`), which tells this module what landed so cached counts stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError
from homeserver.rooms.tokens import parse_counter
from storage.cache import CacheRegistry, LruCache
from storage.push import PushStore

if TYPE_CHECKING:
    from homeserver.ephemeral.receipts import Receipts


MAX_ROOMS_MARKED = 100_000  # rooms whose newest notification position is kept (~100 bytes each)


class Counts:
    __slots__ = ("highlight_count", "notification_count")

    notification_count: int
    highlight_count: int

    def __init__(self, notification_count: int = 0, highlight_count: int = 0) -> None:
        self.notification_count = notification_count
        self.highlight_count = highlight_count

    def json(self) -> dict[str, int]:
        return {"notification_count": self.notification_count, "highlight_count": self.highlight_count}


class RoomCounts:
    """Unread counts of a room: all together, the main timeline alone, and per thread root."""

    __slots__ = ("main", "threads", "total")

    total: Counts
    main: Counts
    threads: dict[str, Counts]

    def __init__(
        self, total: Counts | None = None, main: Counts | None = None, threads: dict[str, Counts] | None = None
    ) -> None:
        self.total = Counts() if total is None else total
        self.main = Counts() if main is None else main
        self.threads = {} if threads is None else threads


class _CachedCounts:
    """A user's counts in a room, with what they were counted from: notifications up to position
    `scanned`, against the read points `unthreaded`/`threads`. Once a notification lands in the room
    after `scanned`, the next read adds those after it (a change of read points drops the entry)."""

    __slots__ = ("counts", "scanned", "threads", "unthreaded")

    counts: RoomCounts
    scanned: int
    unthreaded: int
    threads: dict[str, int]

    def __init__(self, counts: RoomCounts, scanned: int, unthreaded: int, threads: dict[str, int]) -> None:
        self.counts = counts
        self.scanned = scanned
        self.unthreaded = unthreaded
        self.threads = threads


class Notifications:
    def __init__(self, push: PushStore, receipts: Receipts, caches: CacheRegistry) -> None:
        self.push = push
        self.receipts = receipts
        # the budget's "push" share, split by how many entries each kind needs (storage/cache.py)
        self._counts: LruCache[tuple[str, int], _CachedCounts] = caches.lru("push.unread_counts", "push", part=0.4)
        # room -> the highest position of a notification landed in it (any user's): counts scanned
        # below it may miss some. Rooms not here: `_landed_floor` (kept when the map is emptied).
        self._landed: dict[int, int] = {}
        self._landed_floor = 0

    # -- unread counts ---------------------------------------------------------------------------

    def read_points(self, user_id: str, room: int) -> tuple[int, dict[str, int]]:
        """(unthreaded read point, thread ("" = main) -> threaded read point)."""
        unthreaded, threads = self.receipts.read_positions(user_id, room)
        for thread, position in self.push.last_sent(user_id, room).items():
            threads[thread] = max(threads.get(thread, 0), position)
        return unthreaded, threads

    def counts(self, user_id: str, room: int) -> RoomCounts:
        key = (user_id, room)
        cached = self._counts.get(key)
        landed = self._landed.get(room, self._landed_floor)
        if cached is not None and cached.scanned >= landed:
            return cached.counts
        if cached is not None:
            # only notifications after the last count, against the same read points
            unthreaded, threads, after = cached.unthreaded, cached.threads, cached.scanned
            before = cached.counts
            out = RoomCounts(
                Counts(before.total.notification_count, before.total.highlight_count),
                Counts(before.main.notification_count, before.main.highlight_count),
                {t: Counts(c.notification_count, c.highlight_count) for t, c in before.threads.items()},
            )
        else:
            unthreaded, threads = self.read_points(user_id, room)
            after = min([unthreaded, *threads.values()]) if threads else unthreaded
            out = RoomCounts()
        scanned = max(after, landed)  # every notification up to `landed` is in the store, or goes below
        for unread in self.push.unread(user_id, room, after):
            scanned = max(scanned, unread.position)
            if unread.position <= max(unthreaded, threads.get(unread.thread_id, 0)):
                continue
            bucket = out.main if not unread.thread_id else out.threads.setdefault(unread.thread_id, Counts())
            for counts in (bucket, out.total):
                counts.notification_count += 1
                counts.highlight_count += unread.highlight
        self._counts.put(key, _CachedCounts(out, scanned, unthreaded, threads))
        return out

    def forget_counts(self, user_id: str, room: int) -> None:
        """Read points changed (a receipt): recount next time."""
        self._counts.discard((user_id, room))

    def landed(self, room: int, position: int, notified: Iterable[list[str]], sender: str | None) -> None:
        """Notifications at `position` were written for the users in `notified`; `sender` (local)
        sent the event, which moved their read point: keep cached counts exact. On the send path:
        a notification after every other of its room only moves the room's mark."""
        counts = self._counts
        if sender is not None:
            counts.discard((sender, room))
        if not notified:
            return
        landed = self._landed
        if position > landed.get(room, self._landed_floor):
            if len(landed) >= MAX_ROOMS_MARKED and room not in landed:
                self._landed_floor = max(self._landed_floor, *landed.values())
                landed.clear()
            landed[room] = position  # counts scanned below it read on from where they stopped
            return
        # landed after a later one: counts that scanned past its position missed it
        for users in notified:
            for user_id in users:
                cached = counts.peek((user_id, room))
                if cached is not None and position <= cached.scanned:
                    counts.discard((user_id, room))

    # -- GET /notifications ----------------------------------------------------------------------

    def notifications(
        self, user_id: str, from_token: str | None, limit: int, only_highlight: bool
    ) -> tuple[list[tuple[int, dict[str, Any]]], str | None]:
        before = None
        if from_token:
            before = parse_counter(from_token)
            if before is None:
                raise MatrixError(400, "M_INVALID_PARAM", "from must be a token from an earlier response")
        out: list[tuple[int, dict[str, Any]]] = []
        next_token = None
        for stream, record in self.push.notifications(user_id, before=before):
            if only_highlight and not record.get("highlight"):
                continue
            if len(out) == limit:
                next_token = str(out[-1][0])
                break
            out.append((stream, record))
        return out, next_token

    def is_read(self, user_id: str, room: int, position: int, thread: str) -> bool:
        unthreaded, threads = self.read_points(user_id, room)
        return position <= max(unthreaded, threads.get(thread, 0))
