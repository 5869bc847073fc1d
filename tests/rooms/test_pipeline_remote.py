"""Remote events through `EventPipeline.receive`: PDUs crafted and signed by other "servers".

spec: server-server-api "Checks performed on receipt of a PDU" — format, signatures, content hash,
auth against the event's auth events (reject), against the state before it (reject), against the
room's current state (soft-fail).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import orjson
import pytest

from homeserver.protocol.room_versions import get_room_version
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.rooms.pipeline import EventRefused, MissingEventsError, MissingStateError
from homeserver.state import resolve_state
from storage.codec import read_u64
from storage.events import EVENT_JSON, REDACTED
from tests.rooms.remote import LOCAL, Local, RemoteServer, dump, event_id_of

ALICE = f"@alice:{LOCAL}"
ERIN = "@erin:remote.test"
FRANK = "@frank:remote.test"
GUS = "@gus:other.test"


def msg(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body}


def only(items: set[str]) -> str:
    assert len(items) == 1, items
    return next(iter(items))


async def public_room(local: Local, version: str, joiners: list[str], levels: dict[str, int] | None = None) -> str:
    """A public room by alice, with power levels `levels` for others, that each of `joiners` joins remotely."""
    override = {"users": levels} if levels else None
    room_id = await create_room(
        local.pipe,
        RoomCreation(creator=ALICE, room_version=version, preset="public_chat", power_level_content_override=override),
    )
    for user in joiners:
        await remote_send(local, room_id, user, "m.room.member", {"membership": "join"}, state_key=user)
    return room_id


async def remote_send(
    local: Local, room_id: str, sender: str, event_type: str, content: dict[str, Any], **kwargs: Any
) -> str:
    """An accepted remote event on top of the room's only extremity."""
    server = local.remote(sender.split(":", 1)[1])
    kwargs.setdefault("prev", [only(local.extremities(room_id))])
    pdu = server.build(local, room_id, sender, event_type, content, **kwargs)
    ev = await local.pipe.receive(pdu, local.keys)
    assert ev.rejected is None and not ev.soft_failed, ev.rejected
    return ev.event_id


def all_events(local: Local) -> dict[str, dict[str, Any]]:
    """Every stored event, read straight from the table (not through the pipeline's caches)."""
    ids = local.db.ids
    return {ids.event_id(read_u64(k)): orjson.loads(v) for k, v in local.db.store.iterate(EVENT_JSON)}


# -- accepted events -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "3", "10", "12"])
async def test_remote_join_and_messages_are_accepted(local: Local, version: str) -> None:
    room_id = await public_room(local, version, [])
    remote = local.remote("remote.test")
    tip = only(local.extremities(room_id))
    pdu = remote.build(local, room_id, ERIN, "m.room.member", {"membership": "join"}, state_key=ERIN, prev=[tip])
    rv = get_room_version(version)
    join = await local.pipe.receive(pdu, local.keys)
    assert join.event_id == event_id_of(pdu, rv)
    assert join.rejected is None and not join.soft_failed and join.stream > 0
    assert join.state_changed == {("m.room.member", ERIN): join.event_id}
    assert local.extremities(room_id) == {join.event_id}
    assert local.timeline(room_id)[-1] == join.event_id
    assert local.members(room_id, "join").keys() == {ALICE, ERIN}
    assert local.db.rooms.servers(local.room_short(room_id)) == sorted([LOCAL, "remote.test"])
    # the stored event is the PDU as sent
    assert local.event(join.event_id) == pdu
    for i in range(3):
        eid = await remote_send(local, room_id, ERIN, "m.room.message", msg(f"m{i}"))
        assert local.extremities(room_id) == {eid}
    # a local reply follows the remote events
    reply = await local.pipe.send(room_id, ALICE, "m.room.message", msg("welcome"))
    assert local.extremities(room_id) == {reply.event_id}
    assert local.current_state(room_id) == local.snapshot_state(room_id) == local.state_after(reply.event_id)


# -- refused PDUs ----------------------------------------------------------------------------------


