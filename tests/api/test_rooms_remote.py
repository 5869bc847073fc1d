"""The client API's answers for rooms, aliases and profiles of other servers, without a peer: the
choice of servers to join through, the clear errors when there is none, the same answers as
before when federation is off, and the cache of remote profiles.

spec: client-server-api POST /join/{roomIdOrAlias} (`via`, `server_name`), POST /invite,
GET /directory/room/{roomAlias}, GET /profile/{userId}; appendices "Room IDs" (v12: no server).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from homeserver.errors import MatrixError
from homeserver.profile import REMOTE_PROFILE_TTL_S, Profiles
from storage.cache import LruCache
from tests.api.conftest import Harness, User

V12_ROOM_ID = "!" + "A" * 43  # spec: rooms v12 ids are the create event's reference hash, no server part


def q(s: str) -> str:
    return quote(s, safe="")


async def test_a_v12_room_id_without_via_names_no_server(harness: Harness) -> None:
    bob = await harness.user("bob")
    status, body = await harness.request("POST", f"join/{q(V12_ROOM_ID)}", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND" and "via" in body["error"]
    # with `via` naming this server only, there is still no one to ask
    status, body = await harness.request("POST", f"join/{q(V12_ROOM_ID)}?via=hs.test", bob)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND" and "via" in body["error"]


async def test_join_servers_come_from_via_server_name_and_the_room_id(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    bob = await harness.user("bob")
    asked: list[list[str]] = []

    async def join(room_id: str, user_id: str, servers: Any, content: Any = None) -> Any:
        asked.append(list(servers))
        raise MatrixError(403, "M_FORBIDDEN", "not invited")

    membership = harness.hs.rooms.membership
    assert membership.remote is not None
    monkeypatch.setattr(membership.remote, "join", join)
    path = f"join/{q('!r:one.test')}?via=two.test&server_name=three.test&via=two.test"
    status, body = await harness.request("POST", path, bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert asked == [["two.test", "three.test", "one.test"]]


async def test_guests_do_not_join_rooms_of_other_servers(harness: Harness) -> None:
    guest_id = await harness.hs.accounts.create("guest1", None, guest=True)
    session = await harness.hs.accounts.new_session(guest_id)
    guest = User(guest_id, session.device_id, session.access_token)
    status, body = await harness.request("POST", f"rooms/{q('!r:one.test')}/join", guest)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("harness", [{"federation": {"enabled": False}}], indirect=True)
async def test_without_federation_the_answers_say_so(harness: Harness) -> None:
    assert harness.hs.outbound is None and harness.hs.federation is None
    alice = await harness.user("alice")
    status, body = await harness.request("POST", "createRoom", alice, json={})
    room_id = body["room_id"]
    status, body = await harness.request("POST", f"join/{q('!nope:elsewhere.test')}?via=elsewhere.test", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND" and "federation" in body["error"]
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/invite", alice, json={"user_id": "@x:else.test"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN" and "federation" in body["error"]
    status, body = await harness.request("GET", f"directory/room/{q('#x:elsewhere.test')}", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"profile/{q('@x:elsewhere.test')}", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


class Remote:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def profile(self, user_id: str) -> dict[str, Any] | None:
        self.asked.append(user_id)
        if user_id.startswith("@gone"):
            return None
        return {"displayname": f"{user_id} #{len(self.asked)}"}


async def test_remote_profiles_are_cached_a_while_and_bounded(harness: Harness) -> None:
    hs = harness.hs
    now = [1000.0]
    remote = Remote()
    profiles = Profiles(
        hs.db.store,
        hs.db.profiles,
        hs.queries,
        hs.accounts.exists,
        hs.pipeline,
        remote=remote,
        remote_cache=LruCache("test.remote_profiles", 2),
        clock=lambda: now[0],
    )
    first = await profiles.lookup("@a:there.test")
    assert await profiles.lookup("@a:there.test") == first  # from the cache
    assert remote.asked == ["@a:there.test"]
    now[0] += REMOTE_PROFILE_TTL_S
    assert await profiles.lookup("@a:there.test") != first  # asked again once stale
    assert len(remote.asked) == 2
    with pytest.raises(MatrixError) as e:
        await profiles.lookup("@gone:there.test")
    assert e.value.status == 404
    with pytest.raises(MatrixError):
        await profiles.lookup("@gone:there.test")  # an unknown user is remembered too
    assert remote.asked.count("@gone:there.test") == 1
    await profiles.lookup("@b:there.test")
    assert len(profiles.remote_cache) == 2  # bounded
    assert await profiles.remote_member_fields("@c:there.test") == {"displayname": "@c:there.test #5"}


async def test_remote_joins_of_one_room_go_one_at_a_time(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second user's join waits for the first (which then makes this server resident)."""
    import asyncio

    bob, carol = await harness.user("bob"), await harness.user("carol")
    release = asyncio.Event()
    in_flight: list[str] = []
    most = [0]

    async def join(room_id: str, user_id: str, servers: Any, content: Any = None) -> Any:
        in_flight.append(user_id)
        most[0] = max(most[0], len(in_flight))
        await release.wait()
        in_flight.remove(user_id)
        raise MatrixError(403, "M_FORBIDDEN", "not invited")

    membership = harness.hs.rooms.membership
    assert membership.remote is not None
    monkeypatch.setattr(membership.remote, "join", join)
    path = f"join/{q('!r:one.test')}"
    first = asyncio.ensure_future(harness.request("POST", path, bob))
    second = asyncio.ensure_future(harness.request("POST", path, carol))
    # give the second join every chance to start alongside the first (it must not)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 0.5
    while len(in_flight) < 2 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    release.set()
    answers = await asyncio.gather(first, second)
    assert [status for status, _ in answers] == [403, 403]
    assert most[0] == 1


