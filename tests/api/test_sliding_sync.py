"""Simplified sliding sync (MSC4186 as Synapse serves it; the requests Element X sends)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from .conftest import Harness, User, make_config, running
from .rooms_helpers import create_room, invite, join, put_state, q, send, send_event

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
ALL_STATE = [["*", "*"]]


async def ss(
    harness: Harness, user: User, body: dict[str, Any], pos: str | None = None, timeout: int = 0
) -> dict[str, Any]:
    query = f"?timeout={timeout}" + (f"&pos={pos}" if pos else "")
    status, resp = await harness.request("POST", PATH + query, user, json=body)
    assert status == 200, resp
    assert isinstance(resp, dict)
    return resp


def a_list(end: int = 19, **params: Any) -> dict[str, Any]:
    return {"ranges": [[0, end]], "timeline_limit": 1, "required_state": [], **params}


async def test_versions_advertises_simplified_sliding_sync(harness: Harness) -> None:
    status, body = await harness.request("GET", "/_matrix/client/versions")
    assert status == 200
    assert body["unstable_features"]["org.matrix.simplified_msc3575"] is True


async def test_list_orders_rooms_by_activity_and_counts_them(harness: Harness) -> None:
    alice = await harness.user("alice")
    rooms = [await create_room(harness, alice, name=f"room {i}") for i in range(4)]
    await send(harness, alice, rooms[1], "newest")
    resp = await ss(harness, alice, {"lists": {"all": a_list(end=1)}})
    listed = resp["lists"]["all"]
    assert listed["count"] == 4
    assert listed["ops"] == [{"op": "SYNC", "range": [0, 1], "room_ids": [rooms[1], rooms[3]]}]
    assert set(resp["rooms"]) == {rooms[1], rooms[3]}
    # the MSC's newer spelling of one range
    newer = await ss(harness, alice, {"conn_id": "newer", "lists": {"all": {"range": [0, 1], "timeline_limit": 1}}})
    assert newer["lists"]["all"]["ops"][0]["room_ids"] == [rooms[1], rooms[3]]
    room = resp["rooms"][rooms[1]]
    assert room["initial"] is True
    assert room["name"] == "room 1"
    assert [e["content"]["body"] for e in room["timeline"]] == ["newest"]
    assert room["limited"] is True and room["joined_count"] == 1 and room["invited_count"] == 0
    assert room["bump_stamp"] > resp["rooms"][rooms[3]]["bump_stamp"]
    assert "room_id" not in room["timeline"][0]
    assert isinstance(room["prev_batch"], str)


async def test_required_state_wildcards_me_and_lazy_members(harness: Harness) -> None:
    alice, bob, carol = await harness.user("alice"), await harness.user("bob"), await harness.user("carol")
    room = await create_room(harness, alice, preset="public_chat", topic="the topic")
    await join(harness, bob, room)
    await join(harness, carol, room)
    await send(harness, bob, room, "from bob")
    body = {
        "lists": {
            "all": a_list(
                required_state=[["m.room.topic", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"]],
                timeline_limit=1,
            )
        }
    }
    resp = await ss(harness, alice, body)
    state = resp["rooms"][room]["required_state"]
    keys = {(e["type"], e["state_key"]) for e in state}
    # the topic; bob, who sent the timeline's event; alice herself ($ME); not carol
    assert keys == {("m.room.topic", ""), ("m.room.member", bob.user_id), ("m.room.member", alice.user_id)}
    pos = resp["pos"]
    # bob speaks again: his member event was sent already; carol speaks: hers is new
    await send(harness, bob, room, "again")
    await send(harness, carol, room, "hi")
    resp = await ss(
        harness, alice, body | {"lists": {"all": a_list(**body["lists"]["all"] | {"timeline_limit": 5})}}, pos
    )
    entry = resp["rooms"][room]
    members = {e["state_key"] for e in entry.get("required_state", []) if e["type"] == "m.room.member"}
    assert members == {carol.user_id}
    # a room subscription with every state event
    resp = await ss(harness, alice, {"room_subscriptions": {room: {"required_state": ALL_STATE, "timeline_limit": 0}}})
    types = {e["type"] for e in resp["rooms"][room]["required_state"]}
    assert {"m.room.create", "m.room.join_rules", "m.room.topic", "m.room.power_levels"} <= types
    assert "timeline" not in resp["rooms"][room]


async def test_filters(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    plain = await create_room(harness, alice)
    space = await create_room(harness, alice, creation_content={"type": "m.space"})
    encrypted = await create_room(
        harness,
        alice,
        initial_state=[
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
        ],
    )
    dm = await create_room(harness, bob, is_direct=True, invite=[alice.user_id])
    status, _ = await harness.request(
        "PUT", f"user/{q(alice.user_id)}/account_data/m.direct", alice, json={bob.user_id: [dm]}
    )
    assert status == 200

    async def rooms_of(filters: dict[str, Any]) -> set[str]:
        resp = await ss(harness, alice, {"lists": {"l": a_list(filters=filters)}})
        return set(resp["lists"]["l"]["ops"][0]["room_ids"])

    assert await rooms_of({}) == {plain, space, encrypted, dm}
    assert await rooms_of({"is_invite": True}) == {dm}
    assert await rooms_of({"is_dm": True}) == {dm}
    assert await rooms_of({"is_dm": False}) == {plain, space, encrypted}
    assert await rooms_of({"is_encrypted": True}) == {encrypted}
    assert await rooms_of({"room_types": ["m.space"]}) == {space}
    assert await rooms_of({"not_room_types": ["m.space"], "is_invite": False}) == {plain, encrypted}
    assert await rooms_of({"room_types": [None]}) == {plain, encrypted, dm}
    resp = await ss(harness, alice, {"lists": {"l": a_list(filters={"is_invite": True})}})
    invited = resp["rooms"][dm]
    assert invited["initial"] is True and "timeline" not in invited
    assert any(e["type"] == "m.room.member" and e["state_key"] == alice.user_id for e in invited["invite_state"])


async def test_incremental_sends_only_changes_and_unsent_rooms_come_back(harness: Harness) -> None:
    alice = await harness.user("alice")
    a = await create_room(harness, alice, name="a")
    b = await create_room(harness, alice, name="b")
    body = {"lists": {"top": a_list(end=0, timeline_limit=3)}}
    resp = await ss(harness, alice, body)
    assert set(resp["rooms"]) == {b}
    pos = resp["pos"]
    resp = await ss(harness, alice, body, pos)
    assert resp["rooms"] == {}
    # a message in b: only the new event, not the room's name again
    await send(harness, alice, b, "one")
    resp = await ss(harness, alice, body, resp["pos"])
    entry = resp["rooms"][b]
    assert [e["content"]["body"] for e in entry["timeline"]] == ["one"]
    assert "initial" not in entry and "name" not in entry and entry["num_live"] == 1 and entry["limited"] is False
    # a moves to the top and is new to the connection
    await send(harness, alice, a, "to a")
    resp = await ss(harness, alice, body, resp["pos"])
    assert set(resp["rooms"]) == {a} and resp["rooms"][a]["initial"] is True
    pos = resp["pos"]
    # b changes while outside the range; when it comes back, the change is sent (not the whole room)
    await send(harness, alice, b, "while away")
    await send(harness, alice, a, "a again")
    resp = await ss(harness, alice, body, pos)
    pos = resp["pos"]
    await send(harness, alice, b, "back")
    resp = await ss(harness, alice, body, pos)
    entry = resp["rooms"][b]
    assert "initial" not in entry
    assert [e["content"]["body"] for e in entry["timeline"]] == ["while away", "back"]


async def test_config_merging_and_growing_timeline(harness: Harness) -> None:
    alice = await harness.user("alice")
    room = await create_room(harness, alice, topic="t")
    for i in range(5):
        await send(harness, alice, room, f"m{i}")
    body: dict[str, Any] = {
        "lists": {
            "one": a_list(timeline_limit=1, required_state=[["m.room.topic", ""]]),
            "two": a_list(timeline_limit=2, required_state=[["m.room.create", ""]]),
        }
    }
    resp = await ss(harness, alice, body)
    entry = resp["rooms"][room]
    assert len(entry["timeline"]) == 2  # the larger limit
    assert {e["type"] for e in entry["required_state"]} == {"m.room.topic", "m.room.create"}
    # a subscription asks for more: the expanded timeline and the newly matched state come
    sub = {room: {"timeline_limit": 4, "required_state": [["m.room.join_rules", ""]]}}
    resp = await ss(harness, alice, body | {"room_subscriptions": sub}, resp["pos"])
    entry = resp["rooms"][room]
    assert entry["unstable_expanded_timeline"] is True
    assert [e["content"]["body"] for e in entry["timeline"]] == ["m1", "m2", "m3", "m4"]
    assert {e["type"] for e in entry["required_state"]} == {"m.room.join_rules"}


async def test_unknown_pos_and_bad_bodies(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, resp = await harness.request("POST", PATH + "?pos=12345", alice, json={})
    assert status == 400 and resp["errcode"] == "M_UNKNOWN_POS"
    status, resp = await harness.request("POST", PATH + "?pos=nonsense", alice, json={})
    assert status == 400 and resp["errcode"] == "M_UNKNOWN_POS"
    bad = [
        {"lists": {"l": {"ranges": [[5, 1]], "timeline_limit": 1}}},
        {"lists": {"l": {"ranges": [[0, -1]]}}},
        {"lists": {"l": {"timeline_limit": "1"}}},
        {"lists": {"l": {"required_state": [["m.room.name"]]}}},
        {"room_subscriptions": {"!a:b": {"timeline_limit": 5000}}},
        {"extensions": {"to_device": {"enabled": True, "since": "abc"}}},
        {"conn_id": 3},
    ]
    for body in bad:
        status, resp = await harness.request("POST", PATH, alice, json=body)
        assert status == 400, body
        assert resp["errcode"] == "M_BAD_JSON", body
    status, resp = await harness.request("POST", PATH, None, json={})
    assert status == 401


async def test_retry_with_same_pos_gets_same_answer_and_only_two_positions_live(harness: Harness) -> None:
    alice = await harness.user("alice")
    room = await create_room(harness, alice)
    body = {"lists": {"all": a_list()}}
    first = await ss(harness, alice, body)
    await send(harness, alice, room, "hello")
    second = await ss(harness, alice, body, first["pos"])
    assert second["rooms"][room]["timeline"][0]["content"]["body"] == "hello"
    retried = await ss(harness, alice, body, first["pos"])  # the answer was lost: ask again
    assert retried == second
    third = await ss(harness, alice, body, second["pos"])
    assert third["rooms"] == {}
    # the connection moved on: the first position is gone
    status, resp = await harness.request("POST", PATH + f"?pos={first['pos']}", alice, json=body)
    assert status == 400 and resp["errcode"] == "M_UNKNOWN_POS"


async def test_connections_are_separate(harness: Harness) -> None:
    alice = await harness.user("alice")
    await create_room(harness, alice)
    one = await ss(harness, alice, {"conn_id": "room-list", "lists": {"all": a_list()}})
    two = await ss(harness, alice, {"conn_id": "encryption", "extensions": {"e2ee": {"enabled": True}}})
    status, resp = await harness.request("POST", PATH + f"?pos={one['pos']}", alice, json={"conn_id": "other"})
    assert status == 400 and resp["errcode"] == "M_UNKNOWN_POS"
    assert two["rooms"] == {}
    again = await ss(harness, alice, {"conn_id": "room-list", "lists": {"all": a_list()}}, one["pos"])
    assert again["rooms"] == {}


async def test_extensions(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    room = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, room)
    event = await send(harness, bob, room, "read me")
    status, _ = await harness.request("POST", f"rooms/{q(room)}/receipt/m.read/{q(event)}", bob, json={})
    assert status == 200
    status, _ = await harness.request("PUT", f"user/{q(alice.user_id)}/account_data/org.example", alice, json={"a": 1})
    assert status == 200
    status, _ = await harness.request(
        "PUT", f"user/{q(alice.user_id)}/rooms/{q(room)}/account_data/org.example.room", alice, json={"b": 2}
    )
    assert status == 200
    status, _ = await harness.request(
        "PUT", f"rooms/{q(room)}/typing/{q(bob.user_id)}", bob, json={"typing": True, "timeout": 30000}
    )
    assert status == 200
    status, _ = await harness.request(
        "PUT", "sendToDevice/m.test/t1", bob, json={"messages": {alice.user_id: {alice.device_id: {"x": 1}}}}
    )
    assert status == 200
    extensions = {
        "to_device": {"enabled": True},
        "e2ee": {"enabled": True},
        "account_data": {"enabled": True},
        "receipts": {"enabled": True},
        "typing": {"enabled": True},
    }
    body = {"lists": {"all": a_list()}, "extensions": extensions}
    resp = await ss(harness, alice, body)
    ext = resp["extensions"]
    assert [e["content"] for e in ext["to_device"]["events"]] == [{"x": 1}]
    assert "device_one_time_keys_count" in ext["e2ee"] and "device_lists" not in ext["e2ee"]
    global_types = {e["type"] for e in ext["account_data"]["global"]}
    assert {"org.example", "m.push_rules"} <= global_types
    assert ext["account_data"]["rooms"][room] == [{"type": "org.example.room", "content": {"b": 2}}]
    assert ext["receipts"]["rooms"][room]["content"][event]["m.read"][bob.user_id]["ts"] > 0
    assert ext["typing"]["rooms"][room]["content"]["user_ids"] == [bob.user_id]
    # incremental: the acknowledged to-device message is gone, nothing repeated
    extensions["to_device"] = {"enabled": True, "since": ext["to_device"]["next_batch"]}
    resp = await ss(harness, alice, body, resp["pos"])
    ext = resp["extensions"]
    assert ext["to_device"]["events"] == []
    assert ext["account_data"] == {"global": [], "rooms": {}}
    assert ext["receipts"]["rooms"] == {} and ext["typing"]["rooms"] == {}
    assert ext["e2ee"]["device_lists"] == {"changed": [], "left": []}
    # a new receipt comes in the next answer, alone
    later = await send(harness, alice, room, "read this too")
    status, _ = await harness.request("POST", f"rooms/{q(room)}/receipt/m.read/{q(later)}", bob, json={})
    assert status == 200
    extensions["to_device"] = {"enabled": True, "since": ext["to_device"]["next_batch"]}
    resp = await ss(harness, alice, body, resp["pos"])
    receipts = resp["extensions"]["receipts"]["rooms"][room]["content"]
    assert list(receipts) == [later] and list(receipts[later]["m.read"]) == [bob.user_id]
    # scoping: extensions limited to a list that does not exist carry no rooms
    scoped = {"receipts": {"enabled": True, "lists": ["nope"], "rooms": []}}
    resp = await ss(harness, alice, {"lists": {"all": a_list()}, "extensions": scoped})
    assert resp["extensions"]["receipts"]["rooms"] == {}


async def test_long_poll_wakes_for_to_device_on_the_encryption_connection(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    body = {"conn_id": "encryption", "extensions": {"to_device": {"enabled": True}, "e2ee": {"enabled": True}}}
    resp = await ss(harness, alice, body)
    poll = asyncio.create_task(ss(harness, alice, body, resp["pos"], timeout=10000))
    await asyncio.sleep(0.05)
    assert not poll.done()
    status, _ = await harness.request(
        "PUT", "sendToDevice/m.test/t2", bob, json={"messages": {alice.user_id: {alice.device_id: {"y": 2}}}}
    )
    assert status == 200
    woken = await asyncio.wait_for(poll, 5)
    assert [e["content"] for e in woken["extensions"]["to_device"]["events"]] == [{"y": 2}]


async def test_long_poll_wakes_for_a_message_and_times_out_empty(harness: Harness) -> None:
    alice = await harness.user("alice")
    room = await create_room(harness, alice)
    body = {"conn_id": "room-list", "lists": {"all": a_list()}}
    resp = await ss(harness, alice, body)
    empty = await ss(harness, alice, body, resp["pos"], timeout=50)
    assert empty["rooms"] == {} and empty["lists"]["all"]["count"] == 1
    poll = asyncio.create_task(ss(harness, alice, body, empty["pos"], timeout=10000))
    await asyncio.sleep(0.05)
    await send_event(harness, alice, room, "m.room.message", {"msgtype": "m.text", "body": "wake"})
    woken = await asyncio.wait_for(poll, 5)
    assert woken["rooms"][room]["timeline"][0]["content"]["body"] == "wake"


async def test_restart_between_two_requests_continues_from_pos(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    body = {"conn_id": "room-list", "lists": {"all": a_list(required_state=[["m.room.member", "$LAZY"]])}}
    async with running(config) as harness:
        alice = await harness.user("alice")
        room = await create_room(harness, alice, name="kept")
        resp = await ss(harness, alice, body)
        assert resp["rooms"][room]["initial"] is True
        pos = resp["pos"]
    async with running(config) as harness:
        resp = await ss(harness, alice, body, pos)
        assert resp["rooms"] == {}  # nothing new: the connection's state survived
        await send(harness, alice, room, "after restart")
        resp = await ss(harness, alice, body, resp["pos"])
        entry = resp["rooms"][room]
        assert "initial" not in entry
        assert [e["content"]["body"] for e in entry["timeline"]] == ["after restart"]
        assert "required_state" not in entry  # alice's member event was sent before the restart


async def test_invites_leaves_and_bump_types(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    quiet = await create_room(harness, alice)
    busy = await create_room(harness, alice)
    await send(harness, alice, busy, "message")
    # a state change does not bump: the busy room stays on top
    await put_state(harness, alice, quiet, "m.room.topic", {"topic": "new topic"})
    resp = await ss(harness, alice, {"lists": {"all": a_list()}})
    assert resp["lists"]["all"]["ops"][0]["room_ids"] == [busy, quiet]
    # an invite comes first for bob; after he leaves on his own it is not listed
    await invite(harness, alice, busy, bob)
    resp = await ss(harness, bob, {"lists": {"all": a_list()}})
    assert resp["lists"]["all"]["ops"][0]["room_ids"] == [busy]
    await join(harness, bob, busy)
    status, _ = await harness.request("POST", f"rooms/{q(busy)}/leave", bob, json={})
    assert status == 200
    resp = await ss(harness, bob, {"lists": {"all": a_list()}})
    assert resp["lists"]["all"]["count"] == 0


async def test_store_upgrade_builds_the_activity_index(tmp_path: Path) -> None:
    """A store from before the activity index (schema 4) gets it at the next start, in the same order."""
    from storage import engine
    from storage.codec import u64
    from storage.sliding_sync import ROOM_BUMP, USER_ACTIVITY, USER_ACTIVITY_AT

    config = make_config(tmp_path)
    body = {"lists": {"all": a_list()}}
    async with running(config) as harness:
        alice, bob = await harness.user("alice"), await harness.user("bob")
        rooms = [await create_room(harness, alice, name=f"r{i}") for i in range(3)]
        await send(harness, alice, rooms[0], "latest")
        await invite(harness, alice, rooms[1], bob)
        before_alice = (await ss(harness, alice, body))["lists"]
        before_bob = (await ss(harness, bob, body))["lists"]
        store = harness.hs.db.store
        version = engine.MIGRATIONS.index("storage.sliding_sync:backfill_room_activity") + 1
        with store.db.write_batch() as wb:
            for table in (ROOM_BUMP, USER_ACTIVITY, USER_ACTIVITY_AT):
                for k in store.keys(table):
                    wb.delete(table.prefix + k)
            wb.put(engine.META.prefix + b"schema_version", u64(version))
    async with running(config) as harness:
        assert harness.hs.db.store.schema_version == engine.SCHEMA_VERSION
        assert (await ss(harness, alice, body))["lists"] == before_alice
        assert (await ss(harness, bob, body))["lists"] == before_bob
        assert before_alice["all"]["ops"][0]["room_ids"][0] == rooms[0]


async def test_long_poll_wakes_for_account_data_and_typing(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    room = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, room)
    body = {"lists": {"all": a_list()}, "extensions": {"account_data": {"enabled": True}, "typing": {"enabled": True}}}
    pos = (await ss(harness, alice, body))["pos"]
    poll = asyncio.create_task(ss(harness, alice, body, pos, timeout=10000))
    await asyncio.sleep(0.05)
    assert not poll.done()
    status, _ = await harness.request(
        "PUT", f"user/{q(alice.user_id)}/account_data/org.example.x", alice, json={"v": 1}
    )
    assert status == 200
    woken = await asyncio.wait_for(poll, 5)
    assert woken["extensions"]["account_data"]["global"] == [{"type": "org.example.x", "content": {"v": 1}}]
    poll = asyncio.create_task(ss(harness, alice, body, woken["pos"], timeout=10000))
    await asyncio.sleep(0.05)
    assert not poll.done()
    status, _ = await harness.request(
        "PUT", f"rooms/{q(room)}/typing/{q(bob.user_id)}", bob, json={"typing": True, "timeout": 30000}
    )
    assert status == 200
    woken = await asyncio.wait_for(poll, 5)
    assert woken["extensions"]["typing"]["rooms"][room]["content"]["user_ids"] == [bob.user_id]


async def test_the_connection_forgets_rooms_left_for_good(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    rooms = [await create_room(harness, alice, preset="public_chat") for _ in range(3)]
    for room in rooms:
        await join(harness, bob, room)
    body = {"lists": {"all": a_list()}, "extensions": {"receipts": {"enabled": True}}}
    first = await ss(harness, bob, body)
    assert set(first["rooms"]) == set(rooms)

    def remembered(pos: str) -> set[str]:
        stored = harness.hs.sliding_sync.connections.position(bob.user_id, bob.device_id, "", int(pos))
        assert stored is not None
        return set(stored["rooms"]) | set(stored["receipts"])

    # bob leaves one room himself and is kicked from another
    status, _ = await harness.request("POST", f"rooms/{q(rooms[0])}/leave", bob, json={})
    assert status == 200
    status, _ = await harness.request("POST", f"rooms/{q(rooms[1])}/kick", alice, json={"user_id": bob.user_id})
    assert status == 200
    second = await ss(harness, bob, body, first["pos"])
    for room in rooms[:2]:  # each leave is sent once
        assert second["rooms"][room]["timeline"][-1]["content"]["membership"] == "leave"
    third = await ss(harness, bob, body, second["pos"])
    assert third["lists"]["all"]["ops"][0]["room_ids"] == [rooms[1], rooms[2]]  # the kick stays listed
    assert remembered(third["pos"]) == {rooms[1], rooms[2]}  # the room he left is forgotten
    # forgetting the other one drops it too
    status, _ = await harness.request("POST", f"rooms/{q(rooms[1])}/forget", bob, json={})
    assert status == 200
    fourth = await ss(harness, bob, body, third["pos"])
    assert fourth["lists"]["all"]["ops"][0]["room_ids"] == [rooms[2]]
    assert remembered(fourth["pos"]) == {rooms[2]}
    # coming back to the room he left: sent whole, as a new room
    await join(harness, bob, rooms[0])
    fifth = await ss(harness, bob, body, fourth["pos"])
    assert fifth["rooms"][rooms[0]]["initial"] is True
    assert fifth["rooms"][rooms[0]]["timeline"][-1]["content"]["membership"] == "join"