async def test_bad_signatures_and_formats_are_refused_and_write_nothing(local: Local) -> None:
    room_id = await public_room(local, "10", [ERIN])
    rv = get_room_version("10")
    remote = local.remote("remote.test")
    tip = only(local.extremities(room_id))

    def good() -> dict[str, Any]:
        return remote.build(local, room_id, ERIN, "m.room.message", msg("hi"), prev=[tip])

    impostor = RemoteServer("remote.test")  # same name, another key: not the key remote.test publishes
    forged = impostor.build(local, room_id, ERIN, "m.room.message", msg("hi"), prev=[tip])
    evil = RemoteServer("evil.test")
    local.remotes["evil.test"] = evil
    other_signer = evil.build(local, room_id, ERIN, "m.room.message", msg("hi"), prev=[tip])
    tampered_sig = good()
    sig = tampered_sig["signatures"]["remote.test"][remote.key_id]
    tampered_sig["signatures"]["remote.test"][remote.key_id] = ("A" if sig[0] != "A" else "B") + sig[1:]
    unsigned = good()
    unsigned["signatures"] = {}
    moved_ts = good()
    moved_ts["origin_server_ts"] += 1  # covered by the signature (it survives redaction)
    no_depth = good()
    del no_depth["depth"]
    long_type = remote.build(local, room_id, ERIN, "x" * 256, {}, prev=[tip])
    float_content = good()
    float_content["content"]["n"] = 1.5  # rooms v6+: strict canonical JSON
    too_many_auth = good()
    too_many_auth["auth_events"] = too_many_auth["auth_events"] * 4
    no_room = good()
    del no_room["room_id"]
    unknown_room = remote.build(local, room_id, ERIN, "m.room.message", msg("hi"), prev=[tip])
    unknown_room["room_id"] = "!unknown:remote.test"
    remote.sign(unknown_room, rv)
    cases = {
        "signed with a key remote.test does not have": forged,
        "signed only by another server": other_signer,
        "signature bytes changed": tampered_sig,
        "no signatures": unsigned,
        "signed field changed": moved_ts,
        "missing depth": no_depth,
        "type too long": long_type,
        "float in content": float_content,
        "too many auth events": too_many_auth,
        "no room id": no_room,
        "unknown room": unknown_room,
    }
    before = dump(local.db)
    for name, pdu in cases.items():
        with pytest.raises(EventRefused):
            await local.pipe.receive(pdu, local.keys)
        assert dump(local.db) == before, name
    # the untouched PDU is fine
    assert (await local.pipe.receive(good(), local.keys)).rejected is None


@pytest.mark.parametrize("version", ["1", "10"])
async def test_content_hash_mismatch_stores_the_redacted_event(local: Local, version: str) -> None:
    room_id = await public_room(local, version, [ERIN])
    rv = get_room_version(version)
    remote = local.remote("remote.test")
    tip = only(local.extremities(room_id))
    pdu = remote.build(local, room_id, ERIN, "m.room.message", msg("original"), prev=[tip])
    eid = event_id_of(pdu, rv)
    pdu["content"]["body"] = "tampered"  # not covered by the signature (redacted away), but by the hash
    ev = await local.pipe.receive(pdu, local.keys)
    assert ev.event_id == eid and ev.rejected is None
    stored = local.event(eid)
    assert stored["content"] == {}
    assert stored["hashes"] == pdu["hashes"] and stored["signatures"] == pdu["signatures"]
    assert local.meta(eid).flags & REDACTED
    assert local.extremities(room_id) == {eid}  # a redacted event is still a valid event
    # a member event keeps its membership when redacted
    tip = eid
    member = remote.build(
        local,
        room_id,
        ERIN,
        "m.room.member",
        {"membership": "join", "displayname": "Erin"},
        state_key=ERIN,
        prev=[tip],
    )
    member["content"]["displayname"] = "Mallory"
    ev = await local.pipe.receive(member, local.keys)
    assert local.event(ev.event_id)["content"] == {"membership": "join"}
    assert local.members(room_id, "join")[ERIN] == ev.event_id


async def test_unknown_prev_or_auth_events_raise_missing_events(local: Local) -> None:
    room_id = await public_room(local, "10", [ERIN])
    remote = local.remote("remote.test")
    tip = only(local.extremities(room_id))
    # an event the local server never saw, and one that follows it
    unseen = remote.build(local, room_id, ERIN, "m.room.message", msg("unseen"), prev=[tip])
    unseen_id = event_id_of(unseen, get_room_version("10"))
    state = local.state_after(tip)
    auth = [state[("m.room.create", "")], state[("m.room.power_levels", "")], state[("m.room.member", ERIN)]]
    child = remote.build(local, room_id, ERIN, "m.room.message", msg("child"), prev=[tip], auth=auth)
    child["prev_events"] = [unseen_id]
    remote.sign(child, get_room_version("10"))
    before = dump(local.db)
    with pytest.raises(MissingEventsError) as err:
        await local.pipe.receive(child, local.keys)
    assert err.value.event_ids == [unseen_id]
    bad_auth = remote.build(local, room_id, ERIN, "m.room.message", msg("x"), prev=[tip], auth=[*auth[:2], unseen_id])
    with pytest.raises(MissingEventsError) as err:
        await local.pipe.receive(bad_auth, local.keys)
    assert err.value.event_ids == [unseen_id]
    assert dump(local.db) == before
    # once the missing event arrives, its child is accepted on top of it
    await local.pipe.receive(unseen, local.keys)
    ev = await local.pipe.receive(child, local.keys)
    assert ev.rejected is None and local.extremities(room_id) == {ev.event_id}


