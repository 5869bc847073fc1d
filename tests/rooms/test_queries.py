"""RoomQueries (homeserver/rooms/queries.py): the room questions, answered from what the pipeline stored."""

from __future__ import annotations

import pytest

from homeserver.protocol.events import Event
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.rooms.queries import RoomQueries
from tests.rooms.remote import LOCAL, Local, RemoteServer

ALICE = f"@alice:{LOCAL}"
BOB = f"@bob:{LOCAL}"
CAROL = f"@carol:{LOCAL}"
DAVE = f"@dave:{LOCAL}"
ERIN = "@erin:remote.test"


def queries_of(local: Local, server_name: str = LOCAL) -> RoomQueries:
    db = local.db
    return RoomQueries(server_name, db.ids, db.rooms, db.events, db.snapshots)


async def member(local: Local, room_id: str, user: str, membership: str, sender: str | None = None) -> None:
    await local.pipe.send(room_id, sender or user, "m.room.member", {"membership": membership}, user)


async def remote_join(local: Local, room_id: str, user: str) -> str:
    server: RemoteServer = local.remote(user.split(":", 1)[1])
    (tip,) = local.extremities(room_id)
    pdu = server.build(local, room_id, user, "m.room.member", {"membership": "join"}, state_key=user, prev=[tip])
    ev = await local.pipe.receive(pdu, local.keys)
    assert ev.rejected is None and not ev.soft_failed
    return ev.event_id


async def rooms(local: Local, version: str = "10") -> tuple[str, str]:
    """Room A: alice and bob joined, dave invited. Room B: alice and carol joined, bob left."""
    a = await create_room(local.pipe, RoomCreation(creator=ALICE, room_version=version, preset="public_chat"))
    b = await create_room(local.pipe, RoomCreation(creator=ALICE, room_version=version, preset="public_chat"))
    await member(local, a, BOB, "join")
    await member(local, a, DAVE, "invite", ALICE)
    await member(local, b, CAROL, "join")
    await member(local, b, BOB, "join")
    await member(local, b, BOB, "leave")
    return a, b


@pytest.mark.parametrize("version", ["10", "12"])
async def test_joined_rooms_and_members(local: Local, version: str) -> None:
    a, b = await rooms(local, version)
    q = queries_of(local)
    ra, rb = local.room_short(a), local.room_short(b)
    assert q.room(a) == ra and q.room_id(ra) == a
    assert q.room("!unknown:hs.test") is None
    assert sorted(q.joined_rooms(ALICE)) == sorted([ra, rb])
    assert sorted(q.joined_room_ids(ALICE)) == sorted([a, b])
    assert q.joined_rooms(BOB) == [ra]
    assert q.joined_rooms(DAVE) == []  # invited is not joined
    assert q.joined_room_ids("@nobody:hs.test") == []
    assert q.is_joined(BOB, ra) and not q.is_joined(BOB, rb)
    assert not q.is_joined(DAVE, ra)
    assert {ur.room: ur.membership for ur in q.memberships(BOB)} == {ra: "join", rb: "leave"}
    bob_in_b = q.membership(BOB, rb)
    assert bob_in_b is not None and bob_in_b.membership == "leave"
    assert q.membership(CAROL, ra) is None
    assert sorted(q.joined_members(ra)) == [ALICE, BOB]
    assert [user for user, _ in q.members(ra, "invite")] == [DAVE]
    assert q.member_count(ra) == 2 and q.member_count(rb) == 2 and q.member_count(rb, "leave") == 1
    assert q.current_membership(DAVE, ra) == "invite"
    assert q.current_membership(BOB, rb) == "leave"
    assert q.current_membership(CAROL, ra) is None
    # the member event short ids are the current member events
    for user, short in q.members(ra):
        ev = q.event(short)
        assert ev is not None and ev.state_key == user and ev.membership == "join"


async def test_users_sharing_a_room(local: Local) -> None:
    _, b = await rooms(local)
    q = queries_of(local)
    assert q.users_sharing_a_room(ALICE) == {ALICE, BOB, CAROL}
    assert q.users_sharing_a_room(BOB) == {ALICE, BOB}  # bob left room B: carol is not shared
    assert q.users_sharing_a_room(CAROL) == {ALICE, CAROL}
    assert q.users_sharing_a_room(DAVE) == set()  # invited only
    assert q.share_a_room(ALICE, BOB) and q.share_a_room(BOB, ALICE)
    assert q.share_a_room(ALICE, CAROL)
    assert not q.share_a_room(BOB, CAROL)
    assert not q.share_a_room(ALICE, DAVE)
    assert q.share_a_room(ALICE, ALICE)
    assert not q.share_a_room(DAVE, DAVE)  # a user shares with themself only when joined somewhere
    await member(local, b, BOB, "join")
    assert q.share_a_room(BOB, CAROL)
    assert q.users_sharing_a_room(BOB) == {ALICE, BOB, CAROL}


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_servers_in_room(local: Local, version: str) -> None:
    a, _ = await rooms(local, version)
    q = queries_of(local)
    room = local.room_short(a)
    assert q.servers_in_room(room) == [LOCAL]
    await remote_join(local, a, ERIN)
    assert q.servers_in_room(room) == sorted([LOCAL, "remote.test"])
    assert ERIN in q.joined_members(room)
    assert ERIN not in q.local_joined_members(room)
    assert sorted(q.local_joined_members(room)) == [ALICE, BOB]
    # local users leaving does not drop the server while one of its users stays
    await member(local, a, BOB, "leave")
    assert q.servers_in_room(room) == sorted([LOCAL, "remote.test"])


