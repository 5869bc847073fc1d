"""Room upgrades: what the replacement room carries over (bans, a space's children), and a user's
settings following them to it when they join (spec: client-server "Room Upgrades", "Server
behaviour": "When a user joins the new room, the server should automatically transfer/replicate some
of the user's personalized settings such as notifications, tags, etc.")."""

from __future__ import annotations

from typing import Any

from .conftest import Harness, User
from .rooms_helpers import create_room, join, put_state, q


async def tags_of(harness: Harness, user: User, room_id: str) -> dict[str, Any]:
    status, body = await harness.request("GET", f"user/{q(user.user_id)}/rooms/{q(room_id)}/tags", user)
    assert status == 200, body
    tags: dict[str, Any] = body["tags"]
    return tags


async def put_tag(harness: Harness, user: User, room_id: str, tag: str, body: dict[str, Any]) -> None:
    path = f"user/{q(user.user_id)}/rooms/{q(room_id)}/tags/{q(tag)}"
    status, answer = await harness.request("PUT", path, user, json=body)
    assert status == 200, answer


async def put_rule(harness: Harness, user: User, kind: str, rule_id: str, body: dict[str, Any]) -> None:
    status, answer = await harness.request("PUT", f"pushrules/global/{kind}/{q(rule_id)}", user, json=body)
    assert status == 200, answer


async def rules_of(harness: Harness, user: User, kind: str) -> dict[str, dict[str, Any]]:
    status, body = await harness.request("GET", "pushrules/", user)
    assert status == 200, body
    return {r["rule_id"]: r for r in body["global"][kind] if not r["default"]}


async def account_data(harness: Harness, user: User, data_type: str) -> Any:
    status, body = await harness.request("GET", f"user/{q(user.user_id)}/account_data/{data_type}", user)
    return body if status == 200 else None


async def upgrade(harness: Harness, user: User, room_id: str, version: str = "11") -> str:
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/upgrade", user, json={"new_version": version})
    assert status == 200, body
    new: str = body["replacement_room"]
    return new


