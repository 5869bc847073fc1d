"""Room upgrades followed across servers: our server and a real Synapse, nio clients on both sides.

spec: client-server-api "Room Upgrades" (the tombstone's `replacement_room`, the create event's
`predecessor`, "When a user joins the new room, the server should automatically transfer/replicate
some of the user's personalized settings"; clients join through the tombstone sender's server).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import pytest
from nio import JoinResponse, SyncResponse

from .server import RunningServer, http_json
from .test_federation_rooms import create, join_via, member, message, report, send, until, user

pytestmark = pytest.mark.asyncio

CS = "/_matrix/client/v3"


def tombstone(room_id: str) -> Callable[[SyncResponse], Any]:
    """The m.room.tombstone event in the old room's timeline."""

    def found(resp: SyncResponse) -> Any:
        room = resp.rooms.join.get(room_id)
        events = room.timeline.events if room is not None else []
        return next((e.source for e in events if e.source.get("type") == "m.room.tombstone"), None)

    return found


def api(server: RunningServer, method: str, path: str, token: str, body: Any = None) -> Any:
    return http_json(method, f"{server.base_url}{CS}/{path}", body, token)


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


async def test_synapse_user_follows_an_upgrade_of_our_room(synapse: RunningServer, ours: RunningServer) -> None:
    """Our user upgrades a room a Synapse user is in; the Synapse user sees the tombstone, joins the
    replacement through the tombstone sender's server (ours), sees its predecessor, and messages
    flow both ways in the new room; our alias now leads Synapse to the new room."""
    started = time.monotonic()
    async with user(ours, "upper") as alice, user(synapse, "follower") as bob:
        old = await create(alice, alias="upgraded", version="10", public=True)
        assert isinstance(await bob.join(f"#upgraded:{ours.server_name}"), JoinResponse)
        await until(alice, member(old, bob.user_id, "join"), "bob's join")
        upgraded = api(ours, "POST", f"rooms/{q(old)}/upgrade", alice.access_token, {"new_version": "12"})
        new = upgraded["replacement_room"]
        stone = await until(bob, tombstone(old), "the tombstone")
        assert stone["content"]["replacement_room"] == new and stone["sender"] == alice.user_id
        via = stone["sender"].split(":", 1)[1]  # spec: clients join through the sender's server
        status, answer = join_via(synapse, bob, new, [via])
        assert status == 200 and answer["room_id"] == new, answer
        create_event = api(synapse, "GET", f"rooms/{q(new)}/state/m.room.create", bob.access_token)
        assert create_event["predecessor"]["room_id"] == old and create_event["room_version"] == "12"
        await until(alice, member(new, bob.user_id, "join"), "bob's join of the new room")
        await send(alice, new, "welcome to the new room")
        await until(bob, message(new, "welcome to the new room"), "alice's message")
        await send(bob, new, "glad to be here")
        await until(alice, message(new, "glad to be here"), "bob's message")
        resolved = await bob.room_resolve_alias(f"#upgraded:{ours.server_name}")
        assert getattr(resolved, "room_id", None) == new, resolved
    report("our room upgraded, followed by a Synapse user", started)


async def test_our_user_follows_an_upgrade_of_a_synapse_room(synapse: RunningServer, ours: RunningServer) -> None:
    """A Synapse user upgrades a room our user is in; our /sync shows the tombstone; our user joins
    the replacement over federation and finds their tags, their room push rule and the room's place
    in `m.direct` carried over from the old room; our alias of the old room now names the new one
    (as Synapse moves its aliases when it first joins a replacement room)."""
    started = time.monotonic()
    async with user(synapse, "carolup") as carol, user(ours, "daveup") as dave:
        old = await create(carol, alias="theirs-upgraded", version="10", public=True)
        assert isinstance(await dave.join(f"#theirs-upgraded:{synapse.server_name}"), JoinResponse)
        await until(carol, member(old, dave.user_id, "join"), "dave's join")
        me = q(dave.user_id)
        api(ours, "PUT", f"user/{me}/rooms/{q(old)}/tags/m.favourite", dave.access_token, {"order": 0.5})
        api(ours, "PUT", f"pushrules/global/room/{q(old)}", dave.access_token, {"actions": []})
        api(ours, "PUT", f"user/{me}/account_data/m.direct", dave.access_token, {carol.user_id: [old]})
        our_alias = f"#ours-for-theirs:{ours.server_name}"
        api(ours, "PUT", f"directory/room/{q(our_alias)}", dave.access_token, {"room_id": old})
        upgraded = api(synapse, "POST", f"rooms/{q(old)}/upgrade", carol.access_token, {"new_version": "11"})
        new = upgraded["replacement_room"]
        stone = await until(dave, tombstone(old), "the tombstone")
        assert stone["content"]["replacement_room"] == new
        status, answer = join_via(ours, dave, new, [stone["sender"].split(":", 1)[1]])
        assert status == 200 and answer["room_id"] == new, answer
        create_event = api(ours, "GET", f"rooms/{q(new)}/state/m.room.create", dave.access_token)
        assert create_event["predecessor"]["room_id"] == old
        tags = api(ours, "GET", f"user/{me}/rooms/{q(new)}/tags", dave.access_token)["tags"]
        assert tags == {"m.favourite": {"order": 0.5}}, tags
        rule = api(ours, "GET", f"pushrules/global/room/{q(new)}", dave.access_token)
        assert rule["rule_id"] == new and rule["actions"] == [], rule
        direct = api(ours, "GET", f"user/{me}/account_data/m.direct", dave.access_token)
        assert direct == {carol.user_id: [old, new]}, direct
        assert api(ours, "GET", f"directory/room/{q(our_alias)}", dave.access_token)["room_id"] == new
        await send(dave, new, "followed you here")
        await until(carol, message(new, "followed you here"), "dave's message in the new room")
    report("a Synapse room upgraded, followed by our user with their settings", started)
