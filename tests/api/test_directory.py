"""Room aliases, the published room directory and /publicRooms."""

from __future__ import annotations

import pytest

from .conftest import Harness
from .rooms_helpers import create_room, join, put_state, q

pytestmark = pytest.mark.asyncio


async def test_alias_lifecycle(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, preset="public_chat")
    alias = "#lobby:hs.test"
    path = f"directory/room/{q(alias)}"
    status, body = await harness.request("GET", path)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("PUT", path, alice, json={"room_id": room_id})
    assert status == 200 and body == {}
    status, body = await harness.request("GET", path)  # no token needed
    assert status == 200 and body == {"room_id": room_id, "servers": ["hs.test"]}
    status, body = await harness.request("PUT", path, alice, json={"room_id": room_id})
    assert status == 409 and body["errcode"] == "M_UNKNOWN"
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/aliases", alice)
    assert status == 200 and body == {"aliases": [alias]}
    # not in the room: no aliases list, no new alias
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/aliases", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("PUT", f"directory/room/{q('#bobs:hs.test')}", bob, json={"room_id": room_id})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # a member without power cannot delete alice's alias
    await join(harness, bob, room_id)
    status, body = await harness.request("DELETE", path, bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # deleting also drops it from m.room.canonical_alias
    await put_state(harness, alice, room_id, "m.room.canonical_alias", {"alias": alias, "alt_aliases": [alias]})
    status, body = await harness.request("DELETE", path, alice)
    assert status == 200 and body == {}
    status, body = await harness.request("GET", path)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/state/m.room.canonical_alias", alice)
    assert status == 200 and body == {"alt_aliases": []}
    status, body = await harness.request("DELETE", path, alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_alias_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice)
    for alias, method, status_code, errcode in [
        ("lobby", "GET", 400, "M_INVALID_PARAM"),
        ("#no-server", "GET", 400, "M_INVALID_PARAM"),
        ("#x:elsewhere.test", "GET", 404, "M_NOT_FOUND"),
        ("#x:elsewhere.test", "PUT", 400, "M_INVALID_PARAM"),
        ("#x:elsewhere.test", "DELETE", 404, "M_NOT_FOUND"),
    ]:
        status, body = await harness.request(method, f"directory/room/{q(alias)}", alice, json={"room_id": room_id})
        assert status == status_code and body["errcode"] == errcode, (alias, method, body)
    path = f"directory/room/{q('#ok:hs.test')}"
    status, body = await harness.request("PUT", path, alice, json={})
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await harness.request("PUT", path, alice, json={"room_id": 5})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await harness.request("PUT", path, alice, json={"room_id": "!nope:hs.test"})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("PUT", path, None, json={"room_id": room_id})
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    status, body = await harness.request("GET", f"rooms/{q('!nope:hs.test')}/aliases", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_directory_visibility(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, preset="public_chat")
    path = f"directory/list/room/{q(room_id)}"
    status, body = await harness.request("GET", path)
    assert status == 200 and body == {"visibility": "private"}
    status, body = await harness.request("PUT", path, bob, json={"visibility": "public"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("PUT", path, alice, json={"visibility": "public"})
    assert status == 200 and body == {}
    status, body = await harness.request("GET", path)
    assert body == {"visibility": "public"}
    status, body = await harness.request("PUT", path, alice, json={"visibility": "hidden"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("PUT", path, alice, json={"visibility": "private"})
    assert status == 200
    status, body = await harness.request("GET", path)
    assert body == {"visibility": "private"}
    status, body = await harness.request("GET", f"directory/list/room/{q('!nope:hs.test')}")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("PUT", f"directory/list/room/{q('!nope:hs.test')}", alice, json={})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_public_rooms(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    big = await create_room(
        harness,
        alice,
        visibility="public",
        preset="public_chat",
        name="Big room",
        topic="All about cats",
        room_alias_name="big",
        initial_state=[
            {"type": "m.room.avatar", "content": {"url": "mxc://hs.test/avatar"}},
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
            {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}},
        ],
    )
    await join(harness, bob, big)
    small = await create_room(harness, alice, visibility="public", name="Small room")
    space = await create_room(harness, alice, visibility="public", name="A space", creation_content={"type": "m.space"})
    await create_room(harness, alice, name="Not published")

    status, body = await harness.request("GET", "publicRooms")
    assert status == 200
    assert next(e["room_id"] for e in body["chunk"]) == big
    assert {e["room_id"] for e in body["chunk"]} == {big, small, space}
    assert body["total_room_count_estimate"] == 3
    entry = body["chunk"][0]
    assert entry == {
        "room_id": big,
        "name": "Big room",
        "topic": "All about cats",
        "avatar_url": "mxc://hs.test/avatar",
        "canonical_alias": "#big:hs.test",
        "num_joined_members": 2,
        "world_readable": True,
        "guest_can_join": True,
        "join_rule": "public",
    }
    small_entry = next(e for e in body["chunk"] if e["room_id"] == small)
    # visibility public without a preset means public_chat
    assert small_entry["join_rule"] == "public" and small_entry["world_readable"] is False
    assert next(e for e in body["chunk"] if e["room_id"] == space)["room_type"] == "m.space"
    # pagination
    status, page1 = await harness.request("GET", "publicRooms?limit=2")
    assert len(page1["chunk"]) == 2 and "next_batch" in page1 and "prev_batch" not in page1
    status, page2 = await harness.request("GET", f"publicRooms?limit=2&since={page1['next_batch']}")
    assert len(page2["chunk"]) == 1 and "next_batch" not in page2 and "prev_batch" in page2
    assert {e["room_id"] for e in page1["chunk"] + page2["chunk"]} == {big, small, space}
    # POST with a filter
    status, body = await harness.request("POST", "publicRooms", alice, json={"filter": {"generic_search_term": "CATS"}})
    assert status == 200 and [e["room_id"] for e in body["chunk"]] == [big]
    status, body = await harness.request("POST", "publicRooms", alice, json={"filter": {"room_types": ["m.space"]}})
    assert [e["room_id"] for e in body["chunk"]] == [space]
    status, body = await harness.request("POST", "publicRooms", alice, json={"filter": {"room_types": [None]}})
    assert {e["room_id"] for e in body["chunk"]} == {big, small}
    status, body = await harness.request("POST", "publicRooms", alice, json={"include_all_networks": True, "limit": 1})
    assert len(body["chunk"]) == 1 and body["next_batch"]


async def test_public_rooms_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    for query, user, errcode, code in [
        ("since=garbage", None, "M_INVALID_PARAM", 400),
        ("limit=0", None, "M_INVALID_PARAM", 400),
        ("server=elsewhere.test", alice, "M_NOT_FOUND", 404),
        ("server=elsewhere.test", None, "M_MISSING_TOKEN", 401),  # asking another server needs a user
    ]:
        status, body = await harness.request("GET", f"publicRooms?{query}", user)
        assert status == code and body["errcode"] == errcode, query
    for payload in ({"limit": "ten"}, {"filter": []}, {"filter": {"generic_search_term": 1}}, {"since": 5}):
        status, body = await harness.request("POST", "publicRooms", alice, json=payload)
        assert status == 400 and body["errcode"] == "M_BAD_JSON", payload
    status, body = await harness.request("POST", "publicRooms", None, json={})
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    status, body = await harness.request("POST", "publicRooms", alice)
    assert status == 200 and body["chunk"] == []
