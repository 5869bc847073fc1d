"""Restricted rooms across servers: our user joins a restricted room on the resident through
membership of an allowed room there (our `RemoteMembership` against the resident's `Resident`).

spec: server-server-api "Restricted rooms" and "Joining rooms" (send_join v2 `event`); client-server
"Restricted rooms"; rooms/v8 auth rules (join rule 5, member rule 2.1).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.client import FederationError
from federation.membership import RemoteMembership
from homeserver.errors import MatrixError
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.event_signing import verify_event_signature
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.service import Rooms
from tests.federation.test_membership import Transport
from tests.rooms.remote import ALICE_R, BOB_L, LOCAL, RESIDENT, Pair, only


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


def remote(pair: Pair, transport: Any) -> RemoteMembership:
    return RemoteMembership(LOCAL, pair.local.pipe, transport, pair.local.keys)


async def restricted_room(
    pair: Pair, version: str, allow: list[str], *, rule: str = "restricted", pl: dict[str, Any] | None = None
) -> str:
    res = pair.resident
    room_id = await create_room(
        res.pipe,
        RoomCreation(creator=ALICE_R, room_version=version, preset="private_chat", power_level_content_override=pl),
    )
    content = {"join_rule": rule, "allow": [{"type": "m.room_membership", "room_id": r} for r in allow]}
    await res.pipe.send(room_id, ALICE_R, "m.room.join_rules", content, "")
    return room_id


@pytest.mark.parametrize(("version", "rule"), [("8", "restricted"), ("10", "knock_restricted"), ("11", "restricted")])
async def test_our_user_joins_through_membership_of_an_allowed_room(pair: Pair, version: str, rule: str) -> None:
    allowed = await pair.room(version)
    room_id = await restricted_room(pair, version, [allowed], rule=rule)
    transport = Transport(pair)
    membership = remote(pair, transport)
    res, ours = pair.resident, pair.local
    with pytest.raises(MatrixError) as err:  # not in the allowed room yet: refused, nothing kept
        await membership.join(room_id, BOB_L, [RESIDENT])
    assert (err.value.status, err.value.errcode) == (403, "M_FORBIDDEN")
    assert ours.db.rooms.info(ours.db.ids.room(room_id) or 0) is None
    await membership.join(allowed, BOB_L, [RESIDENT])

    template = transport.resident.make(LOCAL, "join", room_id, BOB_L, [version])["event"]
    assert template["content"]["join_authorised_via_users_server"] == ALICE_R  # the most powerful
    joined = await membership.join(room_id, BOB_L, [RESIDENT])
    # the resident signed our join, and both servers keep that event, signatures and all
    kept, theirs = ours.event(joined.event_id), res.event(joined.event_id)
    assert kept == theirs and set(kept["signatures"]) == {LOCAL, RESIDENT}
    verify_event_signature(kept, res.rv(room_id), RESIDENT, await ours.keys(RESIDENT, []))
    assert kept["content"]["join_authorised_via_users_server"] == ALICE_R
    assert ours.current_state(room_id) == res.current_state(room_id)
    assert res.current_state(room_id)[("m.room.member", BOB_L)] == joined.event_id
    assert transport.forwarded[-1] == (joined.event_id, (LOCAL,))
    # a banned user meets the conditions still, and gets no template
    await res.pipe.send(room_id, ALICE_R, "m.room.member", {"membership": "ban"}, BOB_L)
    with pytest.raises(MatrixError) as err:
        transport.resident.make(LOCAL, "join", room_id, BOB_L, [version])
    assert (err.value.status, err.value.errcode) == (403, "M_FORBIDDEN")


async def test_an_invited_user_needs_no_authoriser(pair: Pair) -> None:
    room_id = await restricted_room(pair, "10", ["!elsewhere:nowhere.test"])
    await pair.resident.pipe.send(room_id, ALICE_R, "m.room.member", {"membership": "invite"}, BOB_L)
    transport = Transport(pair)
    template = transport.resident.make(LOCAL, "join", room_id, BOB_L, ["10"])["event"]
    assert "join_authorised_via_users_server" not in template["content"]
    joined = await remote(pair, transport).join(room_id, BOB_L, [RESIDENT])
    assert set(pair.resident.event(joined.event_id)["signatures"]) == {LOCAL}


async def test_an_allowed_room_the_resident_is_not_in_cannot_be_checked(pair: Pair) -> None:
    allowed = await pair.room("10")
    room_id = await restricted_room(pair, "10", ["!elsewhere:nowhere.test", allowed])
    transport = Transport(pair)
    with pytest.raises(MatrixError) as err:
        transport.resident.make(LOCAL, "join", room_id, BOB_L, ["10"])
    assert (err.value.status, err.value.errcode) == (400, "M_UNABLE_TO_AUTHORISE_JOIN")
    # passed on to the client when no other server can do better (spec: send_join 400)
    with pytest.raises(MatrixError) as err:
        await remote(pair, transport).join(room_id, BOB_L, ["down.test", RESIDENT])
    assert (err.value.status, err.value.errcode) == (400, "M_UNABLE_TO_AUTHORISE_JOIN")
    # a member of an allowed room the resident is in gets in all the same
    await remote(pair, transport).join(allowed, BOB_L, [RESIDENT])
    await remote(pair, transport).join(room_id, BOB_L, [RESIDENT])


async def test_no_member_who_may_invite_means_unable_to_grant(pair: Pair) -> None:
    allowed = await pair.room("10")
    pl = {"invite": 50, "users": {ALICE_R: 100}}
    room_id = await restricted_room(pair, "10", [allowed], pl=pl)
    res = pair.resident
    await res.pipe.send(room_id, ALICE_R, "m.room.power_levels", {"invite": 50, "users": {}}, "")
    transport = Transport(pair)
    await remote(pair, transport).join(allowed, BOB_L, [RESIDENT])
    with pytest.raises(MatrixError) as err:
        transport.resident.make(LOCAL, "join", room_id, BOB_L, ["10"])
    assert (err.value.status, err.value.errcode) == (400, "M_UNABLE_TO_GRANT_JOIN")


class Tries(Transport):
    """A first server that cannot authorise the join, then the resident; records who was asked."""

    def __init__(self, pair: Pair, errcode: str) -> None:
        super().__init__(pair)
        self.errcode = errcode
        self.asked: list[str] = []

    async def request(self, destination: str, method: str, path: str, **kw: Any) -> Any:
        self.asked.append(destination)
        if destination == "unable.test":
            raise FederationError(destination, 400, self.errcode, "try another server")
        return await super().request(destination, method, path, **kw)


@pytest.mark.parametrize("errcode", ["M_UNABLE_TO_AUTHORISE_JOIN", "M_UNABLE_TO_GRANT_JOIN"])
async def test_the_joining_server_tries_another_resident(pair: Pair, errcode: str) -> None:
    allowed = await pair.room("11")
    room_id = await restricted_room(pair, "11", [allowed])
    transport = Tries(pair, errcode)
    await remote(pair, transport).join(allowed, BOB_L, [RESIDENT])
    transport.asked.clear()
    joined = await remote(pair, transport).join(room_id, BOB_L, ["unable.test", RESIDENT])
    assert transport.asked[0] == "unable.test" and transport.asked[-1] == RESIDENT
    assert set(pair.local.event(joined.event_id)["signatures"]) == {LOCAL, RESIDENT}


async def test_send_join_checks_the_conditions_again(pair: Pair) -> None:
    """A server that skips make_join and names the resident's user itself is not signed for."""
    allowed = await pair.room("10")
    room_id = await restricted_room(pair, "10", [allowed])
    res = pair.resident
    join = pair.us.build(
        res,
        room_id,
        BOB_L,
        "m.room.member",
        {"membership": "join", "join_authorised_via_users_server": ALICE_R},
        state_key=BOB_L,
        prev=[only(res.extremities(room_id))],
    )
    transport = Transport(pair)
    join_id = compute_event_id(join, res.rv(room_id))
    with pytest.raises(MatrixError) as err:
        await transport.resident.send_join(LOCAL, room_id, join_id, copy.deepcopy(join))
    assert (err.value.status, err.value.errcode) == (403, "M_FORBIDDEN")
    assert res.db.ids.event(join_id) is None
    # a join naming a user of another server must carry that server's signature already
    forged = copy.deepcopy(join)
    forged["content"]["join_authorised_via_users_server"] = "@mallory:evil.test"
    pair.us.sign(forged, res.rv(room_id))
    with pytest.raises(MatrixError) as err:
        await transport.resident.send_join(LOCAL, room_id, compute_event_id(forged, res.rv(room_id)), forged)
    assert err.value.status == 400


