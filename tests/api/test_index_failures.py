"""A failure in the room indexes (relations, search, transaction ids) is never silent.

In tests (`strict_indexes`, as the API harness sets it) it fails the write. In production the event is
written without the hook's half-done writes, and the failure is logged, counted and kept in the store,
where `inspect check` (`check_consistency`) reports it.
"""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.rooms.pipeline import PersistedEvent, RoomContext
from storage.check import check_consistency
from storage.engine import Batch
from storage.search_index import SEARCH_POSTINGS

from .conftest import Harness
from .rooms_helpers import bodies, create_room, q, send


def break_indexes(harness: Harness) -> list[str]:
    """Make the room service's index hook write something, then fail, for messages saying "boom"."""
    rooms = harness.hs.rooms
    real = rooms._index
    failed: list[str] = []

    def index(batch: Batch, ctx: RoomContext, persisted: PersistedEvent) -> None:
        real(batch, ctx, persisted)  # the event's real index writes go into the batch first
        if persisted.event.get("content", {}).get("body") == "boom":
            failed.append(persisted.event_id)
            raise RuntimeError("an index bug")

    rooms._index = index  # type: ignore[method-assign]
    return failed


async def test_in_tests_an_index_failure_fails_the_write(harness: Harness) -> None:
    alice = await harness.user("alice")
    room = await create_room(harness, alice)
    break_indexes(harness)
    status, _ = await harness.request(
        "PUT", f"rooms/{q(room)}/send/m.room.message/t1", alice, json={"msgtype": "m.text", "body": "boom"}
    )
    assert status == 500
    assert "boom" not in await bodies(harness, alice, room)  # nothing of it was written
    assert check_consistency(harness.hs.db) == []


@pytest.mark.parametrize("harness", [{"strict_indexes": False}], indirect=True)
async def test_in_production_the_event_is_written_and_the_failure_kept(harness: Harness) -> None:
    alice = await harness.user("alice")
    room = await create_room(harness, alice)
    failed = break_indexes(harness)
    boom = await send(harness, alice, room, "boom")
    assert failed == [boom]
    after = await send(harness, alice, room, "after the failure")
    assert await bodies(harness, alice, room) == ["after the failure", "boom"]
    # the hook's writes for the failed event were dropped (no search postings for "boom") ...
    db = harness.hs.db
    short = db.ids.event(boom)
    assert short is not None
    keys: list[Any] = [k for k, _ in db.store.iterate(SEARCH_POSTINGS)]
    assert any(b"failure" in k for k in keys)  # postings hold their token: the check below can fail
    assert not any(b"boom" in k for k in keys)
    # ... while the events after it are indexed as usual
    status, found = await harness.request(
        "POST", "search", alice, json={"search_categories": {"room_events": {"search_term": "failure"}}}
    )
    assert status == 200
    assert [r["result"]["event_id"] for r in found["search_categories"]["room_events"]["results"]] == [after]
    assert harness.hs.rooms.index_failures == 1
    problems = check_consistency(db)
    assert len(problems) == 1
    assert boom in problems[0] and "an index bug" in problems[0]
