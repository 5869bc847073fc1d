"""GET /messages, /context, /event, /members, /joined_members, /joined_rooms, /timestamp_to_event."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from homeserver.rooms.tokens import parse_position, stream_token

from .conftest import Harness
from .rooms_helpers import create_room, join, messages, q, send, send_event

pytestmark = pytest.mark.asyncio


async def _room_with_messages(harness: Harness, n: int = 7):  # type: ignore[no-untyped-def]
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice)
    ids = [await send(harness, alice, room_id, f"m{i}") for i in range(n)]
    return alice, room_id, ids


async def test_paginate_backwards_then_forwards(harness: Harness) -> None:
    alice, room_id, _ = await _room_with_messages(harness)
    status, page1 = await messages(harness, alice, room_id, "dir=b&limit=3")
    assert status == 200
    assert [e["content"]["body"] for e in page1["chunk"]] == ["m6", "m5", "m4"]
    assert page1["start"].startswith("t") and "end" in page1
    status, page2 = await messages(harness, alice, room_id, f"dir=b&limit=3&from={page1['end']}")
    assert [e["content"]["body"] for e in page2["chunk"]] == ["m3", "m2", "m1"]
    assert page2["start"] == page1["end"]
    # back to the start of the room: the create event comes last and `end` disappears
    status, rest = await messages(harness, alice, room_id, f"dir=b&limit=100&from={page2['end']}")
    assert rest["chunk"][-1]["type"] == "m.room.create"
    assert "end" not in rest
    # forwards from the page boundary: the events in chronological order
    status, fwd = await messages(harness, alice, room_id, f"dir=f&limit=3&from={page2['end']}")
    assert [e["content"]["body"] for e in fwd["chunk"]] == ["m1", "m2", "m3"]
    # `to` stops the page
    status, bounded = await messages(harness, alice, room_id, f"dir=b&from={page1['start']}&to={page1['end']}")
    assert [e["content"]["body"] for e in bounded["chunk"]] == ["m6", "m5", "m4"]
    # from the start of the room forwards (no from)
    status, first = await messages(harness, alice, room_id, "dir=f&limit=2")
    assert [e["type"] for e in first["chunk"]] == ["m.room.create", "m.room.member"]


async def test_sync_tokens_are_accepted(harness: Harness) -> None:
    alice, room_id, ids = await _room_with_messages(harness, 3)
    # a sync next_batch is the stream position: everything up to now
    short = harness.hs.db.ids.event(ids[-1])
    assert short is not None
    meta = harness.hs.db.events.get_meta(short)
    assert meta is not None
    token = stream_token(meta.stream)
    status, page = await messages(harness, alice, room_id, f"dir=b&limit=2&from={token}")
    assert [e["content"]["body"] for e in page["chunk"]] == ["m2", "m1"]
    # ... and a prev_batch (the position before an event) excludes it
    status, page = await messages(harness, alice, room_id, f"dir=b&limit=1&from={stream_token(meta.stream - 1)}")
    assert [e["content"]["body"] for e in page["chunk"]] == ["m1"]
    # with extra sync parts after an underscore
    status, page = await messages(harness, alice, room_id, f"dir=b&limit=1&from={token}_7_9")
    assert status == 200 and page["chunk"][0]["content"]["body"] == "m2"
    assert parse_position("t5") == parse_position("s5")


async def test_messages_errors(harness: Harness) -> None:
    alice, room_id, _ = await _room_with_messages(harness, 1)
    bob = await harness.user("bob")
    for query, errcode in [
        ("", "M_MISSING_PARAM"),
        ("dir=x", "M_INVALID_PARAM"),
        ("dir=b&from=garbage", "M_INVALID_PARAM"),
        ("dir=b&from=s-5", "M_INVALID_PARAM"),
        ("dir=b&to=t", "M_INVALID_PARAM"),
        ("dir=b&limit=-1", "M_INVALID_PARAM"),
        ("dir=b&limit=ten", "M_INVALID_PARAM"),
        ("dir=b&filter=notjson", "M_INVALID_PARAM"),
        ("dir=b&filter=" + quote(json.dumps({"types": "m.room.message"})), "M_BAD_JSON"),
    ]:
        status, body = await messages(harness, alice, room_id, query)
        assert status == 400 and body["errcode"] == errcode, (query, body)
    status, body = await messages(harness, bob, room_id)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await messages(harness, alice, "!nope:hs.test")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_messages_filter(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, room_id)
    await send(harness, alice, room_id, "from alice")
    await send(harness, bob, room_id, "from bob")
    await send(harness, bob, room_id, "image", msgtype="m.image", url="mxc://hs.test/abc")
    await send_event(harness, alice, room_id, "org.example.ping", {})

    async def with_filter(f: dict) -> list[str]:  # type: ignore[type-arg]
        status, body = await messages(harness, alice, room_id, "dir=b&limit=50&filter=" + quote(json.dumps(f)))
        assert status == 200, body
        return [e["content"].get("body", e["type"]) for e in body["chunk"]]

    assert await with_filter({"types": ["m.room.message"], "senders": [bob.user_id]}) == ["image", "from bob"]
    assert await with_filter({"types": ["m.room.message"], "not_senders": [bob.user_id]}) == ["from alice"]
    assert await with_filter({"types": ["org.example.*"]}) == ["org.example.ping"]
    assert "org.example.ping" not in await with_filter({"not_types": ["org.*"]})
    assert await with_filter({"contains_url": True}) == ["image"]
    assert "image" not in await with_filter({"contains_url": False, "types": ["m.room.message"]})
    assert await with_filter({"not_rooms": [room_id]}) == []
    # lazy-loading members: the senders' member events in `state`
    _status, body = await messages(
        harness,
        alice,
        room_id,
        "dir=b&limit=2&filter=" + quote(json.dumps({"lazy_load_members": True, "types": ["m.room.message"]})),
    )
    assert {e["state_key"] for e in body["state"]} == {bob.user_id}
    assert all(e["type"] == "m.room.member" for e in body["state"])


async def test_context(harness: Harness) -> None:
    alice, room_id, ids = await _room_with_messages(harness, 7)
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/context/{q(ids[3])}?limit=4", alice)
    assert status == 200
    assert body["event"]["event_id"] == ids[3]
    assert [e["content"]["body"] for e in body["events_before"]] == ["m2", "m1"]
    assert [e["content"]["body"] for e in body["events_after"]] == ["m4", "m5"]
    assert {e["type"] for e in body["state"]} >= {"m.room.create", "m.room.member", "m.room.power_levels"}
    # the tokens continue from the edges
    status, before = await messages(harness, alice, room_id, f"dir=b&limit=1&from={body['start']}")
    assert before["chunk"][0]["content"]["body"] == "m0"
    status, after = await messages(harness, alice, room_id, f"dir=f&limit=1&from={body['end']}")
    assert after["chunk"][0]["content"]["body"] == "m6"
    # limit 0: just the event
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/context/{q(ids[3])}?limit=0", alice)
    assert status == 200 and body["events_before"] == [] and body["events_after"] == []
    # filtered and lazy-loaded
    flt = quote(json.dumps({"lazy_load_members": True, "types": ["m.room.message"]}))
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/context/{q(ids[0])}?filter={flt}", alice)
    assert all(e["type"] == "m.room.message" for e in body["events_before"] + body["events_after"])
    assert [e["state_key"] for e in body["state"]] == [alice.user_id]
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/context/{q('$nope')}", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    bob = await harness.user("bob")
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/context/{q(ids[0])}", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_event(harness: Harness) -> None:
    alice, room_id, ids = await _room_with_messages(harness, 1)
    bob = await harness.user("bob")
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/event/{q(ids[0])}", alice)
    assert status == 200
    assert body["event_id"] == ids[0] and body["room_id"] == room_id and body["sender"] == alice.user_id
    assert body["content"] == {"msgtype": "m.text", "body": "m0"} and body["unsigned"]["age"] >= 0
    assert body["unsigned"]["membership"] == "join"
    assert "hashes" not in body and "signatures" not in body and "auth_events" not in body
    for user, path in [
        (bob, f"rooms/{q(room_id)}/event/{q(ids[0])}"),
        (alice, f"rooms/{q(room_id)}/event/{q('$missing')}"),
        (alice, f"rooms/{q(room_id)}/event/not-an-event"),
    ]:
        status, body = await harness.request("GET", path, user)
        assert status == 404 and body["errcode"] == "M_NOT_FOUND", path
    other = await create_room(harness, alice)
    status, body = await harness.request("GET", f"rooms/{q(other)}/event/{q(ids[0])}", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_members(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    carol = await harness.user("carol")
    room_id = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, room_id)
    short = harness.hs.db.ids.event(
        (await harness.request("GET", f"rooms/{q(room_id)}/messages?dir=b&limit=1", alice))[1]["chunk"][0]["event_id"]
    )
    assert short is not None
    meta = harness.hs.db.events.get_meta(short)
    assert meta is not None
    at_bob_join = stream_token(meta.stream)
    status, _ = await harness.request("POST", f"rooms/{q(room_id)}/invite", alice, json={"user_id": carol.user_id})
    status, _ = await harness.request("POST", f"rooms/{q(room_id)}/leave", bob)

    async def members(query: str = "") -> dict[str, str]:
        status, body = await harness.request("GET", f"rooms/{q(room_id)}/members?{query}", alice)
        assert status == 200, body
        return {e["state_key"]: e["content"]["membership"] for e in body["chunk"]}

    assert await members() == {alice.user_id: "join", bob.user_id: "leave", carol.user_id: "invite"}
    assert await members("membership=join") == {alice.user_id: "join"}
    assert await members("not_membership=leave") == {alice.user_id: "join", carol.user_id: "invite"}
    # both: membership is `invite` OR is not `join`
    assert await members("membership=invite&not_membership=join") == {
        bob.user_id: "leave",
        carol.user_id: "invite",
    }
    assert await members(f"at={at_bob_join}") == {alice.user_id: "join", bob.user_id: "join"}
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/members?membership=friend", alice)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/members?at=zzz", alice)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    stranger = await harness.user("dave")
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/members", stranger)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # bob left: he sees the members as they were when he left
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/members", bob)
    assert status == 200
    assert {e["state_key"]: e["content"]["membership"] for e in body["chunk"]} == {
        alice.user_id: "join",
        bob.user_id: "leave",
        carol.user_id: "invite",
    }
    # ... and nothing that happened after
    status, _ = await harness.request("POST", f"rooms/{q(room_id)}/kick", alice, json={"user_id": carol.user_id})
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/members", bob)
    assert {e["state_key"]: e["content"]["membership"] for e in body["chunk"]}[carol.user_id] == "invite"


async def test_joined_members_and_rooms(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, room_id)
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/joined_members", bob)
    assert status == 200 and set(body["joined"]) == {alice.user_id, bob.user_id}
    assert body["joined"][alice.user_id] == {"display_name": "alice"}
    status, body = await harness.request("GET", "joined_rooms", bob)
    assert status == 200 and body == {"joined_rooms": [room_id]}
    status, _ = await harness.request("POST", f"rooms/{q(room_id)}/leave", bob)
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/joined_members", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("GET", f"rooms/{q('!x:hs.test')}/joined_members", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", "joined_rooms", None)
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"


async def test_timestamp_to_event(harness: Harness) -> None:
    alice, room_id, ids = await _room_with_messages(harness, 3)
    events = []
    for eid in ids:
        status, ev = await harness.request("GET", f"rooms/{q(room_id)}/event/{q(eid)}", alice)
        events.append(ev)
    base = f"/_matrix/client/v1/rooms/{q(room_id)}/timestamp_to_event"
    ts = events[1]["origin_server_ts"]
    status, body = await harness.request("GET", f"{base}?ts={ts}&dir=f", alice)
    assert status == 200 and body["origin_server_ts"] >= ts
    assert body["event_id"] in {e["event_id"] for e in events if e["origin_server_ts"] == body["origin_server_ts"]}
    status, body = await harness.request("GET", f"{base}?ts={ts}&dir=b", alice)
    assert status == 200 and body["origin_server_ts"] <= ts
    status, body = await harness.request("GET", f"{base}?ts={events[-1]['origin_server_ts'] + 60_000}&dir=f", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"{base}?ts=0&dir=b", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"{base}?dir=b", alice)
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await harness.request("GET", f"{base}?ts=1&dir=sideways", alice)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    bob = await harness.user("bob")
    status, body = await harness.request("GET", f"{base}?ts={ts}&dir=f", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
