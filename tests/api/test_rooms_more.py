"""Room upgrades, room summaries, space hierarchies, mutual rooms, room initialSync, user reports."""

from __future__ import annotations

from typing import Any

from .conftest import Harness, User
from .rooms_helpers import create_room, join, put_state, q, send


async def state_of(harness: Harness, user: User, room_id: str) -> dict[tuple[str, str], Any]:
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/state", user)
    assert status == 200, body
    return {(e["type"], e["state_key"]): e for e in body}


async def test_upgrade_room(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    old = await create_room(
        harness,
        alice,
        preset="public_chat",
        name="Old name",
        topic="Old topic",
        room_alias_name="up",
        visibility="public",
        room_version="10",
        creation_content={"type": "m.space"},
    )
    await join(harness, bob, old)
    last = await send(harness, alice, old, "last words")
    status, body = await harness.request("POST", f"rooms/{q(old)}/upgrade", bob, json={"new_version": "11"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("POST", f"rooms/{q(old)}/upgrade", alice, json={"new_version": "11"})
    assert status == 200, body
    new = body["replacement_room"]
    assert new != old
    state = await state_of(harness, alice, new)
    create = state[("m.room.create", "")]["content"]
    assert create["room_version"] == "11" and create["type"] == "m.space"
    assert create["predecessor"] == {"room_id": old, "event_id": last}
    assert state[("m.room.name", "")]["content"] == {"name": "Old name"}
    assert state[("m.room.topic", "")]["content"]["topic"] == "Old topic"
    assert state[("m.room.join_rules", "")]["content"] == {"join_rule": "public"}
    assert state[("m.room.canonical_alias", "")]["content"] == {"alias": "#up:hs.test"}
    assert ("m.room.member", bob.user_id) not in state
    status, body = await harness.request("GET", f"directory/room/{q('#up:hs.test')}")
    assert body["room_id"] == new
    status, body = await harness.request("GET", f"directory/list/room/{q(new)}")
    assert body == {"visibility": "public"}
    status, body = await harness.request("GET", f"directory/list/room/{q(old)}")
    assert body == {"visibility": "private"}
    old_state = await state_of(harness, alice, old)
    assert old_state[("m.room.tombstone", "")]["content"]["replacement_room"] == new
    pl = old_state[("m.room.power_levels", "")]["content"]
    assert pl["events_default"] == 50 and pl["invite"] == 50
    # ordinary members can no longer talk in the old room
    status, body = await harness.request("PUT", f"rooms/{q(old)}/send/m.room.message/x", bob, json={"body": "hi"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_upgrade_to_v12_and_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    old = await create_room(harness, alice, room_version="11")
    status, body = await harness.request(
        "POST", f"rooms/{q(old)}/upgrade", alice, json={"new_version": "12", "additional_creators": [bob.user_id]}
    )
    assert status == 200, body
    state = await state_of(harness, alice, body["replacement_room"])
    assert state[("m.room.create", "")]["content"]["additional_creators"] == [bob.user_id]
    assert alice.user_id not in state[("m.room.power_levels", "")]["content"]["users"]
    for payload, code, errcode in [
        ({"new_version": "99"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({}, 400, "M_MISSING_PARAM"),
        ({"new_version": 11}, 400, "M_BAD_JSON"),
        ({"new_version": "11", "additional_creators": "bob"}, 400, "M_BAD_JSON"),
    ]:
        status, body = await harness.request("POST", f"rooms/{q(old)}/upgrade", alice, json=payload)
        assert status == code and body["errcode"] == errcode, payload
    status, body = await harness.request("POST", f"rooms/{q(old)}/upgrade", bob, json={"new_version": "11"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("POST", f"rooms/{q('!x:hs.test')}/upgrade", alice, json={"new_version": "11"})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_room_summary(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    public = await create_room(harness, alice, preset="public_chat", name="Pub", room_alias_name="sum")
    private = await create_room(
        harness,
        alice,
        name="Priv",
        initial_state=[{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
    )
    base = "/_matrix/client/v1/room_summary"
    status, body = await harness.request("GET", f"{base}/{q(public)}")  # no token: public rooms only
    assert status == 200
    assert body["room_id"] == public and body["name"] == "Pub" and body["join_rule"] == "public"
    assert body["num_joined_members"] == 1 and body["room_version"] and "membership" not in body
    status, body = await harness.request("GET", f"{base}/{q('#sum:hs.test')}", alice)
    assert status == 200 and body["room_id"] == public and body["membership"] == "join"
    status, body = await harness.request("GET", f"{base}/{q(private)}", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"{base}/{q(private)}", alice)
    assert status == 200 and body["encryption"] == "m.megolm.v1.aes-sha2"
    status, body = await harness.request("GET", f"{base}/{q(private)}")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"{base}/nonsense", alice)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


async def test_space_hierarchy(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    space = await create_room(harness, alice, preset="public_chat", name="Space", creation_content={"type": "m.space"})
    sub = await create_room(harness, alice, preset="public_chat", name="Sub", creation_content={"type": "m.space"})
    a = await create_room(harness, alice, preset="public_chat", name="A")
    b = await create_room(harness, alice, preset="public_chat", name="B")
    hidden = await create_room(harness, alice, name="Hidden")
    deep = await create_room(harness, alice, preset="public_chat", name="Deep")
    via = {"via": ["hs.test"]}
    await put_state(harness, alice, space, "m.space.child", {**via, "order": "b"}, a)
    await put_state(harness, alice, space, "m.space.child", {**via, "order": "a", "suggested": True}, sub)
    await put_state(harness, alice, space, "m.space.child", via, b)
    await put_state(harness, alice, space, "m.space.child", via, hidden)
    await put_state(harness, alice, space, "m.space.child", {}, deep)  # no via: not a child
    await put_state(harness, alice, sub, "m.space.child", via, deep)
    base = f"/_matrix/client/v1/rooms/{q(space)}/hierarchy"

    status, body = await harness.request("GET", base, bob)
    assert status == 200
    names = [r.get("name") for r in body["rooms"]]
    # depth first, children in their `order`, then by timestamp; the private room is not shown to bob
    assert names == ["Space", "Sub", "Deep", "A", "B"]
    root = body["rooms"][0]
    assert {c["state_key"] for c in root["children_state"]} == {a, sub, b, hidden}
    assert all("origin_server_ts" in c for c in root["children_state"])
    assert body["rooms"][3]["children_state"] == []
    status, body = await harness.request("GET", base, alice)
    assert "Hidden" in [r.get("name") for r in body["rooms"]]
    status, body = await harness.request("GET", f"{base}?max_depth=0", bob)
    assert [r["name"] for r in body["rooms"]] == ["Space"]
    status, body = await harness.request("GET", f"{base}?suggested_only=true", bob)
    assert [r["name"] for r in body["rooms"]] == ["Space", "Sub"]
    status, page1 = await harness.request("GET", f"{base}?limit=2", bob)
    assert [r["name"] for r in page1["rooms"]] == ["Space", "Sub"] and page1["next_batch"]
    status, page2 = await harness.request("GET", f"{base}?limit=2&from={page1['next_batch']}", bob)
    assert [r["name"] for r in page2["rooms"]] == ["Deep", "A"]
    status, body = await harness.request("GET", f"{base}?limit=2&from={page1['next_batch']}&max_depth=1", bob)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    for query in ("from=zzz", "limit=0", "max_depth=-1", "suggested_only=perhaps"):
        status, body = await harness.request("GET", f"{base}?{query}", bob)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", query
    status, body = await harness.request("GET", f"/_matrix/client/v1/rooms/{q(hidden)}/hierarchy", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_mutual_rooms(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    shared = await create_room(harness, alice, preset="public_chat")
    await create_room(harness, alice)
    await join(harness, bob, shared)
    base = "/_matrix/client/v1/mutual_rooms"
    status, body = await harness.request("GET", f"{base}?user_id={q(bob.user_id)}", alice)
    assert status == 200 and body == {"joined": [shared], "count": 1}
    status, body = await harness.request("GET", f"{base}?user_id={q('@nobody:hs.test')}", alice)
    assert status == 200 and body == {"joined": [], "count": 0}
    for query, errcode in [
        ("", "M_MISSING_PARAM"),
        (f"user_id={q(alice.user_id)}", "M_INVALID_PARAM"),
        ("user_id=bob", "M_INVALID_PARAM"),
        (f"user_id={q(bob.user_id)}&from=nope", "M_INVALID_PARAM"),
    ]:
        status, body = await harness.request("GET", f"{base}?{query}", alice)
        assert status == 400 and body["errcode"] == errcode, query


async def test_room_initial_sync(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, name="Peek")
    await send(harness, alice, room_id, "latest")
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/initialSync", alice)
    assert status == 200
    assert body["room_id"] == room_id and body["membership"] == "join" and body["visibility"] == "private"
    assert body["messages"]["chunk"][-1]["content"]["body"] == "latest"
    assert body["messages"]["chunk"][0]["type"] == "m.room.create" and "start" not in body["messages"]
    assert ("m.room.name", "") in {(e["type"], e["state_key"]) for e in body["state"]}
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/initialSync", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_report_user(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    status, body = await harness.request("POST", f"users/{q(bob.user_id)}/report", alice, json={"reason": "spam"})
    assert status == 200 and body == {}
    status, body = await harness.request("POST", f"users/{q('@ghost:hs.test')}/report", alice, json={"reason": "x"})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("POST", f"users/{q(bob.user_id)}/report", alice, json={})
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await harness.request("POST", f"users/{q(bob.user_id)}/report", alice, json={"reason": 1})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    reports = list(harness.hs.db.room_extras.reports())
    assert reports[0]["reported_user"] == bob.user_id and reports[0]["reason"] == "spam"
