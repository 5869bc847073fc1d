"""User directory search: who is visible (shared rooms, public rooms), matching, ranking, limits,
and the index following membership, join rule and profile changes."""

from __future__ import annotations

from typing import Any

from homeserver.user_directory.search import rank

from .conftest import Harness, User
from .test_profile import make_room, set_membership


async def search(harness: Harness, user: User, term: str, limit: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"search_term": term}
    if limit is not None:
        body["limit"] = limit
    status, answer = await harness.request("POST", "user_directory/search", user, json=body)
    assert status == 200, answer
    return dict(answer)


def ids(answer: dict[str, Any]) -> list[str]:
    return [r["user_id"] for r in answer["results"]]


async def test_visibility(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    carol = await harness.user("carol")
    dave = await harness.user("dave")
    await harness.user("erin")  # in no room at all
    shared = await make_room(harness, alice, invite=[bob.user_id])
    await set_membership(harness, bob, shared, "join")
    await make_room(harness, carol, preset="public_chat")
    await make_room(harness, dave)  # private, alone

    assert ids(await search(harness, alice, "bob")) == [bob.user_id]  # shares a room
    assert ids(await search(harness, alice, "carol")) == [carol.user_id]  # in a public room
    assert ids(await search(harness, alice, "dave")) == []  # only in a private room alice is not in
    assert ids(await search(harness, alice, "erin")) == []  # in no room
    assert ids(await search(harness, dave, "bob")) == []
    assert ids(await search(harness, dave, "carol")) == [carol.user_id]
    answer = await search(harness, alice, "bob")
    assert answer == {"results": [{"user_id": bob.user_id, "display_name": "bob"}], "limited": False}


async def test_index_follows_rooms_and_profiles(harness: Harness) -> None:
    alice = await harness.user("alice")
    dave = await harness.user("dave")
    room = await make_room(harness, dave)
    assert ids(await search(harness, alice, "dave")) == []  # builds the index
    # the room becomes public: its members become visible
    await harness.hs.pipeline.send(room, dave.user_id, "m.room.join_rules", {"join_rule": "public"}, "")
    assert ids(await search(harness, alice, "dave")) == [dave.user_id]
    # world-readable history is public too, whatever the join rule
    await harness.hs.pipeline.send(room, dave.user_id, "m.room.join_rules", {"join_rule": "invite"}, "")
    assert ids(await search(harness, alice, "dave")) == []
    await harness.hs.pipeline.send(
        room, dave.user_id, "m.room.history_visibility", {"history_visibility": "world_readable"}, ""
    )
    assert ids(await search(harness, alice, "dave")) == [dave.user_id]
    # a new display name is found at once
    status, _ = await harness.request(
        "PUT", f"profile/{dave.user_id}/displayname", dave, json={"displayname": "Dávid Builder"}
    )
    assert status == 200
    answer = await search(harness, alice, "david bui")
    assert answer["results"] == [{"user_id": dave.user_id, "display_name": "Dávid Builder"}]
    # joining and leaving a public room
    frank = await harness.user("frank")
    await harness.hs.pipeline.send(room, dave.user_id, "m.room.member", {"membership": "invite"}, frank.user_id)
    assert ids(await search(harness, alice, "frank")) == []  # invited is not joined
    await set_membership(harness, frank, room, "join")
    assert ids(await search(harness, alice, "frank")) == [frank.user_id]
    await set_membership(harness, frank, room, "leave")
    assert ids(await search(harness, alice, "frank")) == []


async def test_ranking_and_limit(harness: Harness) -> None:
    alice = await harness.user("alice")
    names = {"sam": "Sam", "samantha": "Samantha Jones", "bob": "Sammy Bob", "zed": "Nobody"}
    users = {n: await harness.user(n) for n in names}
    for local, name in names.items():
        user = users[local]
        await harness.request("PUT", f"profile/{user.user_id}/displayname", user, json={"displayname": name})
        await make_room(harness, user, preset="public_chat")
    answer = await search(harness, alice, "sam")
    # the exact name first, then names with a word starting "sam" (ties by user id)
    assert ids(answer) == ["@sam:hs.test", "@bob:hs.test", "@samantha:hs.test"]
    assert answer["limited"] is False
    answer = await search(harness, alice, "sam", limit=2)
    assert ids(answer) == ["@sam:hs.test", "@bob:hs.test"] and answer["limited"] is True
    # the server name alone finds nobody; a full user id finds its user
    assert ids(await search(harness, alice, "hs.test")) == []
    assert ids(await search(harness, alice, "@zed:hs.test")) == ["@zed:hs.test"]
    assert ids(await search(harness, alice, "SAMANTHA")) == ["@samantha:hs.test"]


async def test_bad_requests(harness: Harness) -> None:
    alice = await harness.user("alice")
    for body in ({"search_term": 5}, {"search_term": "a", "limit": -1}, {"search_term": "a", "limit": "3"}):
        status, answer = await harness.request("POST", "user_directory/search", alice, json=body)
        assert status == 400 and answer["errcode"] == "M_BAD_JSON", body
    status, answer = await harness.request("POST", "user_directory/search", alice, json={"limit": 3})
    assert status == 400 and answer["errcode"] == "M_MISSING_PARAM"
    status, answer = await harness.request("POST", "user_directory/search", json={"search_term": "a"})
    assert status == 401


def test_rank() -> None:
    assert rank("alice", "@alice:hs.test", None) == 0
    assert rank("ali", "@alice:hs.test", "Someone") == 2
    assert rank("some", "@alice:hs.test", "Someone Else") == 1
    assert rank("one", "@alice:hs.test", "Someone") == 3
    assert rank("test", "@alice:hs.test", None) is None
    assert rank("", "@alice:hs.test", None) is None
    assert rank("zoë", "@x:hs.test", "Zoe") == 0