async def test_an_invite_from_an_unreachable_server_is_refused_here(harness: Harness) -> None:
    """spec: POST /rooms/{roomId}/leave on an invite — when no server of the room answers, the
    invite is still marked refused here (and the user's /sync shows the room left)."""
    from homeserver.protocol.room_versions import get_room_version
    from tests.rooms.remote import RemoteServer

    hs = harness.hs
    bob = await harness.user("bob")
    peer = RemoteServer("gone.test")
    rv = get_room_version("10")
    room_id = "!room:gone.test"
    invite = peer.sign(
        {
            "room_id": room_id,
            "sender": "@alice:gone.test",
            "type": "m.room.member",
            "state_key": bob.user_id,
            "content": {"membership": "invite"},
            "origin_server_ts": 1,
            "origin": "gone.test",
            "depth": 5,
            "prev_events": ["$" + "p" * 43],
            "auth_events": ["$" + c * 43 for c in "cpa"],
        },
        rv,
    )
    create = {"type": "m.room.create", "state_key": "", "sender": "@alice:gone.test", "content": {"room_version": "10"}}

    async def keys(server: str, key_ids: list[str], at: int | None) -> Any:
        return {peer.key_id: peer.key.verify_key}

    await hs.pipeline.receive_invite("10", invite, [create], keys)
    status, body = await harness.request("GET", "sync?timeout=0", bob)
    assert status == 200 and room_id in body["rooms"]["invite"]
    since = body["next_batch"]
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/leave", bob, json={})
    assert status == 200 and body == {}
    status, body = await harness.request("GET", f"sync?timeout=0&since={since}", bob)
    assert status == 200 and room_id in body["rooms"]["leave"]
    assert room_id not in body["rooms"].get("invite", {})
    status, body = await harness.request("POST", f"rooms/{q(room_id)}/forget", bob, json={})
    assert status == 200


async def test_a_knock_no_server_can_carry_is_not_found_never_a_5xx(harness: Harness) -> None:
    """spec: POST /knock documents 403, 404, 429: a room on servers nobody can reach is not found."""
    bob = await harness.user("bob")
    room = "!room:unreachable.invalid"
    status, body = await harness.request("POST", f"knock/{q(room)}?via=elsewhere.invalid", bob, json={})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND", body
    status, body = await harness.request("POST", f"knock/{q(V12_ROOM_ID)}", bob, json={})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND", body