class Swaps(Transport):
    """A resident that answers send_join with an event other than the one we sent."""

    async def request(self, destination: str, method: str, path: str, **kw: Any) -> Any:
        answer = await super().request(destination, method, path, **kw)
        if "send_join" in path:
            answer = {**answer, "event": {**answer["event"], "origin_server_ts": 1}}
        return answer


async def test_the_joining_server_keeps_only_its_own_event(pair: Pair) -> None:
    room_id = await pair.room("10")
    with pytest.raises(MatrixError) as err:
        await remote(pair, Swaps(pair)).join(room_id, BOB_L, [RESIDENT])
    assert err.value.status == 502
    assert pair.local.db.rooms.info(pair.local.db.ids.room(room_id) or 0) is None


async def test_in_the_room_but_no_member_of_ours_may_invite_joins_through_the_resident(pair: Pair) -> None:
    """spec: "Restricted rooms" — our server is in the room, but none of our members there may
    invite: the join goes through a resident that can authorise it (make_join / send_join)."""
    allowed = await pair.room("10")
    room_id = await restricted_room(pair, "10", [allowed], pl={"invite": 50, "users": {ALICE_R: 100}})
    res, ours = pair.resident, pair.local
    transport = Transport(pair)
    membership = remote(pair, transport)
    dan = f"@dan:{LOCAL}"
    await res.pipe.send(room_id, ALICE_R, "m.room.member", {"membership": "invite"}, dan)
    await membership.join(room_id, dan, [RESIDENT])  # our server is in the room now, through Dan
    await membership.join(allowed, BOB_L, [RESIDENT])
    queries = RoomQueries(LOCAL, ours.db.ids, ours.db.rooms, ours.db.events, ours.db.snapshots)
    rooms = Rooms(
        ours.db,
        ours.pipe,
        queries,
        default_room_version="10",
        profile_lookup=lambda user_id: None,
        account_lookup=lambda user_id: None,
        account_data=lambda user_id, kind: None,
        remote_rooms=membership,
    )
    assert rooms.membership.resident(queries.known_room(room_id))
    await rooms.membership.join(BOB_L, room_id)
    joined = ours.current_state(room_id)[("m.room.member", BOB_L)]
    assert res.current_state(room_id)[("m.room.member", BOB_L)] == joined
    event = ours.event(joined)
    assert event["content"]["join_authorised_via_users_server"] == ALICE_R
    assert set(event["signatures"]) == {LOCAL, RESIDENT}
    # without another server to ask, the local refusal stays a 403
    rooms.membership.remote = None
    fay = f"@fay:{LOCAL}"
    await rooms.membership.join(fay, allowed)
    with pytest.raises(MatrixError) as err:
        await rooms.membership.join(fay, room_id)
    assert (err.value.status, err.value.errcode) == (403, "M_FORBIDDEN") and "No member" in err.value.message
