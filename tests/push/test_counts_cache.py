"""Cached unread counts stay exact as notifications land (`Notifications.landed`, told by the send
path once an event's batch is written): in position order a room keeps one mark and counts read on
from where they stopped; a notification landing after a later one drops the counts that went past it.
Every answer is checked against a count from scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from homeserver.push import notifications as notifications_module
from homeserver.push.notifications import Notifications
from storage.cache import CacheRegistry
from storage.engine import Store
from storage.push import NotificationGroup, PushStore

BOB, CAROL = "@bob:hs", "@carol:hs"
ROOM, OTHER = 1, 2


class Receipts:
    def __init__(self) -> None:
        self.read: dict[tuple[str, int], int] = {}

    def read_positions(self, user_id: str, room: int) -> tuple[int, dict[str, int]]:
        return self.read.get((user_id, room), 0), {}


class World:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.push = PushStore(store)
        self.receipts = Receipts()
        self.notes = Notifications(self.push, self.receipts, CacheRegistry(32))  # type: ignore[arg-type]

    def write(self, room: int, position: int, users: list[str]) -> None:
        """The rows, without telling `Notifications` (a batch written, its callbacks not yet run)."""
        with self.store.batch() as b:
            group = NotificationGroup(["notify"], False, users)
            self.push.add_notifications(f"!{room}:hs", room, position, position, 0, "", [group], b)
            self.store.commit_now(b)

    def land(self, room: int, position: int, users: list[str]) -> None:
        self.write(room, position, users)
        self.notes.landed(room, position, [users], None)

    def check(self, user_id: str, room: int) -> int:
        cached = self.notes.counts(user_id, room).total.notification_count
        fresh = Notifications(self.push, self.receipts, CacheRegistry(32))  # type: ignore[arg-type]
        assert cached == fresh.counts(user_id, room).total.notification_count
        return cached


def test_counts_follow_notifications_in_order(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        w = World(store)
        w.land(ROOM, 3, [BOB, CAROL])
        assert (w.check(BOB, ROOM), w.check(CAROL, ROOM)) == (1, 1)
        w.land(ROOM, 4, [CAROL])  # bob's cached count is behind the room's mark: read on, nothing new
        w.land(OTHER, 5, [BOB])
        assert (w.check(BOB, ROOM), w.check(CAROL, ROOM), w.check(BOB, OTHER)) == (1, 2, 1)
        w.land(ROOM, 6, [BOB, CAROL])
        assert (w.check(BOB, ROOM), w.check(CAROL, ROOM)) == (2, 3)
        w.receipts.read[(BOB, ROOM)] = 6
        w.notes.forget_counts(BOB, ROOM)
        assert w.check(BOB, ROOM) == 0


def test_a_notification_landing_after_a_later_one_is_counted(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        w = World(store)
        w.land(ROOM, 3, [BOB])
        assert w.check(BOB, ROOM) == 1
        w.land(ROOM, 8, [BOB])  # position 7 was taken first, and lands after
        assert w.check(BOB, ROOM) == 2
        w.land(ROOM, 7, [BOB])
        assert w.check(BOB, ROOM) == 3
        # counted from scratch while 10 is written but not yet announced and 9 is still in flight
        w.notes.forget_counts(BOB, ROOM)
        w.write(ROOM, 10, [BOB])
        assert w.check(BOB, ROOM) == 4
        w.notes.landed(ROOM, 10, [[BOB]], None)
        w.land(ROOM, 9, [BOB])
        assert w.check(BOB, ROOM) == 5


def test_the_room_marks_are_bounded(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(notifications_module, "MAX_ROOMS_MARKED", 3)
    with Store(tmp_path / "db") as store:
        w = World(store)
        for room in range(1, 6):
            w.land(room, room, [BOB])
            assert w.check(BOB, room) == 1
        assert len(w.notes._landed) <= 3
        w.land(2, 4, [BOB])  # below the floor the dropped marks left: counted all the same
        assert [w.check(BOB, room) for room in range(1, 6)] == [1, 2, 1, 1, 1]
