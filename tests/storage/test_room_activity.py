"""The activity index of sliding sync: one key per (user, room), ordered by stamp, also when one
batch moves the same room several times (the batch's own writes are remembered until it lands)."""

from __future__ import annotations

from pathlib import Path

from storage.engine import Store
from storage.sliding_sync import USER_ACTIVITY, ConnectionStore, RoomActivityStore


def test_stamps_in_one_batch_leave_one_key_per_room(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        index = RoomActivityStore(store)
        with store.batch() as b:
            index.set_stamp("@a:hs", 1, 5, b)
            index.set_stamp("@a:hs", 2, 6, b)
            index.set_stamp("@a:hs", 1, 7, b)  # room 1 again, before the batch landed
            index.set_bump(1, 7, b)
            assert index.bump(1, b) == 7 and index.bump(1) == 0  # the batch sees its own bump
            store.commit_now(b)
        assert list(index.by_activity("@a:hs")) == [(1, 7), (2, 6)]
        assert store.count(USER_ACTIVITY) == 2
        with store.batch() as b:
            index.set_stamp("@a:hs", 2, 9, b)
            index.remove("@a:hs", 1, b)
            store.commit_now(b)
        assert list(index.by_activity("@a:hs")) == [(2, 9)]
        assert index.stamp("@a:hs", 1) is None and index.bump(1) == 7
        assert list(index.by_activity("@b:hs")) == []


def test_a_connection_keeps_two_positions(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        conns = ConnectionStore(store)

        def save(parent: int | None, n: int) -> int:
            with store.batch() as b:
                position = conns.save("@a:hs", "DEV", "room-list", parent, {"n": n}, b)
                store.commit_now(b)
            return position

        first = save(None, 1)
        second = save(first, 2)
        third = save(second, 3)
        assert conns.position("@a:hs", "DEV", "room-list", first) is None  # dropped: two stay
        assert conns.position("@a:hs", "DEV", "room-list", second) == {"n": 2}
        retried = save(second, 4)  # the answer at `third` was lost: the client asks from `second` again
        assert conns.position("@a:hs", "DEV", "room-list", third) is None
        assert conns.position("@a:hs", "DEV", "room-list", retried) == {"n": 4}
        assert conns.position("@a:hs", "DEV", "other", retried) is None
        with store.batch() as b:
            conns.delete_device("@a:hs", "DEV", b)
            store.commit_now(b)
        assert conns.connection("@a:hs", "DEV", "room-list") is None