# -- rejected and soft-failed events ---------------------------------------------------------------


async def test_events_failing_their_auth_events_are_stored_rejected(local: Local) -> None:
    room_id = await public_room(local, "10", [ERIN])
    remote = local.remote("remote.test")
    tip = only(local.extremities(room_id))
    state = local.current_state(room_id)
    before_state = dict(state)

    async def rejected(pdu: dict[str, Any]) -> str:
        ev = await local.pipe.receive(pdu, local.keys)
        assert ev.rejected is not None and ev.stream == 0
        meta = local.meta(ev.event_id)
        assert meta.rejected and meta.stream == 0
        assert local.db.events.rejection_reason(ev.short) == ev.rejected
        assert ev.event_id not in local.timeline(room_id)
        assert local.extremities(room_id) == {tip}
        assert local.current_state(room_id) == before_state
        # receiving it again gives the same answer and writes nothing
        again_before = dump(local.db)
        again = await local.pipe.receive(pdu, local.keys)
        assert (again.event_id, again.rejected) == (ev.event_id, ev.rejected)
        assert dump(local.db) == again_before
        return ev.event_id

    # frank never joined: his auth events hold no membership for him
    await rejected(remote.build(local, room_id, FRANK, "m.room.message", msg("hi"), prev=[tip]))
    # erin's power (0) is below what the topic needs (50)
    await rejected(remote.build(local, room_id, ERIN, "m.room.topic", {"topic": "x"}, state_key="", prev=[tip]))
    # erin gives herself power: rejected; then an event that names that rejected event as an auth event
    pl = local.event(state[("m.room.power_levels", "")])["content"]
    bad_pl = await rejected(
        remote.build(
            local, room_id, ERIN, "m.room.power_levels", {**pl, "users": {ERIN: 100}}, state_key="", prev=[tip]
        )
    )
    auth = [state[("m.room.create", "")], bad_pl, state[("m.room.member", ERIN)]]
    await rejected(remote.build(local, room_id, ERIN, "m.room.message", msg("x"), prev=[tip], auth=auth))
    # spec: auth rules 2.1-2.2 — an auth event the selection does not pick, or the same key twice
    base = [state[("m.room.create", "")], state[("m.room.power_levels", "")], state[("m.room.member", ERIN)]]
    extra = [*base, state[("m.room.join_rules", "")]]
    await rejected(remote.build(local, room_id, ERIN, "m.room.message", msg("x"), prev=[tip], auth=extra))
    twice = [*base, state[("m.room.member", ERIN)]]
    await rejected(remote.build(local, room_id, ERIN, "m.room.message", msg("x"), prev=[tip], auth=twice))
    # an auth event from another room (spec: auth rule 2.5 / "belongs to another room")
    other = await public_room(local, "10", [ERIN])
    other_join = local.current_state(other)[("m.room.member", ERIN)]
    foreign = [*base[:2], other_join]
    await rejected(remote.build(local, room_id, ERIN, "m.room.message", msg("x"), prev=[tip], auth=foreign))
    # an accepted event may follow a rejected one: it is placed beside the room's extremity
    ev = await local.pipe.receive(
        remote.build(local, room_id, ERIN, "m.room.message", msg("after"), prev=[bad_pl], auth=base), local.keys
    )
    assert ev.rejected is None
    assert local.extremities(room_id) == {tip, ev.event_id}
    assert local.state_before(ev.event_id) == local.state_before(bad_pl) == before_state


