"""Joins across servers end to end without HTTP: the resident's make_join template, our signed join,
the resident's acceptance and send_join answer, our acceptance of the room's state.

spec: server-server-api "Joining rooms".
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from homeserver.errors import MatrixError
from homeserver.rooms.federation_reads import FederationReads
from homeserver.rooms.pipeline import EventRefused
from tests.rooms.remote import ALICE_R, BOB_L, CAROL_R, RESIDENT, Pair, msg


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


@pytest.mark.parametrize("version", ["1", "6", "10", "11", "12"])
async def test_make_join_sign_send_join(pair: Pair, version: str) -> None:
    room_id = await pair.room(version)
    res, ours = pair.resident, pair.local
    template, rv = res.pipe.membership_template(room_id, BOB_L, "join")
    assert rv.identifier == version and "hashes" not in template and "signatures" not in template
    event, eid = ours.pipe.sign_membership_template(copy.deepcopy(template), rv, room_id, BOB_L, "join")
    accepted = await res.pipe.receive(copy.deepcopy(event), res.keys)
    assert accepted.rejected is None and accepted.event_id == eid
    state, auth_chain = FederationReads(res.db, RESIDENT).join_answer(room_id, eid)
    joined = await ours.pipe.receive_join(room_id, version, event, state, auth_chain, ours.keys)
    assert joined.event_id == eid
    assert ours.current_state(room_id) == res.current_state(room_id)
    # messages flow both ways on top of it
    mine = await ours.pipe.send(room_id, BOB_L, "m.room.message", msg("hi"))
    assert (await res.pipe.receive(copy.deepcopy(ours.event(mine.event_id)), res.keys)).rejected is None
    theirs = await res.pipe.send(room_id, CAROL_R, "m.room.message", msg("hello"))
    assert (await ours.pipe.receive(copy.deepcopy(res.event(theirs.event_id)), ours.keys)).rejected is None


async def test_make_join_refuses_a_banned_user_and_an_invite_only_room(pair: Pair) -> None:
    room_id = await pair.room("10")
    res = pair.resident
    await res.pipe.send(room_id, ALICE_R, "m.room.member", {"membership": "ban"}, BOB_L)
    with pytest.raises(MatrixError) as err:
        res.pipe.membership_template(room_id, BOB_L, "join")
    assert err.value.errcode == "M_FORBIDDEN"
    other = "@dave:local.test"
    await res.pipe.send(room_id, ALICE_R, "m.room.join_rules", {"join_rule": "invite"}, "")
    with pytest.raises(MatrixError):
        res.pipe.membership_template(room_id, other, "join")
    # a leave template for someone who is not in the room is refused too
    with pytest.raises(MatrixError):
        res.pipe.membership_template(room_id, other, "leave")


@pytest.mark.parametrize(
    "change",
    [
        {"type": "m.room.message"},
        {"state_key": "@mallory:local.test"},
        {"sender": "@mallory:local.test"},
        {"content": {"membership": "ban"}},
        {"room_id": "!other:resident.test"},
        {"depth": "deep"},  # not a valid event once signed
        {"prev_events": "nope"},
    ],
)
async def test_a_template_that_is_not_what_we_asked_for_is_refused(pair: Pair, change: dict[str, object]) -> None:
    room_id = await pair.room("10")
    template, rv = pair.resident.pipe.membership_template(room_id, BOB_L, "join")
    with pytest.raises(EventRefused):
        pair.local.pipe.sign_membership_template({**template, **change}, rv, room_id, BOB_L, "join")