async def test_current_state_event(local: Local) -> None:
    room_id = await create_room(local.pipe, RoomCreation(creator=ALICE, room_version="11", name="First"))
    q = queries_of(local)
    room = local.room_short(room_id)
    name = q.current_state_event(room, "m.room.name")
    assert isinstance(name, Event)
    assert name.type == "m.room.name" and name.state_key == "" and name.content["name"] == "First"
    assert name.sender == ALICE and name.room_id == room_id
    assert name.event_id == local.current_state(room_id)[("m.room.name", "")]
    assert q.current_state_short(room, "m.room.name") == local.short(name.event_id or "")
    assert q.current_state_event(room, "m.room.topic") is None  # the room has none
    assert q.current_state_event(room, "m.never.seen.type") is None  # no short id for it either
    alice = q.current_state_event(room, "m.room.member", ALICE)
    assert alice is not None and alice.membership == "join"
    renamed = await local.pipe.send(room_id, ALICE, "m.room.name", {"name": "Second"}, "")
    now = q.current_state_event(room, "m.room.name")
    assert now is not None and now.content["name"] == "Second" and now.event_id == renamed.event_id


async def test_state_event_at(local: Local) -> None:
    room_id = await create_room(local.pipe, RoomCreation(creator=ALICE, room_version="10", name="First"))
    q = queries_of(local)
    renamed = await local.pipe.send(room_id, ALICE, "m.room.name", {"name": "Second"}, "")
    meta = local.meta(renamed.event_id)
    before = q.state_event_at(meta.state_before, "m.room.name")
    after = q.state_event_at(meta.state_after, "m.room.name")
    assert before is not None and before.content["name"] == "First"
    assert after is not None and after.content["name"] == "Second" and after.event_id == renamed.event_id
    assert q.state_short_at(meta.state_after, "m.room.name") == local.short(renamed.event_id)
    assert q.state_event_at(0, "m.room.name") is None  # 0 is the empty state
    assert q.state_short_at(0, "m.room.name") is None
    assert q.state_event_at(meta.state_after, "m.room.topic") is None
    assert q.state_event_at(meta.state_after, "m.never.seen.type") is None
    # the first event of a room has the empty state before it
    create = local.meta(local.timeline(room_id)[0])
    assert q.state_event_at(create.state_before, "m.room.create") is None
    made = q.state_event_at(create.state_after, "m.room.create")
    assert made is not None and made.type == "m.room.create"


async def test_known_room_and_room_version(local: Local) -> None:
    room_id = await create_room(local.pipe, RoomCreation(creator=ALICE, room_version="12"))
    q = queries_of(local)
    room = q.known_room(room_id)
    assert room is not None and room == local.room_short(room_id)
    assert q.room_version(room).identifier == "12"
    assert q.known_room("!nope:hs.test") is None
    # a v12 room id names no server, so not even the room's creator's server calls it its own
    assert ":" not in room_id and not q.is_local(room_id)
    assert q.room(room_id) == room


@pytest.mark.parametrize(
    ("server_name", "identifier", "ours"),
    [
        (LOCAL, ALICE, True),
        (LOCAL, "@alice:remote.test", False),
        (LOCAL, "#room:hs.test", True),
        (LOCAL, "#room:hs.test.evil", False),
        (LOCAL, "!abc:hs.test", True),  # rooms v1-v11 ids carry their creator's server
        (LOCAL, "$abc:hs.test", True),  # event ids of v1/v2
        (LOCAL, "!Zm9vYmFyYmF6cXV4cXV1eHh5eno", False),  # rooms v12: no server name
        (LOCAL, "$Zm9vYmFyYmF6cXV4", False),  # event ids of v3+: no server name
        (LOCAL, "hs.test", False),  # no sigil, no colon: not an id
        (LOCAL, "", False),
        (LOCAL, "@alice:hs.test:8448", False),  # another port is another server
        ("hs.test:8448", "@alice:hs.test:8448", True),
        ("hs.test:8448", "@alice:hs.test", False),
        ("hs.test:8448", "#room:hs.test:8448", True),
        ("[::1]:8448", "@alice:[::1]:8448", True),
        ("[::1]:8448", "@alice:[::1]", False),
        ("1.2.3.4", "@alice:1.2.3.4", True),
    ],
)
def test_is_local(local: Local, server_name: str, identifier: str, ours: bool) -> None:
    assert queries_of(local, server_name).is_local(identifier) is ours


async def test_shares_a_room_with_us(local: Local) -> None:
    a, _ = await rooms(local)
    q = queries_of(local)
    assert not q.shares_a_room_with_us(ERIN)  # joined nowhere
    await remote_join(local, a, ERIN)
    assert q.shares_a_room_with_us(ERIN)
    assert q.shares_a_room_with_us(ALICE)
    assert not q.shares_a_room_with_us(DAVE)  # invited only
    # a server whose name is a prefix of ours has nobody in the room
    assert not queries_of(local, LOCAL[:-1]).shares_a_room_with_us(ERIN)
    await member(local, a, BOB, "leave")
    assert q.shares_a_room_with_us(ERIN)  # alice stays
    await member(local, a, ALICE, "leave")
    assert not q.shares_a_room_with_us(ERIN)  # only erin is left: no user of ours shares the room
    assert q.users_sharing_a_room(ERIN) == {ERIN}