async def test_events_failing_the_state_before_them_are_rejected(local: Local) -> None:
    room_id = await public_room(local, "10", [ERIN])
    remote = local.remote("remote.test")
    join = only(local.extremities(room_id))
    ban = await local.pipe.send(room_id, ALICE, "m.room.member", {"membership": "ban"}, ERIN)
    # erin's event follows the ban, but cites her old join as its auth event: fine by its auth
    # events, refused by the state before it
    state = local.state_after(join)
    auth = [state[("m.room.create", "")], state[("m.room.power_levels", "")], join]
    pdu = remote.build(local, room_id, ERIN, "m.room.message", msg("still here?"), prev=[ban.event_id], auth=auth)
    ev = await local.pipe.receive(pdu, local.keys)
    assert ev.rejected is not None and not ev.soft_failed
    assert local.extremities(room_id) == {ban.event_id}
    assert ev.event_id not in local.timeline(room_id)


async def test_soft_fail_when_the_current_state_forbids_it(local: Local) -> None:
    room_id = await public_room(local, "10", [ERIN], levels={ERIN: 50})
    remote = local.remote("remote.test")
    join = only(local.extremities(room_id))
    ban = await local.pipe.send(room_id, ALICE, "m.room.member", {"membership": "ban"}, ERIN)
    state_now = local.current_state(room_id)
    # erin had not seen the ban: her events follow her join, allowed by the state there
    message = remote.build(local, room_id, ERIN, "m.room.message", msg("concurrent"), prev=[join])
    ev = await local.pipe.receive(message, local.keys)
    assert ev.rejected is None and ev.soft_failed and ev.stream == 0
    meta = local.meta(ev.event_id)
    assert meta.soft_failed and not meta.rejected
    assert ev.event_id not in local.timeline(room_id)
    assert local.extremities(room_id) == {ban.event_id}
    topic = remote.build(local, room_id, ERIN, "m.room.topic", {"topic": "sneaky"}, state_key="", prev=[join])
    ev2 = await local.pipe.receive(topic, local.keys)
    assert ev2.soft_failed
    assert local.current_state(room_id) == state_now  # a soft-failed state event changes nothing
    assert local.state_after(ev2.event_id)[("m.room.topic", "")] == ev2.event_id  # but has a state after it
    assert local.members(room_id, "ban").keys() == {ERIN}
    # the next local event does not build on the soft-failed ones
    reply = await local.pipe.send(room_id, ALICE, "m.room.message", msg("bye"))
    assert [p for p in local.event(reply.event_id)["prev_events"]] == [ban.event_id]
    # soft-failed events are not received twice either
    again = await local.pipe.receive(message, local.keys)
    assert again.soft_failed and again.short == ev.short


# -- a forked graph ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_forked_graph_from_two_servers_is_resolved_and_merged(local: Local, version: str) -> None:
    rv = get_room_version(version)
    room_id = await public_room(local, version, [ERIN, GUS], levels={ERIN: 50, GUS: 50})
    fork = only(local.extremities(room_id))
    remote, other = local.remote("remote.test"), local.remote("other.test")
    # two branches from the same event, received interleaved
    a1 = remote.build(local, room_id, ERIN, "m.room.name", {"name": "from remote"}, state_key="", prev=[fork])
    b1 = other.build(local, room_id, GUS, "m.room.name", {"name": "from other"}, state_key="", prev=[fork])
    await local.pipe.receive(a1, local.keys)
    ev_b1 = await local.pipe.receive(b1, local.keys)
    assert not ev_b1.soft_failed and ev_b1.rejected is None
    a1_id, b1_id = event_id_of(a1, rv), event_id_of(b1, rv)
    assert local.extremities(room_id) == {a1_id, b1_id}
    a2 = remote.build(local, room_id, ERIN, "m.room.message", msg("a2"), prev=[a1_id])
    b2 = other.build(local, room_id, GUS, "m.room.topic", {"topic": "from other"}, state_key="", prev=[b1_id])
    await local.pipe.receive(a2, local.keys)
    await local.pipe.receive(b2, local.keys)
    tips = {event_id_of(a2, rv), event_id_of(b2, rv)}
    assert local.extremities(room_id) == tips
    # the current state is the resolution of the states after both tips
    events = all_events(local)
    expected = resolve_state(rv, [local.state_after(t) for t in sorted(tips)], events)
    assert local.current_state(room_id) == expected == local.snapshot_state(room_id)
    assert expected[("m.room.topic", "")] == event_id_of(b2, rv)
    assert expected[("m.room.name", "")] in (a1_id, b1_id)
    # a remote event that merges both branches leaves one extremity
    merge_auth = [
        expected[k]
        for k in (("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.member", ERIN))
        if not (rv.room_id_from_create_event and k[0] == "m.room.create")
    ]
    merge = remote.build(local, room_id, ERIN, "m.room.message", msg("merged"), prev=sorted(tips), auth=merge_auth)
    merged = await local.pipe.receive(merge, local.keys)
    assert merged.rejected is None and not merged.soft_failed
    assert local.extremities(room_id) == {merged.event_id}
    assert local.state_before(merged.event_id) == expected == local.current_state(room_id)
    # a new fork, merged this time by a local event
    c1 = remote.build(local, room_id, ERIN, "m.room.topic", {"topic": "c1"}, state_key="", prev=[merged.event_id])
    d1 = other.build(local, room_id, GUS, "m.room.message", msg("d1"), prev=[merged.event_id])
    await asyncio.gather(local.pipe.receive(c1, local.keys), local.pipe.receive(d1, local.keys))
    assert len(local.extremities(room_id)) == 2
    reply = await local.pipe.send(room_id, ALICE, "m.room.message", msg("merged locally"))
    assert local.extremities(room_id) == {reply.event_id}
    prevs = {p if isinstance(p, str) else p[0] for p in local.event(reply.event_id)["prev_events"]}
    assert prevs == {event_id_of(c1, rv), event_id_of(d1, rv)}
    assert local.current_state(room_id)[("m.room.topic", "")] == event_id_of(c1, rv)
    assert local.db.rooms.servers(local.room_short(room_id)) == sorted([LOCAL, "other.test", "remote.test"])


