"""Joining a room that lives on another server, and events whose state before them is supplied.

spec: server-server-api "Joining rooms" (the `send_join` answer: the state before the join and its
auth chain) and "Checks performed on receipt of a PDU". The resident server is a second `Local`
with its own store, so the room, its state and its auth chain are made by the real pipeline.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest

from homeserver.rooms.pipeline import EventPipeline, EventRefused, MissingEventsError
from storage.database import Database
from tests.rooms.remote import ALICE_R as ALICE
from tests.rooms.remote import BOB_L as BOB
from tests.rooms.remote import CAROL_R as CAROL
from tests.rooms.remote import RESIDENT, Pair, dump, msg


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_a_join_brings_the_room_whole_with_its_state(pair: Pair, version: str) -> None:
    room_id = await pair.room(version)
    join, state, auth_chain = await pair.send_join(room_id)
    ours = pair.local
    persisted = await ours.pipe.receive_join(room_id, version, join, state, auth_chain, ours.keys)
    assert persisted.rejected is None and persisted.stream > 0
    # the room's state here is the resident's, the join included
    assert ours.current_state(room_id) == pair.resident.current_state(room_id)
    assert ours.snapshot_state(room_id) == ours.current_state(room_id)
    assert set(ours.members(room_id, "join")) == {ALICE, CAROL, BOB}
    assert ours.timeline(room_id) == [persisted.event_id]  # the history before it is for backfill
    assert ours.extremities(room_id) == {persisted.event_id}
    for eid in pair.resident.state_before(persisted.event_id).values():  # the state came as outliers
        assert ours.meta(eid).outlier
    # the room goes on: the resident's next message is accepted on top of the join
    res = pair.resident
    reply = await res.pipe.send(room_id, CAROL, "m.room.message", msg("welcome"))
    got = await ours.pipe.receive(copy.deepcopy(res.event(reply.event_id)), ours.keys)
    assert got.rejected is None and not got.soft_failed
    assert ours.timeline(room_id) == [persisted.event_id, reply.event_id]
    # and our own events are built on it
    sent = await ours.pipe.send(room_id, BOB, "m.room.message", msg("hello"))
    prevs = ours.event(sent.event_id)["prev_events"]
    assert [p[0] if version == "1" else p for p in prevs] == [reply.event_id]


async def test_state_events_that_fail_their_checks_are_left_out(pair: Pair) -> None:
    room_id = await pair.room("10")
    join, state, auth_chain = await pair.send_join(room_id)
    # the room name with a forged signature: dropped, so the room has no name here
    forged = next(e for e in state if e["type"] == "m.room.name")
    forged["content"] = {"name": "Forged"}
    forged["hashes"] = {"sha256": forged["hashes"]["sha256"]}
    sig = forged["signatures"][RESIDENT]
    forged["signatures"] = {RESIDENT: {k: "A" * 86 for k in sig}}
    ours = pair.local
    persisted = await ours.pipe.receive_join(room_id, "10", join, state, auth_chain, ours.keys)
    assert persisted.rejected is None
    kinds = {k[0] for k in ours.current_state(room_id)}
    assert "m.room.name" not in kinds and "m.room.power_levels" in kinds


@pytest.mark.parametrize("problem", ["wrong version", "no create event", "banned", "other room"])
async def test_a_join_that_cannot_stand_writes_nothing(pair: Pair, problem: str) -> None:
    room_id = await pair.room("10")
    res = pair.resident
    if problem == "banned":
        # banned before the join is made: the resident would refuse it; a lying resident is refused here
        join, state, auth_chain = await pair.send_join(room_id)
        ban = await res.pipe.send(room_id, ALICE, "m.room.member", {"membership": "ban"}, BOB)
        ban_event = res.event(ban.event_id)
        state = [e for e in state if not (e["type"] == "m.room.member" and e["state_key"] == BOB)] + [ban_event]
        auth_chain = [*auth_chain, *(res.event(a) for a in ban_event["auth_events"])]
    else:
        join, state, auth_chain = await pair.send_join(room_id)
    version = "10"
    if problem == "wrong version":
        version = "9"
    elif problem == "no create event":
        state = [e for e in state if e["type"] != "m.room.create"]
    elif problem == "other room":
        join = {**join, "room_id": "!elsewhere:resident.test"}
    ours = pair.local
    before = dump(ours.db)
    with pytest.raises(EventRefused):
        await ours.pipe.receive_join(room_id, version, join, state, auth_chain, ours.keys)
    assert dump(ours.db) == before
    assert ours.db.ids.room(room_id) is None


async def test_an_event_with_supplied_state_after_a_gap(pair: Pair) -> None:
    """An event whose prev events we do not have: accepted with the state `/state_ids` gives."""
    room_id = await pair.room("10")
    join, state, auth_chain = await pair.send_join(room_id)
    ours, res = pair.local, pair.resident
    joined = await ours.pipe.receive_join(room_id, "10", join, state, auth_chain, ours.keys)
    # the resident goes on without us hearing: a topic change and messages we never receive
    await res.pipe.send(room_id, ALICE, "m.room.topic", {"topic": "missed"}, "")
    await res.pipe.send(room_id, CAROL, "m.room.message", msg("missed"))
    latest = await res.pipe.send(room_id, CAROL, "m.room.message", msg("after the gap"))
    pdu = copy.deepcopy(res.event(latest.event_id))
    with pytest.raises(MissingEventsError):
        await ours.pipe.receive(copy.deepcopy(pdu), ours.keys)
    state_ids = list(res.state_before(latest.event_id).values())
    # the topic is not here yet: it must be fetched (as an outlier) before the state can be used
    with pytest.raises(MissingEventsError) as missing:
        await ours.pipe.receive_with_state(copy.deepcopy(pdu), ours.keys, state_ids)
    topic_id = res.state_before(latest.event_id)[("m.room.topic", "")]
    assert missing.value.event_ids == [topic_id]
    await ours.pipe.receive_outlier(copy.deepcopy(res.event(topic_id)), ours.keys)
    got = await ours.pipe.receive_with_state(copy.deepcopy(pdu), ours.keys, state_ids)
    assert got.rejected is None and not got.soft_failed
    assert ours.current_state(room_id)[("m.room.topic", "")] == topic_id
    # the missed messages are a gap: nothing here says the join is an ancestor of the new event,
    # so both are forward extremities, and our next event merges them
    assert ours.extremities(room_id) == {joined.event_id, got.event_id}
    assert ours.timeline(room_id) == [joined.event_id, got.event_id]
    sent = await ours.pipe.send(room_id, BOB, "m.room.message", msg("caught up"))
    assert set(ours.event(sent.event_id)["prev_events"]) == {joined.event_id, got.event_id}
    assert ours.extremities(room_id) == {sent.event_id}
    assert ours.current_state(room_id)[("m.room.topic", "")] == topic_id


async def test_supplied_state_that_does_not_allow_the_event_rejects_it(pair: Pair) -> None:
    room_id = await pair.room("10")
    join, state, auth_chain = await pair.send_join(room_id)
    ours, res = pair.local, pair.resident
    await ours.pipe.receive_join(room_id, "10", join, state, auth_chain, ours.keys)
    latest = await res.pipe.send(room_id, CAROL, "m.room.message", msg("gap"))
    pdu = copy.deepcopy(res.event(latest.event_id))
    # a lying peer: the state it supplies leaves Carol out of the room
    state_ids = [e for k, e in res.state_before(latest.event_id).items() if k != ("m.room.member", CAROL)]
    got = await ours.pipe.receive_with_state(pdu, ours.keys, state_ids)
    assert got.rejected is not None
    assert ("m.room.member", CAROL) in ours.current_state(room_id)  # the current state is untouched


async def test_an_event_after_a_gap_with_the_states_after_its_missing_prevs(pair: Pair) -> None:
    """Our own message and the resident's history fork; the resident merges both: its event names
    one prev we have (ours) and one we never received; the states are resolved."""
    room_id = await pair.room("10")
    join, state, auth_chain = await pair.send_join(room_id)
    ours, res = pair.local, pair.resident
    await ours.pipe.receive_join(room_id, "10", join, state, auth_chain, ours.keys)
    mine = await ours.pipe.send(room_id, BOB, "m.room.message", msg("from our side"))
    topic = await res.pipe.send(room_id, ALICE, "m.room.topic", {"topic": "theirs"}, "")
    missed = await res.pipe.send(room_id, CAROL, "m.room.message", msg("missed"))
    assert (await res.pipe.receive(copy.deepcopy(ours.event(mine.event_id)), res.keys)).rejected is None
    merge = await res.pipe.send(room_id, CAROL, "m.room.message", msg("merged"))
    pdu = copy.deepcopy(res.event(merge.event_id))
    assert set(pdu["prev_events"]) == {missed.event_id, mine.event_id}
    states_after = {missed.event_id: list(res.state_after(missed.event_id).values())}
    with pytest.raises(MissingEventsError) as err:
        await ours.pipe.receive_after_gap(copy.deepcopy(pdu), ours.keys, states_after)
    assert err.value.event_ids == [topic.event_id]
    await ours.pipe.receive_outlier(copy.deepcopy(res.event(topic.event_id)), ours.keys)
    got = await ours.pipe.receive_after_gap(pdu, ours.keys, states_after)
    assert got.rejected is None and not got.soft_failed
    assert ours.current_state(room_id) == res.current_state(room_id)
    assert ours.extremities(room_id) == {got.event_id}  # our message was a prev: no longer a tip


async def test_a_join_larger_than_every_cache_lands_whole(pair: Pair) -> None:
    # Seen joining a 5,000-member room: the send_join answer made more ids in one batch than the
    # caches hold, and the join failed with 500. Smallest caches here, a few hundred members.
    room_id = await pair.room("10")
    res = pair.resident
    members = [f"@m{i}:{RESIDENT}" for i in range(300)]
    for user in members:
        await res.pipe.send(room_id, user, "m.room.member", {"membership": "join"}, user)
    join, state, auth_chain = await pair.send_join(room_id)
    ours = pair.local
    ours.db.close()
    ours.db = Database(ours.path, cache_mb=0)
    ours.pipe = EventPipeline(ours.db, ours.identity, clock=ours._seconds)
    persisted = await ours.pipe.receive_join(room_id, "10", join, state, auth_chain, ours.keys)
    assert persisted.rejected is None
    assert ours.current_state(room_id) == res.current_state(room_id)
    assert set(ours.members(room_id, "join")) == {ALICE, CAROL, BOB, *members}
