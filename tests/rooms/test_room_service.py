"""The room service wired by hand over a store: what it is given through its constructor, and which
state it serves (redacted) where the stored event stays as it was."""

from __future__ import annotations

from typing import Any

from homeserver.rooms.creation import RoomCreation
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.service import Rooms
from tests.rooms.remote import LOCAL, Local

ALICE = f"@alice:{LOCAL}"
BOB = f"@bob:{LOCAL}"


def room_service(local: Local, profiles: dict[str, dict[str, Any]]) -> Rooms:
    db = local.db
    queries = RoomQueries(LOCAL, db.ids, db.rooms, db.events, db.snapshots)
    return Rooms(
        db,
        local.pipe,
        queries,
        default_room_version="11",
        profile_lookup=profiles.get,
        account_lookup=db.accounts.account,
        account_data=lambda user_id, data_type: None,  # nobody here blocks invites
        strict_indexes=True,
    )


async def test_member_events_carry_the_profiles_of_the_lookup_it_was_given(local: Local) -> None:
    profiles = {ALICE: {"displayname": "Alice"}, BOB: {"displayname": "Bob", "avatar_url": "mxc://hs.test/b"}}
    rooms = room_service(local, profiles)
    room_id = await rooms.create_room(RoomCreation(creator=ALICE, room_version="11", preset="public_chat"))
    await rooms.membership.join(BOB, room_id)
    room = local.room_short(room_id)
    alice = rooms.queries.current_state_event(room, "m.room.member", ALICE)
    bob = rooms.queries.current_state_event(room, "m.room.member", BOB)
    assert alice is not None and alice.content["displayname"] == "Alice"
    assert bob is not None and dict(bob.content) == {
        "membership": "join",
        "displayname": "Bob",
        "avatar_url": "mxc://hs.test/b",
    }
    assert rooms.reader.joined_members(ALICE, room_id) == {
        ALICE: {"display_name": "Alice"},
        BOB: {"display_name": "Bob", "avatar_url": "mxc://hs.test/b"},
    }


async def test_a_redacted_name_leaves_the_summary_but_not_the_stored_state(local: Local) -> None:
    rooms = room_service(local, {})
    room_id = await rooms.create_room(
        RoomCreation(creator=ALICE, room_version="11", preset="public_chat", name="Secret plans", topic="Plans")
    )
    room = local.room_short(room_id)
    assert rooms.directory.summary(room)["name"] == "Secret plans"
    name_id = local.current_state(room_id)[("m.room.name", "")]
    await rooms.sender.redact(ALICE, "DEVICE", room_id, name_id, None, "txn1", is_admin=False)
    summary = rooms.directory.summary(room)
    assert "name" not in summary  # served redacted, as /state serves it
    assert summary["topic"] == "Plans"
    served = rooms.directory.served_state(room, "m.room.name")
    assert served is not None and dict(served.content) == {}
    stored = rooms.queries.current_state_event(room, "m.room.name")  # the stored event is unchanged
    assert stored is not None and stored.content["name"] == "Secret plans"
