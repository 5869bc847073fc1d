"""POST /createRoom and the membership endpoints."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import Harness, User
from .rooms_helpers import create_room, invite, join, q, send

pytestmark = pytest.mark.asyncio


async def state_of(harness: Harness, user, room_id: str) -> dict[tuple[str, str], dict]:  # type: ignore[no-untyped-def]
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/state", user)
    assert status == 200, body
    return {(e["type"], e["state_key"]): e for e in body}


# -- createRoom ------------------------------------------------------------------------------------


async def test_create_room_defaults(harness: Harness) -> None:
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice)
    state = await state_of(harness, alice, room_id)
    create = state[("m.room.create", "")]
    assert create["content"]["room_version"] == harness.hs.config.default_room_version
    assert create["sender"] == alice.user_id
    assert state[("m.room.member", alice.user_id)]["content"]["membership"] == "join"
    # private_chat is the preset of a private room
    assert state[("m.room.join_rules", "")]["content"] == {"join_rule": "invite"}
    assert state[("m.room.history_visibility", "")]["content"] == {"history_visibility": "shared"}
    assert state[("m.room.guest_access", "")]["content"] == {"guest_access": "can_join"}
    assert state[("m.room.power_levels", "")]["content"]["users"] == {alice.user_id: 100}
    status, body = await harness.request("GET", "joined_rooms", alice)
    assert status == 200 and body == {"joined_rooms": [room_id]}


async def test_create_room_with_everything(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(
        harness,
        alice,
        preset="public_chat",
        name="The room",
        topic="About things",
        invite=[bob.user_id],
        is_direct=True,
        room_alias_name="theroom",
        visibility="public",
        room_version="10",
        creation_content={"m.federate": False},
        initial_state=[
            {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}},
            {"type": "org.example.custom", "state_key": "k", "content": {"x": 1}},
        ],
        power_level_content_override={"events_default": 10, "users": {bob.user_id: 50}},
    )
    state = await state_of(harness, alice, room_id)
    assert state[("m.room.create", "")]["content"]["m.federate"] is False
    assert state[("m.room.create", "")]["content"]["room_version"] == "10"
    assert state[("m.room.join_rules", "")]["content"] == {"join_rule": "public"}
    assert state[("m.room.guest_access", "")]["content"] == {"guest_access": "forbidden"}
    # initial_state takes precedence over the preset
    assert state[("m.room.history_visibility", "")]["content"] == {"history_visibility": "world_readable"}
    assert state[("org.example.custom", "k")]["content"] == {"x": 1}
    assert state[("m.room.name", "")]["content"] == {"name": "The room"}
    assert state[("m.room.topic", "")]["content"]["topic"] == "About things"
    assert state[("m.room.canonical_alias", "")]["content"] == {"alias": "#theroom:hs.test"}
    pl = state[("m.room.power_levels", "")]["content"]
    assert pl["events_default"] == 10 and pl["users"] == {alice.user_id: 100, bob.user_id: 50}
    member = state[("m.room.member", bob.user_id)]
    assert member["content"]["membership"] == "invite" and member["content"]["is_direct"] is True
    # the alias resolves and the room is in the directory
    status, body = await harness.request("GET", f"directory/room/{q('#theroom:hs.test')}")
    assert status == 200 and body["room_id"] == room_id and body["servers"] == ["hs.test"]
    status, body = await harness.request("GET", f"directory/list/room/{q(room_id)}")
    assert status == 200 and body == {"visibility": "public"}


async def test_create_room_trusted_private_chat_gives_invitees_power(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, preset="trusted_private_chat", invite=[bob.user_id], room_version="11")
    state = await state_of(harness, alice, room_id)
    assert state[("m.room.power_levels", "")]["content"]["users"][bob.user_id] == 100


async def test_create_room_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    await create_room(harness, alice, room_alias_name="taken")
    cases = [
        ({"room_version": "999"}, 400, "M_UNSUPPORTED_ROOM_VERSION"),
        ({"room_alias_name": "taken"}, 400, "M_ROOM_IN_USE"),
        ({"room_alias_name": "bad:alias"}, 400, "M_INVALID_PARAM"),
        ({"visibility": "everyone"}, 400, "M_BAD_JSON"),
        ({"preset": "party"}, 400, "M_BAD_JSON"),
        ({"name": 5}, 400, "M_BAD_JSON"),
        ({"invite": ["not-a-user"]}, 400, "M_INVALID_PARAM"),
        ({"invite": ["@carol:elsewhere.test"]}, 403, "M_FORBIDDEN"),
        ({"initial_state": [{"type": "m.room.create", "content": {}}]}, 400, "M_INVALID_ROOM_STATE"),
        ({"power_level_content_override": {"users": {alice.user_id: 0}, "state_default": 50}}, 200, None),
    ]
    for body, status, errcode in cases:
        got, resp = await harness.request("POST", "createRoom", alice, json=body)
        assert got == status, (body, resp)
        if errcode is not None:
            assert resp["errcode"] == errcode, (body, resp)
    status, resp = await harness.request("POST", "createRoom", alice, data=b"not json")
    assert status == 400 and resp["errcode"] == "M_NOT_JSON"
    status, resp = await harness.request("POST", "createRoom", None, json={})
    assert status == 401 and resp["errcode"] == "M_MISSING_TOKEN"


async def test_create_room_empty_body_and_r0(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("POST", "/_matrix/client/r0/createRoom", alice, data=b"")
    assert status == 200 and body["room_id"].startswith("!")


# -- joining and leaving ---------------------------------------------------------------------------


async def test_join_public_room_by_id_and_alias(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    carol = await harness.user("carol")
    room_id = await create_room(harness, alice, preset="public_chat", room_alias_name="pub")
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/join", bob, json={"reason": "hi"})
    assert status == 200 and body == {"room_id": room_id}
    status, body = await harness.request("POST", f"join/{q('#pub:hs.test')}?server_name=hs.test&via=hs.test", carol)
    assert status == 200 and body == {"room_id": room_id}
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/joined_members", alice)
    assert status == 200
    assert set(body["joined"]) == {alice.user_id, bob.user_id, carol.user_id}
    state = await state_of(harness, alice, room_id)
    assert state[("m.room.member", bob.user_id)]["content"]["reason"] == "hi"
    # joining again changes nothing and succeeds
    status, body = await harness.request("POST", f"join/{q(room_id)}", bob)
    assert status == 200 and body == {"room_id": room_id}


async def test_join_uses_the_profile(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, _ = await harness.request(
        "PUT", f"profile/{q(alice.user_id)}/displayname", alice, json={"displayname": "Alice A."}
    )
    assert status == 200
    room_id = await create_room(harness, alice, preset="public_chat")
    bob = await harness.user("bob")
    status, _ = await harness.request(
        "PUT", f"profile/{q(bob.user_id)}/avatar_url", bob, json={"avatar_url": "mxc://hs.test/b"}
    )
    assert status == 200
    await join(harness, bob, room_id)
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/joined_members", alice)
    assert body["joined"][alice.user_id]["display_name"] == "Alice A."
    assert body["joined"][bob.user_id]["avatar_url"] == "mxc://hs.test/b"


async def test_join_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    private = await create_room(harness, alice)
    status, body = await harness.request("POST", f"join/{q(private)}", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("POST", f"join/{q('!nope:elsewhere.test')}", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND" and "federation" in body["error"]
    status, body = await harness.request("POST", f"join/{q('#missing:hs.test')}", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("POST", f"join/{q('#x:elsewhere.test')}", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("POST", "join/garbage", bob)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("POST", f"rooms/{q(private)}/join", bob, json={"reason": 5})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"


async def test_invite_join_leave_forget(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice)
    await invite(harness, alice, room_id, bob)
    state = await state_of(harness, alice, room_id)
    assert state[("m.room.member", bob.user_id)]["content"]["membership"] == "invite"
    # the invite state is kept for sync: stripped state with the create event and the invite itself
    room = harness.hs.db.ids.room(room_id)
    assert room is not None
    stripped = harness.hs.db.rooms.invite_state(bob.user_id, room)
    assert stripped is not None
    assert {e["type"] for e in stripped} >= {"m.room.create", "m.room.join_rules", "m.room.member"}
    assert all(set(e) <= {"type", "state_key", "sender", "content"} for e in stripped)
    # forgetting while invited is refused
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/forget", bob)
    assert status == 400 and body["errcode"] == "M_UNKNOWN"
    await join(harness, bob, room_id)
    assert harness.hs.db.rooms.invite_state(bob.user_id, room) is None
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/forget", bob)
    assert status == 400 and body["errcode"] == "M_UNKNOWN"
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/leave", bob, json={"reason": "bye"})
    assert status == 200 and body == {}
    status, body = await harness.request("GET", "joined_rooms", bob)
    assert body == {"joined_rooms": []}
    # leaving twice is fine
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/leave", bob)
    assert status == 200
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/forget", bob)
    assert status == 200 and body == {}
    assert harness.hs.db.room_extras.is_forgotten(bob.user_id, room)
    # a forgotten room's history is gone for the user
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/messages?dir=b", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # a new invite brings it back
    await invite(harness, alice, room_id, bob)
    assert not harness.hs.db.room_extras.is_forgotten(bob.user_id, room)


async def test_reject_invite_with_leave(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice)
    await invite(harness, alice, room_id, bob)
    status, _ = await harness.request("POST", f"rooms/{q(room_id)}/leave", bob)
    assert status == 200
    state = await state_of(harness, alice, room_id)
    assert state[("m.room.member", bob.user_id)]["content"]["membership"] == "leave"


async def test_leave_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice)
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/leave", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("POST", f"rooms/{q('!unknown:hs.test')}/leave", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("POST", f"rooms/{q('!unknown:hs.test')}/forget", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_invite_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    carol = await harness.user("carol")
    room_id = await create_room(harness, alice)
    path = f"rooms/{q(room_id)}/invite"
    status, body = await harness.request("POST", path, alice, json={})
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await harness.request("POST", path, alice, json={"user_id": "bob"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("POST", path, alice, json={"user_id": "@x:elsewhere.test"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # only members can invite
    status, body = await harness.request("POST", path, bob, json={"user_id": carol.user_id})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # a joined user cannot be invited
    await invite(harness, alice, room_id, bob)
    await join(harness, bob, room_id)
    status, body = await harness.request("POST", path, alice, json={"user_id": bob.user_id})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_kick_ban_unban(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, room_id)
    # bob has no power to kick alice
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/kick", bob, json={"user_id": alice.user_id})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request(
        "POST", f"rooms/{q(room_id)}/kick", alice, json={"user_id": bob.user_id, "reason": "out"}
    )
    assert status == 200 and body == {}
    state = await state_of(harness, alice, room_id)
    assert state[("m.room.member", bob.user_id)]["content"] == {"membership": "leave", "reason": "out"}
    # kicking someone not in the room
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/kick", alice, json={"user_id": bob.user_id})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # unbanning someone not banned
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/unban", alice, json={"user_id": bob.user_id})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request(
        "POST", f"rooms/{q(room_id)}/ban", alice, json={"user_id": bob.user_id, "reason": "spam"}
    )
    assert status == 200 and body == {}
    status, body = await harness.request("POST", f"join/{q(room_id)}", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/leave", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/unban", alice, json={"user_id": bob.user_id})
    assert status == 200 and body == {}
    await join(harness, bob, room_id)
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/ban", alice, json={"user_id": 12})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"


async def test_knock(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, room_alias_name="knockme")
    status, body = await harness.request("POST", f"knock/{q(room_id)}", bob, json={"reason": "let me in"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"  # join rule is invite
    status, _ = await harness.request(
        "PUT", f"rooms/{q(room_id)}/state/m.room.join_rules", alice, json={"join_rule": "knock"}
    )
    assert status == 200
    status, body = await harness.request("POST", f"knock/{q('#knockme:hs.test')}", bob, json={"reason": "let me in"})
    assert status == 200 and body == {"room_id": room_id}
    state = await state_of(harness, alice, room_id)
    assert state[("m.room.member", bob.user_id)]["content"]["membership"] == "knock"
    room = harness.hs.db.ids.room(room_id)
    assert room is not None and harness.hs.db.rooms.invite_state(bob.user_id, room) is not None
    # accepted by an invite
    await invite(harness, alice, room_id, bob)
    await join(harness, bob, room_id)
    status, body = await harness.request("POST", f"knock/{q(room_id)}", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def _restricted_room(harness: Harness, alice: User, bob: User) -> str:
    space = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, space)
    return await create_room(
        harness,
        alice,
        room_version="10",
        initial_state=[
            {
                "type": "m.room.join_rules",
                "content": {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": space}]},
            }
        ],
    )


async def test_restricted_room_refuses_users_meeting_no_condition(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    carol = await harness.user("carol")
    room_id = await _restricted_room(harness, alice, bob)
    status, body = await harness.request("POST", f"join/{q(room_id)}", carol)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN" and "join conditions" in body["error"]


async def test_restricted_room_join_through_an_allow_condition(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await _restricted_room(harness, alice, bob)
    await join(harness, bob, room_id)
    state = await state_of(harness, alice, room_id)
    member = state[("m.room.member", bob.user_id)]["content"]
    assert member["membership"] == "join" and member["join_authorised_via_users_server"] == alice.user_id


async def test_guests(harness: Harness) -> None:
    alice = await harness.user("alice")
    guest_id = await harness.hs.accounts.create("guest1", None, guest=True)
    session = await harness.hs.accounts.new_session(guest_id)
    guest = User(guest_id, session.device_id, session.access_token)
    status, body = await harness.request("POST", "createRoom", guest, json={})
    assert status == 403 and body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    open_room = await create_room(harness, alice, preset="public_chat")  # guest_access forbidden
    # spec: guest access lists POST /rooms/{roomId}/join (not /join/{roomIdOrAlias}) for guests
    status, body = await harness.request("POST", f"rooms/{q(open_room)}/join", guest)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    guest_room = await create_room(
        harness,
        alice,
        preset="public_chat",
        initial_state=[{"type": "m.room.guest_access", "content": {"guest_access": "can_join"}}],
    )
    status, body = await harness.request("POST", f"rooms/{q(guest_room)}/join", guest)
    assert status == 200 and body == {"room_id": guest_room}
    event_id = await send(harness, guest, guest_room, "guest says hi")
    assert event_id.startswith("$")
    status, body = await harness.request(
        "POST", f"rooms/{q(guest_room)}/invite", guest, json={"user_id": alice.user_id}
    )
    assert status == 403 and body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    # spec: when guest access is turned off, joined guests are made to leave
    status, _ = await harness.request(
        "PUT", f"rooms/{q(guest_room)}/state/m.room.guest_access", alice, json={"guest_access": "forbidden"}
    )
    assert status == 200
    deadline = asyncio.get_running_loop().time() + 5
    while True:
        state = await state_of(harness, alice, guest_room)
        if state[("m.room.member", guest_id)]["content"]["membership"] == "leave":
            break
        assert asyncio.get_running_loop().time() < deadline, "the guest was not removed"
        await asyncio.sleep(0.01)


async def test_member_state_put_routes_through_membership(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice)
    status, body = await harness.request(
        "PUT", f"rooms/{q(room_id)}/state/m.room.member/{q(bob.user_id)}", alice, json={"membership": "invite"}
    )
    assert status == 200 and body["event_id"].startswith("$")
    status, body = await harness.request(
        "PUT", f"rooms/{q(room_id)}/state/m.room.member/{q(bob.user_id)}", bob, json={"membership": "join"}
    )
    assert status == 200
    status, body = await harness.request(
        "PUT", f"rooms/{q(room_id)}/state/m.room.member/{q('@x:elsewhere.test')}", alice, json={"membership": "invite"}
    )
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request(
        "PUT", f"rooms/{q(room_id)}/state/m.room.member/nobody", alice, json={"membership": "invite"}
    )
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


# -- reports ---------------------------------------------------------------------------------------


async def test_reports(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice)
    event_id = await send(harness, alice, room_id, "bad words")
    status, body = await harness.request(
        "POST", f"rooms/{q(room_id)}/report/{q(event_id)}", alice, json={"reason": "rude", "score": -100}
    )
    assert status == 200 and body == {}
    # not joined: 404
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/report/{q(event_id)}", bob, json={})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/report/{q('$nope')}", alice, json={})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/report/{q(event_id)}", alice, json={"score": 5})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    # anyone may report a room
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/report", bob, json={"reason": ""})
    assert status == 200 and body == {}
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/report", bob, json={})
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/report", bob, json={"reason": 5})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await harness.request("POST", f"rooms/{q('!x:hs.test')}/report", bob, json={"reason": "x"})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    reports = list(harness.hs.db.room_extras.reports())
    assert [r.get("event_id") for r in reports] == [event_id, None]
    assert reports[0]["reason"] == "rude" and reports[0]["score"] == -100
