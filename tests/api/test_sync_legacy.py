"""GET /events: the deprecated event stream, and peeking into world-readable rooms."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import Harness
from .sync_helpers import create_room, put_state, q, send, wait_until

pytestmark = pytest.mark.asyncio


async def test_events_stream_and_peek(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room = await create_room(harness, alice)
    status, first = await harness.request("GET", "events?timeout=0", alice)
    assert status == 200 and first["chunk"] == []
    poll = asyncio.create_task(harness.request("GET", f"events?from={first['end']}&timeout=20000", alice))
    await wait_until(lambda: harness.hs.notifier.waiting(alice.user_id) > 0)
    msg = await send(harness, alice, room, "streamed")
    status, body = await asyncio.wait_for(poll, 10)
    assert status == 200 and [e["event_id"] for e in body["chunk"]] == [msg]
    assert body["chunk"][0]["room_id"] == room
    # peeking needs a room the user may read
    status, body = await harness.request("GET", f"events?room_id={q(room)}&timeout=0", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    await put_state(harness, alice, room, "m.room.history_visibility", {"history_visibility": "world_readable"})
    public = await send(harness, alice, room, "for everyone")
    status, body = await harness.request("GET", f"events?room_id={q(room)}&from={first['end']}&timeout=0", bob)
    assert status == 200
    seen = [e["event_id"] for e in body["chunk"]]
    assert public in seen and msg not in seen  # sent while the history was `shared`
    status, body = await harness.request("GET", "events?from=garbage", alice)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
