"""The event pipeline on a real store: local events on a linear timeline, membership indexes, auth
failures that write nothing, and room creation in every room version. Remote events are in
`test_pipeline_remote.py`."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.errors import MatrixError
from homeserver.protocol.canonical_json import encode_for_room
from homeserver.protocol.event_format import check_pdu_format
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.event_signing import verify_event_signature
from homeserver.protocol.hashes import check_content_hash
from homeserver.protocol.room_versions import get_room_version
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.rooms.pipeline import EventPipeline
from tests.rooms.remote import LOCAL, Local, dump

ALICE = f"@alice:{LOCAL}"
BOB = f"@bob:{LOCAL}"
CAROL = f"@carol:{LOCAL}"
DAVE = f"@dave:{LOCAL}"
ALL_VERSIONS = [str(v) for v in range(1, 13)]


def msg(body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body}


async def new_room(local: Local, version: str = "10", **kwargs: Any) -> str:
    return await create_room(local.pipe, RoomCreation(creator=ALICE, room_version=version, **kwargs))


def replay_state(local: Local, room_id: str) -> dict[tuple[str, str], str]:
    """The state after the timeline, by applying its state events in order (valid on a linear timeline)."""
    state: dict[tuple[str, str], str] = {}
    for eid in local.timeline(room_id):
        ev = local.event(eid)
        if isinstance(ev.get("state_key"), str):
            state[(ev["type"], ev["state_key"])] = eid
    return state


# -- a linear timeline ---------------------------------------------------------------------------


async def test_linear_timeline_keeps_state_extremities_and_order(local: Local) -> None:
    room_id = await new_room(local, "10", preset="public_chat", name="first")
    created = local.timeline(room_id)
    sent: list[str] = []
    plan: list[tuple[str, dict[str, Any], str | None]] = [
        ("m.room.message", msg("one"), None),
        ("m.room.topic", {"topic": "hello"}, ""),
        ("m.room.message", msg("two"), None),
        ("m.room.name", {"name": "second"}, ""),
        ("org.example.custom", {"k": 1}, "some key"),
        ("m.room.message", msg("three"), None),
        ("m.room.name", {"name": "third"}, ""),
    ]
    previous = created[-1]
    for event_type, content, state_key in plan:
        ev = await local.pipe.send(room_id, ALICE, event_type, content, state_key)
        sent.append(ev.event_id)
        assert local.extremities(room_id) == {ev.event_id}
        assert local.timeline(room_id) == created + sent
        pdu = local.event(ev.event_id)
        assert [r if isinstance(r, str) else r[0] for r in pdu["prev_events"]] == [previous]
        assert pdu["depth"] == local.event(previous)["depth"] + 1
        # the state before an event is the state after its prev event
        assert local.meta(ev.event_id).state_before == local.meta(previous).state_after
        expected = replay_state(local, room_id)
        assert local.current_state(room_id) == expected
        assert local.snapshot_state(room_id) == expected
        assert local.state_after(ev.event_id) == expected
        if state_key is not None:
            assert ev.state_changed == {(event_type, state_key): ev.event_id}
        else:
            assert ev.state_changed == {}
        previous = ev.event_id
    streams = [local.meta(e).stream for e in created + sent]
    assert streams == sorted(streams) and len(set(streams)) == len(streams)
    assert local.db.store.counter.visible == streams[-1]
    # everything survives a reopen, caches cold
    local.reopen()
    assert local.timeline(room_id) == created + sent
    assert local.current_state(room_id) == replay_state(local, room_id)
    ev = await local.pipe.send(room_id, ALICE, "m.room.message", msg("after reopen"))
    assert local.extremities(room_id) == {ev.event_id}
    assert local.meta(ev.event_id).stream > streams[-1]


async def test_membership_indexes_follow_every_membership(local: Local) -> None:
    room_id = await new_room(local, "10", preset="private_chat", invite=[BOB])
    room = local.room_short(room_id)
    db = local.db

    def user_room(user: str) -> tuple[str, str] | None:
        ur = db.rooms.user_room(user, room)
        return (ur.membership, db.ids.event_id(ur.event)) if ur else None

    def servers() -> set[tuple[bytes, ...]]:
        from storage.rooms import ROOM_SERVERS

        return {tuple(k[8:].split(b"\xff")) for k in db.store.keys(ROOM_SERVERS, room.to_bytes(8, "big"))}

    invite_id = local.members(room_id, "invite")[BOB]
    assert local.members(room_id, "join") == {ALICE: local.current_state(room_id)[("m.room.member", ALICE)]}
    assert user_room(BOB) == ("invite", invite_id)
    assert servers() == {(LOCAL.encode(), ALICE.encode())}

    join = await local.pipe.send(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    assert local.members(room_id, "invite") == {}
    assert local.members(room_id, "join")[BOB] == join.event_id
    assert user_room(BOB) == ("join", join.event_id)
    assert db.rooms.user_room(BOB, room).stream == join.stream  # type: ignore[union-attr]
    assert servers() == {(LOCAL.encode(), ALICE.encode()), (LOCAL.encode(), BOB.encode())}
    assert db.rooms.servers(room) == [LOCAL]

    leave = await local.pipe.send(room_id, BOB, "m.room.member", {"membership": "leave"}, BOB)
    assert BOB not in local.members(room_id, "join")
    assert local.members(room_id, "leave") == {BOB: leave.event_id}
    assert user_room(BOB) == ("leave", leave.event_id)
    assert servers() == {(LOCAL.encode(), ALICE.encode())}

    ban = await local.pipe.send(room_id, ALICE, "m.room.member", {"membership": "ban"}, CAROL)
    assert local.members(room_id, "ban") == {CAROL: ban.event_id}
    assert user_room(CAROL) == ("ban", ban.event_id)
    with pytest.raises(MatrixError) as err:
        await local.pipe.send(room_id, CAROL, "m.room.member", {"membership": "join"}, CAROL)
    assert err.value.status == 403

    # knocking: join rule "knock" (room versions 7+), then an invite after the knock, then the join
    await local.pipe.send(room_id, ALICE, "m.room.join_rules", {"join_rule": "knock"}, "")
    knock = await local.pipe.send(room_id, DAVE, "m.room.member", {"membership": "knock"}, DAVE)
    assert local.members(room_id, "knock") == {DAVE: knock.event_id}
    assert user_room(DAVE) == ("knock", knock.event_id)
    invite = await local.pipe.send(room_id, ALICE, "m.room.member", {"membership": "invite"}, DAVE)
    assert local.members(room_id, "knock") == {}
    assert user_room(DAVE) == ("invite", invite.event_id)
    await local.pipe.send(room_id, DAVE, "m.room.member", {"membership": "join"}, DAVE)
    assert set(local.members(room_id, "join")) == {ALICE, DAVE}

    # a user from another server joins over federation: room_servers lists its server
    await local.pipe.send(room_id, ALICE, "m.room.join_rules", {"join_rule": "public"}, "")
    erin = "@erin:remote.test"
    remote = local.remote("remote.test")
    tip = next(iter(local.extremities(room_id)))
    pdu = remote.build(local, room_id, erin, "m.room.member", {"membership": "join"}, state_key=erin, prev=[tip])
    joined = await local.pipe.receive(pdu, local.keys)
    assert joined.rejected is None and not joined.soft_failed
    assert user_room(erin) == ("join", joined.event_id)
    assert db.rooms.servers(room) == [LOCAL, "remote.test"]
    kick = await local.pipe.send(room_id, ALICE, "m.room.member", {"membership": "leave"}, erin)
    assert user_room(erin) == ("leave", kick.event_id)
    assert db.rooms.servers(room) == [LOCAL]
    # user_rooms lists every room of a user with its latest membership
    other = await new_room(local, "10", preset="public_chat")
    assert {(db.ids.room_id(ur.room), ur.membership) for ur in db.rooms.user_rooms(ALICE)} == {
        (room_id, "join"),
        (other, "join"),
    }
    assert [(db.ids.room_id(ur.room), ur.membership) for ur in db.rooms.user_rooms(DAVE)] == [(room_id, "join")]


async def test_state_changes_cost_about_their_size_in_a_large_room(local: Local) -> None:
    many = [{"type": "org.example.big", "state_key": str(i), "content": {"i": i}} for i in range(400)]
    room_id = await new_room(local, "10", initial_state=many)
    stored = 0
    for i in range(60):
        ev = await local.pipe.send(room_id, ALICE, "org.example.big", {"i": -i}, str(i % 7))
        stored += local.db.snapshots.stored_entries(local.meta(ev.event_id).state_after)
        await local.pipe.send(room_id, ALICE, "m.room.message", msg(str(i)))
    assert stored / 60 < 8  # entries per change; a full copy would be 400+
    assert local.current_state(room_id) == replay_state(local, room_id)


# -- auth failures write nothing -----------------------------------------------------------------


async def test_forbidden_local_events_are_403_and_write_nothing(local: Local) -> None:
    room_id = await new_room(local, "10", preset="private_chat", invite=[BOB])
    await local.pipe.send(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    before = dump(local.db)
    counter = local.db.store.counter.high
    forbidden: list[tuple[str, str, dict[str, Any], str | None]] = [
        (CAROL, "m.room.message", msg("not a member"), None),  # sender not joined
        (BOB, "m.room.name", {"name": "x"}, ""),  # below state_default
        (BOB, "m.room.power_levels", {"users": {BOB: 100}}, ""),  # raising oneself
        (CAROL, "m.room.member", {"membership": "join"}, CAROL),  # invite-only room, no invite
        (CAROL, "m.room.member", {"membership": "invite"}, DAVE),  # inviter not in the room
        (BOB, "m.room.member", {"membership": "ban"}, ALICE),  # bob can't ban
        (BOB, "m.room.member", {"membership": "join"}, ALICE),  # joining for someone else
        (BOB, "m.room.topic", {"topic": "x"}, BOB),  # ok level? no: state_default 50
        (ALICE, "m.room.create", {"room_version": "10"}, ""),  # a second create event
    ]
    for sender, event_type, content, state_key in forbidden:
        with pytest.raises(MatrixError) as err:
            await local.pipe.send(room_id, sender, event_type, content, state_key)
        assert (err.value.status, err.value.errcode) == (403, "M_FORBIDDEN"), (event_type, err.value)
    # content that is not canonical JSON is a bad request, also without a trace
    for bad_content in ({"body": 1.5}, {"n": 2**60}):
        with pytest.raises(MatrixError) as err:
            await local.pipe.send(room_id, ALICE, "m.room.message", bad_content)
        assert err.value.status == 400
    with pytest.raises(MatrixError) as err:
        await local.pipe.send(room_id, ALICE, "x" * 256, {}, "")
    assert (err.value.status, err.value.errcode) == (413, "M_TOO_LARGE")
    with pytest.raises(MatrixError) as err:
        await local.pipe.send(room_id, ALICE, "m.room.name", {"name": "n"}, "é" * 128)
    assert err.value.status == 413
    with pytest.raises(MatrixError) as err:
        await local.pipe.send(room_id, ALICE, "m.room.message", {"body": "x" * 70_000})
    assert err.value.status == 413
    assert dump(local.db) == before
    # nothing is left in memory either: ids and counts handed out for the failed events are unused
    assert local.db.store.counter.visible == counter
    ok = await local.pipe.send(room_id, BOB, "m.room.message", msg("allowed"))
    assert ok.stream > counter
    local.reopen()
    assert local.timeline(room_id)[-1] == ok.event_id
    with pytest.raises(MatrixError):
        await local.pipe.send("!nope:hs.test", ALICE, "m.room.message", msg("x"))


# -- room creation -------------------------------------------------------------------------------


def _types(local: Local, room_id: str) -> list[tuple[str, str | None]]:
    return [(local.event(e)["type"], local.event(e).get("state_key")) for e in local.timeline(room_id)]


def _content(local: Local, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any]:
    content: dict[str, Any] = local.event(local.current_state(room_id)[(event_type, state_key)])["content"]
    return content


@pytest.mark.parametrize("version", ALL_VERSIONS)
async def test_create_room_in_every_version(local: Local, version: str) -> None:
    rv = get_room_version(version)
    room_id = await new_room(
        local,
        version,
        preset="public_chat",
        name="Room",
        topic="About",
        invite=[BOB],
        is_direct=True,
        creation_content={"m.federate": True},
    )
    timeline = local.timeline(room_id)
    create = local.event(timeline[0])
    assert create["type"] == "m.room.create" and create["content"]["room_version"] == version
    assert create["content"]["m.federate"] is True
    if rv.room_id_from_create_event:
        assert "room_id" not in create
        assert room_id == "!" + timeline[0][1:]
        assert ":" not in room_id
    else:
        assert create["room_id"] == room_id and room_id.endswith(":" + LOCAL)
    assert ("creator" in create["content"]) is (not rv.implicit_room_creator)
    # spec: createRoom — the events in the spec's order
    assert _types(local, room_id) == [
        ("m.room.create", ""),
        ("m.room.member", ALICE),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
        ("m.room.member", BOB),
    ]
    pl = _content(local, room_id, "m.room.power_levels")
    if rv.privileged_creators:
        assert ALICE not in pl["users"]
        assert pl["events"]["m.room.tombstone"] > pl["state_default"]
    else:
        assert pl["users"][ALICE] == 100
    assert pl["invite"] == 50  # public_chat
    assert _content(local, room_id, "m.room.join_rules") == {"join_rule": "public"}
    assert _content(local, room_id, "m.room.guest_access") == {"guest_access": "forbidden"}
    assert _content(local, room_id, "m.room.name") == {"name": "Room"}
    assert _content(local, room_id, "m.room.topic")["topic"] == "About"
    assert _content(local, room_id, "m.room.member", BOB) == {"membership": "invite", "is_direct": True}
    assert local.members(room_id, "join").keys() == {ALICE}
    assert local.members(room_id, "invite").keys() == {BOB}
    info = local.db.rooms.info(local.room_short(room_id))
    assert info is not None and info["version"] == version and info["create_event_id"] == timeline[0]
    # the room works: the invitee joins and talks, in every version
    await local.pipe.send(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    last = await local.pipe.send(room_id, BOB, "m.room.message", msg("hi"))
    assert local.extremities(room_id) == {last.event_id}
    assert local.current_state(room_id) == replay_state(local, room_id) == local.snapshot_state(room_id)
    # every event is a valid PDU another server would accept: format, id, content hash, signature
    keys = {local.identity.key_id: local.identity.signing_key.verify_key}
    for eid in local.timeline(room_id):
        pdu = local.event(eid)
        check_pdu_format(pdu, rv)
        assert compute_event_id(pdu, rv) == eid
        check_content_hash(pdu, rv)
        verify_event_signature(pdu, rv, LOCAL, keys)
        assert local.db.events.get_raw(local.short(eid)) == encode_for_room(pdu, rv.strict_canonical_json)


@pytest.mark.parametrize("version", ["10", "12"])
@pytest.mark.parametrize("preset", ["private_chat", "trusted_private_chat", "public_chat"])
async def test_create_room_presets(local: Local, version: str, preset: str) -> None:
    rv = get_room_version(version)
    room_id = await new_room(local, version, preset=preset, invite=[BOB, CAROL])
    join_rule = "public" if preset == "public_chat" else "invite"
    guest = "forbidden" if preset == "public_chat" else "can_join"
    assert _content(local, room_id, "m.room.join_rules") == {"join_rule": join_rule}
    assert _content(local, room_id, "m.room.history_visibility") == {"history_visibility": "shared"}
    assert _content(local, room_id, "m.room.guest_access") == {"guest_access": guest}
    pl = _content(local, room_id, "m.room.power_levels")
    create = _content(local, room_id, "m.room.create")
    if preset == "trusted_private_chat":
        if rv.privileged_creators:  # spec: createRoom — invitees SHOULD become additional creators
            assert create["additional_creators"] == [BOB, CAROL]
            assert pl["users"] == {}
        else:
            assert pl["users"] == {ALICE: 100, BOB: 100, CAROL: 100}
    else:
        assert "additional_creators" not in create
        assert pl["users"] == ({} if rv.privileged_creators else {ALICE: 100})
    assert pl["invite"] == (50 if preset == "public_chat" else 0)
    if preset == "trusted_private_chat":  # an invitee with the creator's power can change power levels
        await local.pipe.send(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
        await local.pipe.send(room_id, BOB, "m.room.power_levels", {**pl, "ban": 60}, "")


async def test_initial_state_beats_preset_and_name_topic_beat_initial_state(local: Local) -> None:
    room_id = await new_room(
        local,
        "11",
        preset="public_chat",
        name="The name",
        initial_state=[
            {"type": "m.room.join_rules", "content": {"join_rule": "invite"}},
            {"type": "m.room.name", "content": {"name": "overridden"}},
            {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}},
            {"type": "org.example.state", "state_key": "k", "content": {"v": 1}},
        ],
    )
    types = _types(local, room_id)
    # the preset's join rule is not sent at all; initial_state follows the preset events, in order
    assert types.count(("m.room.join_rules", "")) == 1
    assert types[3:] == [
        ("m.room.history_visibility", ""),
        ("m.room.guest_access", ""),
        ("m.room.join_rules", ""),
        ("m.room.name", ""),
        ("m.room.encryption", ""),
        ("org.example.state", "k"),
        ("m.room.name", ""),
    ]
    assert _content(local, room_id, "m.room.join_rules") == {"join_rule": "invite"}
    assert _content(local, room_id, "m.room.name") == {"name": "The name"}
    assert _content(local, room_id, "org.example.state", "k") == {"v": 1}


@pytest.mark.parametrize("version", ["1", "10", "11"])
async def test_power_level_override_lowering_the_creator_is_applied_last(local: Local, version: str) -> None:
    override = {"users": {ALICE: 10, BOB: 100}, "state_default": 20, "invite": 50}
    room_id = await new_room(
        local,
        version,
        preset="private_chat",
        name="n",
        topic="t",
        invite=[BOB],
        power_level_content_override=override,
    )
    timeline = local.timeline(room_id)
    types = _types(local, room_id)
    # the creator keeps power 100 while the room is set up, the override lands as the last event
    assert types[2] == ("m.room.power_levels", "") and types[-1] == ("m.room.power_levels", "")
    first = local.event(timeline[2])["content"]
    assert first["users"][ALICE] == 100
    final = _content(local, room_id, "m.room.power_levels")
    assert local.current_state(room_id)[("m.room.power_levels", "")] == timeline[-1]
    assert final["users"] == {ALICE: 10, BOB: 100} and final["state_default"] == 20 and final["invite"] == 50
    assert final["events"]["m.room.power_levels"] == 100  # the rest of the defaults are kept
    # the invite was sent while alice still had power 100 (invite level 50)
    assert ("m.room.member", BOB) in types
    # and now the override holds: alice (10) may not rename, bob (100) may after joining
    with pytest.raises(MatrixError) as err:
        await local.pipe.send(room_id, ALICE, "m.room.name", {"name": "no"}, "")
    assert err.value.status == 403
    await local.pipe.send(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
    await local.pipe.send(room_id, BOB, "m.room.name", {"name": "yes"}, "")


async def test_power_level_override_without_lowering_sends_one_power_levels_event(local: Local) -> None:
    room_id = await new_room(local, "10", power_level_content_override={"users_default": 5, "events": {"x.y": 7}})
    types = _types(local, room_id)
    assert types.count(("m.room.power_levels", "")) == 1
    pl = _content(local, room_id, "m.room.power_levels")
    assert pl["users_default"] == 5 and pl["events"]["x.y"] == 7 and pl["events"]["m.room.name"] == 50


async def test_v12_creators_and_room_id(local: Local) -> None:
    room_id = await new_room(
        local,
        "12",
        preset="private_chat",
        invite=[BOB],
        creation_content={"additional_creators": [CAROL]},
        power_level_content_override={"users": {DAVE: 75}},
    )
    create_id = local.timeline(room_id)[0]
    create = local.event(create_id)
    assert room_id == "!" + create_id[1:]
    assert create["content"]["additional_creators"] == [CAROL]
    assert "creator" not in create["content"] and "room_id" not in create
    pl = _content(local, room_id, "m.room.power_levels")
    assert pl["users"] == {DAVE: 75}
    # v12: no event names the create event among its auth events, yet it is in the room's state
    for eid in local.timeline(room_id)[1:]:
        assert create_id not in local.event(eid)["auth_events"]
    assert local.current_state(room_id)[("m.room.create", "")] == create_id
    # carol, an additional creator, has unlimited power once she is in the room
    await local.pipe.send(room_id, ALICE, "m.room.member", {"membership": "invite"}, CAROL)
    await local.pipe.send(room_id, CAROL, "m.room.member", {"membership": "join"}, CAROL)
    await local.pipe.send(room_id, CAROL, "m.room.power_levels", {**pl, "users": {DAVE: 99}}, "")
    # creators may not be listed in the power levels of a v12 room
    with pytest.raises(MatrixError):
        await new_room(local, "12", power_level_content_override={"users": {ALICE: 100}})
    with pytest.raises(MatrixError) as err:
        await new_room(local, "12", creation_content={"additional_creators": ["not a user"]})
    assert err.value.status == 400


async def test_bad_create_requests(local: Local) -> None:
    before = dump(local.db)
    bad: list[dict[str, Any]] = [
        {"room_version": "999"},
        {"room_version": "10", "preset": "nope"},
        {"room_version": "10", "initial_state": [{"type": "x"}]},
        {
            "room_version": "10",
            "initial_state": [{"type": "m.room.member", "state_key": BOB, "content": {"membership": "join"}}],
        },
        {"room_version": "10", "creation_content": {"x": 1.5}},
    ]
    for kwargs in bad:
        with pytest.raises(MatrixError) as err:
            await create_room(local.pipe, RoomCreation(creator=ALICE, **kwargs))
        assert 400 <= err.value.status < 500, kwargs
    assert dump(local.db) == before


@pytest.mark.parametrize("fail_at", [1, 3, 6, 9])
async def test_failure_in_the_middle_of_create_room_leaves_nothing(
    local: Local, monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    # a room that exists before, to check it is untouched
    existing = await new_room(local, "10", invite=[BOB])
    before = dump(local.db)
    calls = 0
    real = EventPipeline.build_local

    def failing(self: EventPipeline, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == fail_at:
            raise RuntimeError("injected failure")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EventPipeline, "build_local", failing)
    with pytest.raises(RuntimeError, match="injected"):
        await new_room(
            local,
            "10",
            name="n",
            topic="t",
            invite=[BOB, CAROL],
            initial_state=[
                {"type": "org.example", "state_key": "", "content": {}},
            ],
        )
    assert dump(local.db) == before
    monkeypatch.undo()
    # nothing half-written is visible after reopening either: one room, only its events and ids
    local.reopen()
    db = local.db
    assert [db.ids.room_id(r) for r in db.rooms.rooms()] == [existing]
    n_events = len(local.timeline(existing))
    from storage.events import EVENT_JSON, EVENT_META
    from storage.shortids import EVENT_TO_SHORT, ROOM_TO_SHORT, SHORT_TO_EVENT

    for table in (EVENT_JSON, EVENT_META, EVENT_TO_SHORT, SHORT_TO_EVENT):
        assert db.store.count(table) == n_events, table.name
    assert db.store.count(ROOM_TO_SHORT) == 1
    # and the store goes on normally
    room_id = await new_room(local, "10", name="again")
    assert local.db.rooms.info(local.room_short(room_id)) is not None