async def test_state_resolution_that_drops_a_member_updates_the_membership_indexes(local: Local) -> None:
    # gus (other.test, power 100) makes the room invite-only on one branch while frank joins on the
    # other: resolution applies the join rule first and frank's join fails, so frank leaves the state
    room_id = await public_room(local, "10", [GUS], levels={GUS: 100})
    fork = only(local.extremities(room_id))
    join = local.remote("remote.test").build(
        local, room_id, FRANK, "m.room.member", {"membership": "join"}, state_key=FRANK, prev=[fork]
    )
    joined = await local.pipe.receive(join, local.keys)
    assert local.members(room_id, "join").keys() == {ALICE, GUS, FRANK}
    assert "remote.test" in local.db.rooms.servers(local.room_short(room_id))
    # (sent after the public join rule by the clock, so that the power ordering applies it last)
    later = local.event(local.current_state(room_id)[("m.room.join_rules", "")])["origin_server_ts"] + 1000
    invite_only = local.remote("other.test").build(
        local, room_id, GUS, "m.room.join_rules", {"join_rule": "invite"}, state_key="", prev=[fork], ts=later
    )
    ev = await local.pipe.receive(invite_only, local.keys)
    assert ev.rejected is None and not ev.soft_failed
    assert local.extremities(room_id) == {joined.event_id, ev.event_id}
    state = local.current_state(room_id)
    assert ("m.room.member", FRANK) not in state
    assert local.members(room_id, "join").keys() == {ALICE, GUS}
    assert local.db.rooms.user_room(FRANK, local.room_short(room_id)) is None
    assert local.db.rooms.servers(local.room_short(room_id)) == sorted([LOCAL, "other.test"])


async def test_receiving_twice_is_idempotent(local: Local) -> None:
    room_id = await public_room(local, "10", [ERIN])
    remote = local.remote("remote.test")
    pdu = remote.build(local, room_id, ERIN, "m.room.message", msg("once"), prev=[only(local.extremities(room_id))])
    first, second = await asyncio.gather(
        local.pipe.receive(copy.deepcopy(pdu), local.keys), local.pipe.receive(copy.deepcopy(pdu), local.keys)
    )
    assert (first.short, first.stream) == (second.short, second.stream)
    before = dump(local.db)
    third = await local.pipe.receive(copy.deepcopy(pdu), local.keys)
    assert (third.short, third.stream, third.event_id) == (first.short, first.stream, first.event_id)
    assert dump(local.db) == before
    assert local.timeline(room_id).count(first.event_id) == 1


async def test_prev_events_of_another_room_are_refused(local: Local) -> None:
    room_id = await public_room(local, "10", [ERIN])
    other = await public_room(local, "10", [ERIN])
    remote = local.remote("remote.test")
    state = local.current_state(room_id)
    auth = [state[("m.room.create", "")], state[("m.room.power_levels", "")], state[("m.room.member", ERIN)]]
    pdu = remote.build(
        local, room_id, ERIN, "m.room.message", msg("x"), prev=[only(local.extremities(other))], auth=auth
    )
    before = dump(local.db)
    with pytest.raises(EventRefused):
        await local.pipe.receive(pdu, local.keys)
    assert dump(local.db) == before


