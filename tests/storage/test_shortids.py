"""Short ids handed out to batches that are not written yet."""

from __future__ import annotations

from pathlib import Path

from storage.engine import Store
from storage.shortids import ShortIds


def test_ids_made_for_an_uncommitted_batch_survive_if_another_batch_that_uses_them_commits(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        ids = ShortIds(store)
        a, b = store.batch(), store.batch()
        sk = ids.state_key_or_create("m.room.member", "@u:x", a)
        assert ids.state_key_or_create("m.room.member", "@u:x", b) == sk  # b uses a's id before a lands
        a.abort()  # a is dropped (say its group commit failed): b still writes the mapping
        assert ids.state_key("m.room.member", "@u:x") == sk
        store.commit_now(b)
    with Store(tmp_path / "db") as store:
        ids = ShortIds(store)
        assert ids.state_key("m.room.member", "@u:x") == sk
        assert ids.state_key_of(sk) == ("m.room.member", "@u:x")


def test_ids_of_dropped_batches_are_forgotten(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        ids = ShortIds(store)
        a, b = store.batch(), store.batch()
        short = ids.event_or_create("$e", a)
        ids.event_or_create("$e", b)
        a.abort()
        b.abort()
        assert ids.event("$e") is None
        c = store.batch()
        again = ids.event_or_create("$e", c)
        assert again != short  # a new id; the gap is harmless
        store.commit_now(c)
        assert ids.event_id(again) == "$e"
    with Store(tmp_path / "db") as store:
        assert ShortIds(store).event("$e") == again
