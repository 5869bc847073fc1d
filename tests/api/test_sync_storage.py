"""The storage sync relies on: reverse range scans (timelines read newest first down to `since`),
and the tables of the sync-side services."""

from __future__ import annotations

from pathlib import Path

from storage.codec import u64
from storage.database import Database
from storage.receipts import Receipt
from storage.rooms import TIMELINE


def test_reverse_range_scan_includes_its_start(tmp_path: Path) -> None:
    # plyvel 1.5.1 returns nothing for a reverse range whose only key is its start
    with Database(tmp_path / "db") as db:
        with db.store.batch() as batch:
            for order in (1, 2, 3, 9):
                batch.put(TIMELINE, u64(7) + u64(order), u64(order))
            db.store.commit_now(batch)

        def orders(after: int, before: int) -> list[int]:
            return [o for o, _ in db.rooms.timeline(7, after=after, before=before, reverse=True)]

        assert orders(8, 10) == [9]
        assert orders(2, 4) == [3]
        assert orders(1, 4) == [3, 2]
        assert orders(0, 100) == [9, 3, 2, 1]
        assert orders(3, 9) == []
        assert [o for o, _ in db.rooms.timeline(7, reverse=True)] == [9, 3, 2, 1]
        assert list(db.rooms.timeline(8, reverse=True)) == []


def test_receipts_and_account_data_streams(tmp_path: Path) -> None:
    with Database(tmp_path / "db") as db:
        with db.store.batch() as batch:
            first = batch.next_count()
            db.receipts.put(5, Receipt("@a:hs", "m.read", "", "$one", 10, 1000, first), batch)
            db.account_data.put("@a:hs", "", "x.y", {"v": 1}, first, batch)
            db.store.commit_now(batch)
        with db.store.batch() as batch:
            second = batch.next_count()
            db.receipts.put(5, Receipt("@a:hs", "m.read", "", "$two", 11, 2000, second), batch)
            db.account_data.put("@a:hs", "!r:hs", "x.y", {"v": 2}, second, batch)
            db.store.commit_now(batch)
        # an updated receipt moves along the stream: only the current one is left
        assert [r.event_id for r in db.receipts.in_room(5)] == ["$two"]
        assert [r.event_id for r in db.receipts.in_room(5, after=second)] == []
        assert db.receipts.latest(5) == second
        assert db.receipts.get(5, "@a:hs", "m.read", "").event_id == "$two"  # type: ignore[union-attr]
        assert list(db.account_data.changed("@a:hs", first, second)) == [("!r:hs", "x.y")]
        assert sorted(db.account_data.all_of("@a:hs")) == [("", "x.y", {"v": 1}), ("!r:hs", "x.y", {"v": 2})]
        assert list(db.account_data.all_of("@a:hs", "")) == [("", "x.y", {"v": 1})]
        assert db.account_data.latest("@a:hs") == second