async def test_a_second_create_event_is_rejected(local: Local) -> None:
    room_id = await public_room(local, "10", [])
    # only the room's own server could sign it: an echo of our own key stands in for it
    twin = RemoteServer(LOCAL, local.identity.key_id, local.identity.signing_key)
    # (a content of its own: built in the same millisecond as the room's, it would be the same event)
    content = {"creator": ALICE, "room_version": "10", "twin": True}
    create = twin.build(local, room_id, ALICE, "m.room.create", content, state_key="", prev=[], auth=[])
    ev = await local.pipe.receive(create, local.keys)
    assert ev.rejected is not None
    assert len(local.extremities(room_id)) == 1
    assert local.current_state(room_id)[("m.room.create", "")] == local.timeline(room_id)[0]


async def test_more_than_twenty_extremities_are_merged_twenty_at_a_time(local: Local) -> None:
    room_id = await public_room(local, "10", [ERIN])
    remote = local.remote("remote.test")
    fork = only(local.extremities(room_id))
    for i in range(25):
        pdu = remote.build(local, room_id, ERIN, "m.room.message", msg(str(i)), prev=[fork])
        await local.pipe.receive(pdu, local.keys)
    assert len(local.extremities(room_id)) == 25
    first = await local.pipe.send(room_id, ALICE, "m.room.message", msg("merge 20"))
    assert len(local.event(first.event_id)["prev_events"]) == 20  # spec: at most 20 prev_events
    assert len(local.extremities(room_id)) == 6
    second = await local.pipe.send(room_id, ALICE, "m.room.message", msg("merge the rest"))
    assert len(local.event(second.event_id)["prev_events"]) == 6
    assert local.extremities(room_id) == {second.event_id}


# -- outliers --------------------------------------------------------------------------------------


async def test_an_event_after_an_outlier_is_never_checked_against_an_empty_state(local: Local) -> None:
    room_id = await public_room(local, "10", [ERIN])
    remote = local.remote("remote.test")
    tip = only(local.extremities(room_id))
    # an event fetched on its own (for its auth chain, say): an outlier, outside timeline and state
    fetched = remote.build(local, room_id, ERIN, "m.room.message", msg("fetched"), prev=[tip])
    outlier = await local.pipe.receive_outlier(fetched, local.keys)
    assert outlier.rejected is None and outlier.stream == 0
    assert local.meta(outlier.event_id).outlier
    assert outlier.event_id not in local.timeline(room_id) and local.extremities(room_id) == {tip}
    assert (await local.pipe.receive_outlier(fetched, local.keys)).event_id == outlier.event_id  # once only
    # an event on top of it: the state before it is unknown here, so it is not judged (not rejected)
    state = local.state_after(tip)
    auth = [state[("m.room.create", "")], state[("m.room.power_levels", "")], state[("m.room.member", ERIN)]]
    child = remote.build(local, room_id, ERIN, "m.room.message", msg("child"), prev=[outlier.event_id], auth=auth)
    before = dump(local.db)
    with pytest.raises(MissingStateError) as err:
        await local.pipe.receive(child, local.keys)
    assert err.value.event_ids == [outlier.event_id]
    assert dump(local.db) == before
    # once the outlier is received for the timeline (with the state after its prev), the child follows
    accepted = await local.pipe.receive(fetched, local.keys)
    assert accepted.rejected is None and accepted.stream > 0 and not local.meta(accepted.event_id).outlier
    ev = await local.pipe.receive(child, local.keys)
    assert ev.rejected is None and local.extremities(room_id) == {ev.event_id}


async def test_an_outlier_is_checked_against_its_own_auth_events(local: Local) -> None:
    room_id = await public_room(local, "10", [])
    remote = local.remote("remote.test")
    tip = only(local.extremities(room_id))
    # ERIN never joined: her message's auth events cannot allow it
    pdu = remote.build(local, room_id, ERIN, "m.room.message", msg("not a member"), prev=[tip])
    ev = await local.pipe.receive_outlier(pdu, local.keys)
    assert ev.rejected is not None and local.meta(ev.event_id).outlier
    assert local.extremities(room_id) == {tip}
