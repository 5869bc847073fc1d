"""Restricted rooms across our server and a real Synapse, both ways, with matrix-nio clients.

spec: client-server-api "Restricted rooms"; server-server-api "Restricted rooms" and "Joining
rooms" (the resident names one of its members who may invite in `join_authorised_via_users_server`
and signs the join; send_join v2 answers it as `event`); rooms/v8 auth rules. Room version 11.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from nio import AsyncClient, RoomCreateResponse, RoomVisibility
from nio.api import RoomPreset

from .server import RunningServer
from .test_federation_rooms import create, join_via, member, message, report, send, until, user

pytestmark = pytest.mark.asyncio

VERSION = "11"


async def restricted(client: AsyncClient, allowed: str) -> str:
    """A room whose members may come in from `allowed` without an invite."""
    rules = {"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": allowed}]}
    resp = await client.room_create(
        visibility=RoomVisibility.private,
        name=f"restricted room of {client.user_id}",
        room_version=VERSION,
        preset=RoomPreset.private_chat,
        initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": rules}],
    )
    assert isinstance(resp, RoomCreateResponse), resp
    return resp.room_id


def authorised_by(join: dict[str, Any]) -> Any:
    return join.get("content", {}).get("join_authorised_via_users_server")


async def test_synapse_user_joins_our_restricted_room(synapse: RunningServer, ours: RunningServer) -> None:
    """Synapse does make_join/send_join against us: we name our member, check Bob is in the
    allowed room, sign his join; he is refused before he is in it."""
    started = time.monotonic()
    async with user(ours, "ann") as ann, user(synapse, "ben") as ben:
        lobby = await create(ann, version=VERSION, public=True)
        inner = await restricted(ann, lobby)
        status, answer = join_via(synapse, ben, inner, [ours.server_name])
        assert status == 403 and answer["errcode"] == "M_FORBIDDEN", answer
        status, answer = join_via(synapse, ben, lobby, [ours.server_name])
        assert status == 200, answer
        await until(ann, member(lobby, ben.user_id, "join"), "ben in the lobby")
        status, answer = join_via(synapse, ben, inner, [ours.server_name])
        assert status == 200 and answer["room_id"] == inner, answer
        event = await until(ann, member(inner, ben.user_id, "join"), "ben's join of the restricted room")
        assert authorised_by(event) == ann.user_id, event
        await send(ben, inner, "inside, from synapse")
        await until(ann, message(inner, "inside, from synapse"), "ben's message")
        await send(ann, inner, "inside, from us")
        await until(ben, message(inner, "inside, from us"), "ann's message")
    report("Synapse user joins our restricted room", started)


async def test_our_user_joins_a_synapse_restricted_room(synapse: RunningServer, ours: RunningServer) -> None:
    """We do make_join/send_join against Synapse and keep the join it signed: Synapse refuses us
    (403) until our user is in the allowed room, then lets us in and the room works both ways."""
    started = time.monotonic()
    async with user(synapse, "cat") as cat, user(ours, "dan") as dan:
        lobby = await create(cat, version=VERSION, public=True)
        inner = await restricted(cat, lobby)
        status, answer = join_via(ours, dan, inner, [synapse.server_name])
        assert status == 403 and answer["errcode"] == "M_FORBIDDEN", answer
        status, answer = join_via(ours, dan, lobby, [synapse.server_name])
        assert status == 200, answer
        await until(cat, member(lobby, dan.user_id, "join"), "dan in the lobby")
        status, answer = join_via(ours, dan, inner, [synapse.server_name])
        assert status == 200 and answer["room_id"] == inner, answer
        ours_seen = await until(dan, member(inner, dan.user_id, "join"), "the restricted room in our /sync")
        theirs_seen = await until(cat, member(inner, dan.user_id, "join"), "dan's join on Synapse")
        assert authorised_by(ours_seen) == authorised_by(theirs_seen) == cat.user_id, (ours_seen, theirs_seen)
        assert ours_seen["event_id"] == theirs_seen["event_id"]
        await send(dan, inner, "inside, from us")
        await until(cat, message(inner, "inside, from us"), "dan's message")
        await send(cat, inner, "inside, from synapse")
        await until(dan, message(inner, "inside, from synapse"), "cat's message")
    report("our user joins a Synapse restricted room", started)
