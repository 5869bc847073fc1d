"""History visibility (spec: client-server-api "Room History Visibility") through every reading endpoint."""

from __future__ import annotations

import pytest

from homeserver.rooms.visibility import can_see_room, filter_events_for_user, room_access

from .conftest import Harness, User
from .rooms_helpers import bodies, create_room, invite, join, messages, put_state, q, send

pytestmark = pytest.mark.asyncio


async def _room(harness: Harness, visibility: str) -> tuple[User, User, str]:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(
        harness,
        alice,
        preset="public_chat",
        initial_state=[{"type": "m.room.history_visibility", "content": {"history_visibility": visibility}}],
    )
    return alice, bob, room_id


async def test_shared_history_is_visible_to_new_members_and_stops_at_leave(harness: Harness) -> None:
    alice, bob, room_id = await _room(harness, "shared")
    await send(harness, alice, room_id, "before bob")
    status, body = await messages(harness, bob, room_id)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    await join(harness, bob, room_id)
    await send(harness, alice, room_id, "while bob")
    assert await bodies(harness, bob, room_id) == ["while bob", "before bob"]
    status, _ = await harness.request("POST", f"rooms/{q(room_id)}/leave", bob)
    await send(harness, alice, room_id, "after bob")
    # after leaving, bob still sees what he could see, and nothing newer
    assert await bodies(harness, bob, room_id) == ["while bob", "before bob"]
    status, body = await messages(harness, bob, room_id, "dir=f&limit=100")
    assert "after bob" not in [e["content"].get("body") for e in body["chunk"]]
    # nor through /event or /context
    status, page = await messages(harness, alice, room_id, "dir=b&limit=1")
    latest = page["chunk"][0]["event_id"]
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/event/{q(latest)}", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/context/{q(latest)}", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    # the state bob sees is the state when he left
    await put_state(harness, alice, room_id, "m.room.name", {"name": "renamed later"})
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/state/m.room.name", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/state", bob)
    assert status == 200 and "m.room.name" not in {e["type"] for e in body}


async def test_joined_visibility_hides_history_before_the_join(harness: Harness) -> None:
    alice, bob, room_id = await _room(harness, "joined")
    await send(harness, alice, room_id, "before bob")
    await join(harness, bob, room_id)
    await send(harness, alice, room_id, "after bob joined")
    assert await bodies(harness, bob, room_id) == ["after bob joined"]
    _status, body = await messages(harness, bob, room_id, "dir=f&limit=100")
    types = [e["type"] for e in body["chunk"]]
    # the room's first events came before any history visibility was set, so they count as shared
    # (spec: no m.room.history_visibility means shared); from the `joined` setting on, bob sees only
    # what follows his own join
    hv = types.index("m.room.history_visibility")
    assert types[hv + 1 :] == ["m.room.member", "m.room.message"]
    assert body["chunk"][hv + 1]["state_key"] == bob.user_id


async def test_invited_visibility_shows_history_from_the_invite(harness: Harness) -> None:
    alice, bob, room_id = await _room(harness, "invited")
    await send(harness, alice, room_id, "before invite")
    await invite(harness, alice, room_id, bob)
    await send(harness, alice, room_id, "after invite")
    await join(harness, bob, room_id)
    await send(harness, alice, room_id, "after join")
    assert await bodies(harness, bob, room_id) == ["after join", "after invite"]


async def test_world_readable_rooms_are_readable_without_joining(harness: Harness) -> None:
    alice, bob, room_id = await _room(harness, "world_readable")
    await send(harness, alice, room_id, "for everyone")
    assert await bodies(harness, bob, room_id) == ["for everyone"]
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/state/m.room.join_rules", bob)
    assert status == 200 and body == {"join_rule": "public"}
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/members", bob)
    assert status == 200 and [e["state_key"] for e in body["chunk"]] == [alice.user_id]
    # ... but only the events sent while it was world readable
    await put_state(harness, alice, room_id, "m.room.history_visibility", {"history_visibility": "joined"})
    await send(harness, alice, room_id, "members only")
    status, body = await messages(harness, bob, room_id, "dir=b&limit=100")
    assert status == 403  # no longer world readable and bob never joined


async def test_history_visibility_change_events_are_visible_either_side(harness: Harness) -> None:
    alice, bob, room_id = await _room(harness, "joined")
    await put_state(harness, alice, room_id, "m.room.history_visibility", {"history_visibility": "world_readable"})
    await send(harness, alice, room_id, "public now")
    status, body = await messages(harness, bob, room_id, "dir=b&limit=100")
    assert status == 200
    types = [(e["type"], e["content"].get("history_visibility") or e["content"].get("body")) for e in body["chunk"]]
    assert types == [("m.room.message", "public now"), ("m.room.history_visibility", "world_readable")]


async def test_unsigned_membership_and_prev_content_respect_visibility(harness: Harness) -> None:
    alice, bob, room_id = await _room(harness, "joined")
    await put_state(harness, alice, room_id, "m.room.topic", {"topic": "secret topic"})
    await join(harness, bob, room_id)
    await put_state(harness, alice, room_id, "m.room.topic", {"topic": "public topic"})
    status, body = await messages(harness, bob, room_id, "dir=b&limit=1")
    assert status == 200
    topic = body["chunk"][0]
    assert topic["content"] == {"topic": "public topic"}
    assert topic["unsigned"]["membership"] == "join"
    # the previous topic was sent before bob could see: no prev_content, but replaces_state
    assert "prev_content" not in topic["unsigned"] and topic["unsigned"]["replaces_state"].startswith("$")
    _status, body = await messages(harness, alice, room_id, "dir=b&limit=1")
    assert body["chunk"][0]["unsigned"]["prev_content"] == {"topic": "secret topic"}


async def test_visibility_api_for_sync(harness: Harness) -> None:
    alice, bob, room_id = await _room(harness, "joined")
    before = await send(harness, alice, room_id, "before")
    await join(harness, bob, room_id)
    after = await send(harness, alice, room_id, "after")
    db = harness.hs.db
    room = db.ids.room(room_id)
    assert room is not None
    shorts = [db.ids.event(before), db.ids.event(after)]
    assert None not in shorts
    visible = filter_events_for_user(harness.hs, bob.user_id, room, shorts)
    assert visible == [db.ids.event(after)]
    assert filter_events_for_user(db, alice.user_id, room, shorts) == shorts

    class Persisted:
        def __init__(self, short: int) -> None:
            self.short = short

    items = [Persisted(s) for s in shorts if s is not None]
    assert [p.short for p in filter_events_for_user(db, bob.user_id, room, items)] == [db.ids.event(after)]
    assert can_see_room(db, bob.user_id, room)
    carol = await harness.user("carol")
    assert not can_see_room(harness.hs, carol.user_id, room)
    access = room_access(db, bob.user_id, room)
    assert access.joined and access.membership == "join" and not access.forgotten
