"""Invites across servers without HTTP: the inviting server prepares the invite, our server checks,
counter-signs and keeps it (the user sees it with the room's stripped state), then accepts by
joining or refuses by leaving through the resident.

spec: server-server-api "Inviting to a room", "Leaving rooms (rejecting invites)".
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.membership import RemoteMembership
from homeserver.protocol.event_ids import event_id
from homeserver.protocol.event_signing import verify_event_signature
from homeserver.protocol.room_versions import get_room_version
from homeserver.rooms.pipeline import EventRefused
from homeserver.rooms.stripped_state import STRIPPED_STATE_TYPES
from tests.federation.test_membership import Transport
from tests.rooms.remote import ALICE_R, BOB_L, LOCAL, RESIDENT, Pair, dump


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


def invite_state(pair: Pair, room_id: str) -> list[dict[str, object]]:
    res = pair.resident
    state = res.current_state(room_id)
    return [
        {k: res.event(state[(t, "")])[k] for k in ("type", "state_key", "sender", "content")}
        for t in STRIPPED_STATE_TYPES
        if (t, "") in state
    ]


async def test_an_invite_is_kept_counter_signed_and_accepted_by_joining(pair: Pair) -> None:
    room_id = await pair.room("10")
    res, ours = pair.resident, pair.local
    event, eid, rv = res.pipe.prepare_local(room_id, ALICE_R, "m.room.member", {"membership": "invite"}, BOB_L)
    signed, persisted = await ours.pipe.receive_invite(
        "10", copy.deepcopy(event), invite_state(pair, room_id), ours.keys
    )
    # both servers signed it; the inviting server accepts it into the room
    verify_event_signature(signed, rv, LOCAL, {ours.identity.key_id: ours.identity.signing_key.verify_key})
    assert set(signed["signatures"]) == {RESIDENT, LOCAL}
    accepted = await res.pipe.receive(copy.deepcopy(signed), res.keys)
    assert accepted.event_id == eid and accepted.rejected is None
    # our user sees it: membership "invite" at a new position, with the room's stripped state
    room = ours.db.ids.room(room_id)
    assert room is not None
    ur = ours.db.rooms.user_room(BOB_L, room)
    assert ur is not None and ur.membership == "invite" and ur.stream == persisted.stream > 0
    stripped = ours.db.rooms.invite_state(BOB_L, room)
    assert stripped is not None and {e["type"] for e in stripped} >= {"m.room.create", "m.room.name", "m.room.member"}
    assert stripped[-1]["state_key"] == BOB_L
    # accepting: a join through the inviting server
    membership = RemoteMembership(LOCAL, ours.pipe, Transport(pair), ours.keys)
    await membership.join(room_id, BOB_L, [RESIDENT])
    ur = ours.db.rooms.user_room(BOB_L, room)
    assert ur is not None and ur.membership == "join"
    assert BOB_L not in ours.members(room_id, "invite")  # no stale index from the invite
    assert BOB_L in ours.members(room_id, "join")


async def test_an_invite_refused_through_the_resident(pair: Pair) -> None:
    room_id = await pair.room("10")
    res, ours = pair.resident, pair.local
    event, _, _ = res.pipe.prepare_local(room_id, ALICE_R, "m.room.member", {"membership": "invite"}, BOB_L)
    signed, _ = await ours.pipe.receive_invite("10", event, [], ours.keys)
    await res.pipe.receive(copy.deepcopy(signed), res.keys)
    membership = RemoteMembership(LOCAL, ours.pipe, Transport(pair), ours.keys)
    leave = await membership.leave(room_id, BOB_L, [RESIDENT])
    persisted = await ours.pipe.record_remote_leave(leave, ours.rv_of_version("10"), _event_id(leave))
    room = ours.db.ids.room(room_id)
    assert room is not None
    ur = ours.db.rooms.user_room(BOB_L, room)
    assert ur is not None and ur.membership == "leave" and ur.stream == persisted.stream
    assert ours.db.rooms.invite_state(BOB_L, room) is None
    assert res.current_state(room_id)[("m.room.member", BOB_L)] == persisted.event_id


def _event_id(event: dict[str, object]) -> str:
    return event_id(event, get_room_version("10"))


@pytest.mark.parametrize("problem", ["not ours", "not an invite", "forged", "bad version", "tampered"])
async def test_bad_invites_are_refused_and_write_nothing(pair: Pair, problem: str) -> None:
    room_id = await pair.room("10")
    res, ours = pair.resident, pair.local
    target = "@bob:elsewhere.test" if problem == "not ours" else BOB_L
    membership = "join" if problem == "not an invite" else "invite"
    if problem == "not an invite":
        event = copy.deepcopy(res.event(res.current_state(room_id)[("m.room.member", ALICE_R)]))
    else:
        event, _, _ = res.pipe.prepare_local(room_id, ALICE_R, "m.room.member", {"membership": membership}, target)
    version = "10"
    if problem == "forged":
        event["signatures"] = {RESIDENT: {k: "A" * 86 for k in event["signatures"][RESIDENT]}}
    elif problem == "bad version":
        version = "999"
    elif problem == "tampered":
        event["content"] = {**event["content"], "displayname": "changed"}
    before = dump(ours.db)
    with pytest.raises(EventRefused):
        await ours.pipe.receive_invite(version, event, [], ours.keys)
    assert dump(ours.db) == before
