"""Profiles over HTTP: fields, validation, permissions, and member events following profile changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from homeserver.config import Config
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.server import HomeServer

from .conftest import Harness, User


async def make_room(
    harness: Harness, creator: User, *, preset: str = "private_chat", invite: list[str] | None = None
) -> str:
    hs = harness.hs
    return await create_room(
        hs.pipeline,
        RoomCreation(
            creator=creator.user_id,
            room_version=hs.config.default_room_version,
            preset=preset,
            invite=list(invite or []),
            creator_profile=hs.profiles.member_fields(creator.user_id),
        ),
    )


async def set_membership(harness: Harness, user: User, room_id: str, membership: str) -> None:
    content: dict[str, Any] = {"membership": membership}
    if membership == "join":
        content.update(harness.hs.profiles.member_fields(user.user_id))
    await harness.hs.pipeline.send(room_id, user.user_id, "m.room.member", content, user.user_id)


def member_content(harness: Harness, user: User, room_id: str) -> dict[str, Any]:
    db = harness.hs.db
    room = db.ids.room(room_id)
    assert room is not None
    membership = db.rooms.user_room(user.user_id, room)
    assert membership is not None
    event = db.events.get_json(membership.event)
    assert event is not None
    content: dict[str, Any] = event["content"]
    return content


async def test_new_accounts_have_their_localpart_as_name(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("GET", f"profile/{alice.user_id}")  # no token needed
    assert status == 200 and body == {"displayname": "alice"}
    status, body = await harness.request("GET", f"profile/{alice.user_id}/displayname")
    assert status == 200 and body == {"displayname": "alice"}
    status, body = await harness.request("GET", f"profile/{alice.user_id}/avatar_url")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_set_get_and_delete_fields(harness: Harness) -> None:
    alice = await harness.user("alice")
    puts = {
        "displayname": "Alice Liddell",
        "avatar_url": "mxc://hs.test/avatar123",
        "m.tz": "Europe/London",
        "org.example.job": {"title": "explorer", "years": 7},
    }
    for key, value in puts.items():
        status, body = await harness.request("PUT", f"profile/{alice.user_id}/{key}", alice, json={key: value})
        assert status == 200 and body == {}, body
        status, body = await harness.request("GET", f"profile/{alice.user_id}/{key}")
        assert status == 200 and body == {key: value}
    status, body = await harness.request("GET", f"profile/{alice.user_id}")
    assert status == 200 and body == puts
    status, body = await harness.request("DELETE", f"profile/{alice.user_id}/org.example.job", alice)
    assert status == 200 and body == {}
    status, body = await harness.request("GET", f"profile/{alice.user_id}/org.example.job")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    # deleting a field that is not there is fine (spec: "deleted or it doesn't exist")
    status, _ = await harness.request("DELETE", f"profile/{alice.user_id}/org.example.job", alice)
    assert status == 200
    # an empty display name removes it
    status, _ = await harness.request("PUT", f"profile/{alice.user_id}/displayname", alice, json={"displayname": ""})
    assert status == 200
    status, body = await harness.request("GET", f"profile/{alice.user_id}")
    assert "displayname" not in body
    # the r0 prefix works as well
    status, body = await harness.request("GET", f"/_matrix/client/r0/profile/{alice.user_id}/m.tz")
    assert status == 200 and body == {"m.tz": "Europe/London"}


async def test_bad_requests(harness: Harness) -> None:
    alice = await harness.user("alice")
    base = f"profile/{alice.user_id}"
    cases: list[tuple[str, str, Any, int, str]] = [
        ("PUT", "displayname", {"displayname": 5}, 400, "M_BAD_JSON"),
        ("PUT", "displayname", {"displayname": None}, 400, "M_BAD_JSON"),
        ("PUT", "displayname", {"displayname": "x" * 300}, 400, "M_INVALID_PARAM"),
        ("PUT", "displayname", {"other": "x"}, 400, "M_MISSING_PARAM"),
        ("PUT", "displayname", ["not", "an", "object"], 400, "M_BAD_JSON"),
        ("PUT", "avatar_url", {"avatar_url": "https://example.org/a.png"}, 400, "M_INVALID_PARAM"),
        ("PUT", "m.tz", {"m.tz": 3}, 400, "M_BAD_JSON"),
        ("PUT", "Not_A_Key", {"Not_A_Key": 1}, 400, "M_INVALID_PARAM"),
        ("PUT", "nonamespace", {"nonamespace": 1}, 400, "M_INVALID_PARAM"),
        ("PUT", "a." + "b" * 300, {}, 400, "M_KEY_TOO_LARGE"),
        ("PUT", "org.example.big", {"org.example.big": "x" * 70_000}, 400, "M_PROFILE_TOO_LARGE"),
        ("GET", "Not_A_Key", None, 400, "M_INVALID_PARAM"),
        ("DELETE", "Not_A_Key", None, 400, "M_INVALID_PARAM"),
    ]
    for method, key, body, want_status, errcode in cases:
        status, answer = await harness.request(method, f"{base}/{key}", alice, json=body)
        assert (status, answer.get("errcode")) == (want_status, errcode), (method, key, answer)
    status, body = await harness.request("GET", base)
    assert body == {"displayname": "alice"}  # nothing above changed the profile


async def test_permissions_and_unknown_users(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    status, body = await harness.request(
        "PUT", f"profile/{alice.user_id}/displayname", bob, json={"displayname": "not alice"}
    )
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("DELETE", f"profile/{alice.user_id}/displayname", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("PUT", f"profile/{alice.user_id}/displayname", json={"displayname": "x"})
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    # an admin may change a local user's profile
    admin = await harness.user("admin", admin=True)
    status, _ = await harness.request("PUT", f"profile/{alice.user_id}/displayname", admin, json={"displayname": "A"})
    assert status == 200
    for user_id in ("@nobody:hs.test", "@someone:elsewhere.example"):
        status, body = await harness.request("GET", f"profile/{user_id}")
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"
        status, body = await harness.request("GET", f"profile/{user_id}/displayname")
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", "profile/not-a-user-id")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


async def test_profile_changes_update_member_events(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_a = await make_room(harness, alice, invite=[bob.user_id])
    room_b = await make_room(harness, alice, preset="public_chat")
    left = await make_room(harness, alice)
    await set_membership(harness, bob, room_a, "join")
    await set_membership(harness, alice, left, "leave")
    assert member_content(harness, alice, room_a) == {"membership": "join", "displayname": "alice"}

    status, _ = await harness.request(
        "PUT", f"profile/{alice.user_id}/displayname", alice, json={"displayname": "Alice L."}
    )
    assert status == 200
    status, _ = await harness.request(
        "PUT", f"profile/{alice.user_id}/avatar_url", alice, json={"avatar_url": "mxc://hs.test/pic"}
    )
    assert status == 200
    want = {"membership": "join", "displayname": "Alice L.", "avatar_url": "mxc://hs.test/pic"}
    assert member_content(harness, alice, room_a) == want
    assert member_content(harness, alice, room_b) == want
    assert member_content(harness, alice, left) == {"membership": "leave"}  # only joined rooms
    assert member_content(harness, bob, room_a) == {"membership": "join", "displayname": "bob"}

    # removing the avatar removes it from the member events; other fields leave them alone
    await harness.request("DELETE", f"profile/{alice.user_id}/avatar_url", alice)
    await harness.request("PUT", f"profile/{alice.user_id}/m.tz", alice, json={"m.tz": "UTC"})
    assert member_content(harness, alice, room_a) == {"membership": "join", "displayname": "Alice L."}
    assert harness.hs.profiles.get_profile(alice.user_id) == {"displayname": "Alice L.", "m.tz": "UTC"}
    assert harness.hs.profiles.member_fields(alice.user_id) == {"displayname": "Alice L."}


async def test_a_server_name_with_a_port_owns_its_users_profiles(tmp_path: Path) -> None:
    # spec: appendices "Server name": the name may carry a port; "is this user ours" asks RoomQueries
    settings = {"server_name": "hs.test:8448", "data_dir": tmp_path / "data", "password_hash_cost": "low"}
    hs = HomeServer(Config.model_validate(settings))
    try:
        user = await hs.accounts.create("alice", "pw", displayname="Alice")
        assert user == "@alice:hs.test:8448"
        assert hs.profiles.is_local(user)
        assert (await hs.profiles.lookup(user)).get("displayname") == "Alice"
        assert not hs.profiles.is_local("@alice:8448")
    finally:
        hs.close()
