"""Membership over federation between two real stores: our `RemoteMembership` talking to the
resident's `Resident` (the code behind its make_*/send_* endpoints) through a fake transport.

spec: server-server-api "Joining rooms", "Leaving rooms (rejecting invites)", "Knocking upon a room".
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from federation.client import FederationError
from federation.membership import RemoteMembership
from federation.resident import Resident
from homeserver.errors import MatrixError
from homeserver.rooms.federation_reads import FederationReads
from homeserver.rooms.pipeline import PersistedEvent
from tests.rooms.remote import ALICE_R, BOB_L, LOCAL, RESIDENT, Pair, msg


class Transport:
    """Requests from our server to the resident, answered by its `Resident`; errors as a real
    server gives them (a MatrixError becomes a FederationError with its status and errcode)."""

    def __init__(self, pair: Pair) -> None:
        self.forwarded: list[tuple[str, tuple[str, ...]]] = []
        res = pair.resident
        self.resident = Resident(RESIDENT, res.pipe, FederationReads(res.db, RESIDENT), res.keys, self._forward)
        self.down: set[str] = set()

    def _forward(self, event: PersistedEvent, exclude: Any) -> None:
        self.forwarded.append((event.event_id, tuple(exclude)))

    async def request(self, destination: str, method: str, path: str, **kw: Any) -> Any:
        if destination in self.down or destination != RESIDENT:
            raise FederationError(destination, 404, "M_NOT_FOUND", "no such server")
        url = urlsplit(path)
        parts = [unquote(p) for p in url.path.split("/")]
        query = parse_qs(url.query)
        verb, rest = parts[4], parts[5:]
        try:
            if verb.startswith("make_"):
                return self.resident.make(LOCAL, verb[5:], rest[0], rest[1], query.get("ver"))
            if verb == "send_join":
                return await self.resident.send_join(LOCAL, rest[0], rest[1], copy.deepcopy(kw["content"]))
            if verb == "send_knock":
                return await self.resident.send_knock(LOCAL, rest[0], rest[1], copy.deepcopy(kw["content"]))
            if verb == "send_leave":
                await self.resident.send(LOCAL, "leave", rest[0], rest[1], copy.deepcopy(kw["content"]))
                return {}
        except MatrixError as e:
            raise FederationError(destination, e.status, e.errcode, e.message) from None
        raise AssertionError(path)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


def remote(pair: Pair, transport: Transport) -> RemoteMembership:
    ours = pair.local
    return RemoteMembership(LOCAL, ours.pipe, transport, ours.keys)


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_join_and_leave_through_the_resident(pair: Pair, version: str) -> None:
    room_id = await pair.room(version)
    transport = Transport(pair)
    membership = remote(pair, transport)
    joined = await membership.join(room_id, BOB_L, ["down.test", RESIDENT], {"displayname": "Bob"})
    ours, res = pair.local, pair.resident
    assert ours.current_state(room_id) == res.current_state(room_id)
    assert res.event(joined.event_id)["content"] == {"membership": "join", "displayname": "Bob"}
    assert transport.forwarded == [(joined.event_id, (LOCAL,))]  # the resident passes it on
    # the room is live: our message is accepted by the resident
    sent = await ours.pipe.send(room_id, BOB_L, "m.room.message", msg("hello"))
    assert (await res.pipe.receive(copy.deepcopy(ours.event(sent.event_id)), res.keys)).rejected is None
    # leaving through make_leave/send_leave (as when rejecting an invite)
    leave = await membership.leave(room_id, BOB_L, [RESIDENT])
    assert res.current_state(room_id)[("m.room.member", BOB_L)] != joined.event_id
    assert leave["content"]["membership"] == "leave"


async def test_a_refusal_is_passed_on_to_the_client(pair: Pair) -> None:
    room_id = await pair.room("10")
    res = pair.resident
    await res.pipe.send(room_id, ALICE_R, "m.room.member", {"membership": "ban"}, BOB_L)
    membership = remote(pair, Transport(pair))
    with pytest.raises(MatrixError) as err:
        await membership.join(room_id, BOB_L, [RESIDENT])
    assert (err.value.status, err.value.errcode) == (403, "M_FORBIDDEN")
    assert pair.local.db.ids.room(room_id) is None  # nothing of the room is kept
    with pytest.raises(MatrixError) as err:
        await membership.join(room_id, BOB_L, [])
    assert err.value.status == 404


async def test_the_resident_refuses_events_that_are_not_what_they_claim(pair: Pair) -> None:
    room_id = await pair.room("10")
    transport = Transport(pair)
    res = pair.resident
    template = transport.resident.make(LOCAL, "join", room_id, BOB_L, ["10"])["event"]
    event, eid = pair.local.pipe.sign_membership_template(template, res.rv(room_id), room_id, BOB_L, "join")
    with pytest.raises(MatrixError):  # a user of another server
        transport.resident.make("evil.test", "join", room_id, BOB_L, ["10"])
    with pytest.raises(MatrixError):  # sent by a server that is not the user's
        await transport.resident.send_join("evil.test", room_id, eid, copy.deepcopy(event))
    with pytest.raises(MatrixError):  # another event id
        await transport.resident.send_join(LOCAL, room_id, "$wrong", copy.deepcopy(event))
    with pytest.raises(MatrixError) as err:  # a version the joining server does not know
        transport.resident.make(LOCAL, "join", room_id, BOB_L, ["1", "2"])
    assert err.value.errcode == "M_INCOMPATIBLE_ROOM_VERSION" and err.value.extra["room_version"] == "10"
    answer = await transport.resident.send_join(LOCAL, room_id, eid, copy.deepcopy(event))
    assert answer["members_omitted"] is False and RESIDENT in answer["servers_in_room"]
    assert {e["type"] for e in answer["state"]} >= {"m.room.create", "m.room.power_levels", "m.room.member"}


async def test_knock(pair: Pair) -> None:
    room_id = await pair.room("10")
    res = pair.resident
    await res.pipe.send(room_id, ALICE_R, "m.room.join_rules", {"join_rule": "knock"}, "")
    membership = remote(pair, Transport(pair))
    event, stripped = await membership.knock(room_id, BOB_L, [RESIDENT])
    assert event["content"]["membership"] == "knock"
    assert {e["type"] for e in stripped} >= {"m.room.create", "m.room.join_rules", "m.room.name"}
    assert all(set(e) == {"type", "state_key", "sender", "content"} for e in stripped)
    assert res.current_state(room_id)[("m.room.member", BOB_L)]


async def test_a_knock_is_kept_here_with_the_rooms_stripped_state(pair: Pair) -> None:
    room_id = await pair.room("10")
    res, ours = pair.resident, pair.local
    await res.pipe.send(room_id, ALICE_R, "m.room.join_rules", {"join_rule": "knock"}, "")
    membership = remote(pair, Transport(pair))
    persisted = await membership.knock_and_record(room_id, BOB_L, [RESIDENT], {"reason": "let me in"})
    room = ours.db.ids.room(room_id)
    assert room is not None
    ur = ours.db.rooms.user_room(BOB_L, room)
    assert ur is not None and ur.membership == "knock" and ur.stream == persisted.stream > 0
    knock_state = ours.db.rooms.invite_state(BOB_L, room)
    assert knock_state is not None and {e["type"] for e in knock_state} >= {"m.room.create", "m.room.join_rules"}
    assert knock_state[-1]["state_key"] == BOB_L and knock_state[-1]["content"]["reason"] == "let me in"
    # the resident has it in the room's state
    assert res.current_state(room_id)[("m.room.member", BOB_L)] == persisted.event_id