async def test_joining_the_replacement_room_carries_tags_push_rules_and_direct_chat(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    old = await create_room(harness, alice, preset="public_chat", room_version="10")
    await join(harness, bob, old)
    # bob's settings of the old room: tags, a room rule, an override rule (Element's "mute"), and
    # the room as his direct chat with alice; a disabled rule and another room's rule stay behind
    await put_tag(harness, bob, old, "m.favourite", {"order": 0.25})
    await put_tag(harness, bob, old, "u.work", {})
    await put_rule(harness, bob, "room", old, {"actions": ["notify", {"set_tweak": "sound", "value": "default"}]})
    mute = {"actions": [], "conditions": [{"kind": "event_match", "key": "room_id", "pattern": old}]}
    await put_rule(harness, bob, "override", old, mute)
    off = {"actions": ["notify"], "conditions": [{"kind": "event_match", "key": "room_id", "pattern": old}]}
    await put_rule(harness, bob, "underride", "off", off)
    status, _ = await harness.request("PUT", "pushrules/global/underride/off/enabled", bob, json={"enabled": False})
    assert status == 200
    await put_rule(harness, bob, "room", "!elsewhere:hs.test", {"actions": []})
    direct = {alice.user_id: ["!other:hs.test", old]}
    status, _ = await harness.request("PUT", f"user/{q(bob.user_id)}/account_data/m.direct", bob, json=direct)
    assert status == 200
    # alice, who upgrades, joins the new room as its creator: her tags follow her at once
    await put_tag(harness, alice, old, "u.mine", {})
    new = await upgrade(harness, alice, old)
    assert await tags_of(harness, alice, new) == {"u.mine": {}}
    # bob has not joined yet: nothing of his has moved
    assert await tags_of(harness, bob, new) == {}
    assert new not in await rules_of(harness, bob, "room")
    await join(harness, bob, new)
    assert await tags_of(harness, bob, new) == {"m.favourite": {"order": 0.25}, "u.work": {}}
    assert await tags_of(harness, bob, old) == {"m.favourite": {"order": 0.25}, "u.work": {}}
    room_rules = await rules_of(harness, bob, "room")
    assert room_rules[new]["actions"] == room_rules[old]["actions"]
    assert "!elsewhere:hs.test" in room_rules
    overrides = await rules_of(harness, bob, "override")
    assert overrides[new]["conditions"] == [{"kind": "event_match", "key": "room_id", "pattern": new}]
    assert overrides[new]["actions"] == [] and overrides[old]["conditions"] == mute["conditions"]
    assert list(await rules_of(harness, bob, "underride")) == ["off"]  # disabled: not copied
    assert await account_data(harness, bob, "m.direct") == {alice.user_id: ["!other:hs.test", old, new]}
    # leaving and joining again does not duplicate anything, nor undo a change bob made since
    status, _ = await harness.request("DELETE", f"user/{q(bob.user_id)}/rooms/{q(new)}/tags/u.work", bob)
    assert status == 200
    await put_tag(harness, bob, new, "m.favourite", {"order": 0.5})
    status, _ = await harness.request("POST", f"rooms/{q(new)}/leave", bob, json={})
    assert status == 200
    await join(harness, bob, new)
    assert (await tags_of(harness, bob, new))["m.favourite"] == {"order": 0.5}
    assert await account_data(harness, bob, "m.direct") == {alice.user_id: ["!other:hs.test", old, new]}
    assert [r for r in await rules_of(harness, bob, "override") if r in (old, new)] == [new, old]


async def test_a_room_naming_a_predecessor_without_its_tombstone_gets_nothing(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    mallory = await harness.user("mallory")
    dm = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, dm)
    await put_tag(harness, bob, dm, "u.dm", {})
    direct = {alice.user_id: [dm]}
    status, _ = await harness.request("PUT", f"user/{q(bob.user_id)}/account_data/m.direct", bob, json=direct)
    assert status == 200
    # mallory's room claims to replace the direct chat, but the direct chat names no replacement
    fake = await create_room(harness, mallory, preset="public_chat", creation_content={"predecessor": {"room_id": dm}})
    await join(harness, bob, fake)
    assert await tags_of(harness, bob, fake) == {}
    assert await account_data(harness, bob, "m.direct") == direct


async def test_upgrade_carries_bans_and_a_spaces_children(harness: Harness) -> None:
    alice = await harness.user("alice")
    carol = await harness.user("carol")
    dave = await harness.user("dave")
    space = await create_room(
        harness, alice, preset="public_chat", room_version="10", creation_content={"type": "m.space"}
    )
    await join(harness, carol, space)
    status, body = await harness.request(
        "POST", f"rooms/{q(space)}/ban", alice, json={"user_id": carol.user_id, "reason": "spam"}
    )
    assert status == 200, body
    status, body = await harness.request("POST", f"rooms/{q(space)}/ban", alice, json={"user_id": dave.user_id})
    assert status == 200, body
    status, body = await harness.request("POST", f"rooms/{q(space)}/unban", alice, json={"user_id": dave.user_id})
    assert status == 200, body
    await put_state(harness, alice, space, "m.space.child", {"via": ["hs.test"]}, "!child:hs.test")
    await put_state(harness, alice, space, "m.space.child", {}, "!gone:hs.test")
    new = await upgrade(harness, alice, space)
    status, state = await harness.request("GET", f"rooms/{q(new)}/state", alice)
    assert status == 200, state
    by_key = {(e["type"], e["state_key"]): e["content"] for e in state}
    assert by_key[("m.room.member", carol.user_id)] == {"membership": "ban", "reason": "spam"}
    assert ("m.room.member", dave.user_id) not in by_key
    assert by_key[("m.space.child", "!child:hs.test")] == {"via": ["hs.test"]}
    assert ("m.space.child", "!gone:hs.test") not in by_key
    status, body = await harness.request("POST", f"rooms/{q(new)}/join", carol, json={})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("POST", f"rooms/{q(new)}/join", dave, json={})
    assert status == 200, body
