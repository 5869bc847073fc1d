"""Invites as Element reads them: stripped state with the inviter's member event, the invitee's
profile in the invite event, `unsigned.invite_room_state`, and invite blocking.

spec: client-server-api "Stripped state" (m.room.create required since v1.16; the server may add
events: the inviter's m.room.member, as Synapse does per MSC4319), m.room.member, modules
"Invite permission" (v1.18).
"""

from __future__ import annotations

from typing import Any

from .conftest import Harness, User
from .rooms_helpers import create_room, invite, q
from .sync_helpers import sync

RECOMMENDED = {
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
}


async def named(harness: Harness, localpart: str, displayname: str, avatar: str) -> User:
    user = await harness.user(localpart)
    for key, value in (("displayname", displayname), ("avatar_url", avatar)):
        status, body = await harness.request("PUT", f"profile/{q(user.user_id)}/{key}", user, json={key: value})
        assert status == 200, body
    return user


def member_of(events: list[dict[str, Any]], user_id: str) -> dict[str, Any]:
    [event] = [e for e in events if e["type"] == "m.room.member" and e["state_key"] == user_id]
    return event


async def test_dm_invite_shows_the_inviter(harness: Harness) -> None:
    # Element's DM: createRoom with is_direct, trusted_private_chat and the invitee; it names the invite
    # from the inviter's member event in invite_state ("Empty room" without it)
    alice = await named(harness, "alice", "Alice", "mxc://hs.test/alice")
    bob = await named(harness, "bob", "Bob", "mxc://hs.test/bob")
    since = (await sync(harness, bob))["next_batch"]
    room = await create_room(
        harness,
        alice,
        preset="trusted_private_chat",
        is_direct=True,
        invite=[bob.user_id],
        initial_state=[{"type": "m.room.encryption", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}],
    )
    body = await sync(harness, bob, f"since={since}&timeout=0")
    events = body["rooms"]["invite"][room]["invite_state"]["events"]
    inviter = member_of(events, alice.user_id)
    assert inviter == {
        "type": "m.room.member",
        "state_key": alice.user_id,
        "sender": alice.user_id,
        "content": {"membership": "join", "displayname": "Alice", "avatar_url": "mxc://hs.test/alice"},
    }
    own = member_of(events, bob.user_id)
    assert own["sender"] == alice.user_id and own is events[-1]
    # the invite event carries the invitee's profile (Element: "Alice invited Bob")
    assert own["content"] == {
        "membership": "invite",
        "is_direct": True,
        "displayname": "Bob",
        "avatar_url": "mxc://hs.test/bob",
    }
    types = {e["type"] for e in events}
    assert {"m.room.create", "m.room.join_rules", "m.room.encryption"} <= types  # create is required (v1.16)
    assert types <= RECOMMENDED | {"m.room.member"}
    for e in events:  # spec: stripped state events have only these keys
        assert set(e) == {"content", "sender", "state_key", "type"}
    # an initial sync shows the same
    again = (await sync(harness, bob))["rooms"]["invite"][room]["invite_state"]["events"]
    assert member_of(again, alice.user_id) == inviter


async def test_invite_event_carries_invitee_profile(harness: Harness) -> None:
    alice = await named(harness, "alice", "Alice", "mxc://hs.test/alice")
    bob = await named(harness, "bob", "Bob", "mxc://hs.test/bob")
    # history visibility "invited": bob may read his invite event (spec: history visibility rule 4)
    visibility = {"type": "m.room.history_visibility", "content": {"history_visibility": "invited"}}
    room = await create_room(harness, alice, name="Party", topic="cake", initial_state=[visibility])
    since = (await sync(harness, alice))["next_batch"]
    await invite(harness, alice, room, bob)
    timeline = (await sync(harness, alice, f"since={since}&timeout=0"))["rooms"]["join"][room]["timeline"]["events"]
    [event] = [e for e in timeline if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert event["content"] == {"membership": "invite", "displayname": "Bob", "avatar_url": "mxc://hs.test/bob"}
    # bob's invite_state: every recommended event the room has, then alice, then bob's invite
    events = (await sync(harness, bob))["rooms"]["invite"][room]["invite_state"]["events"]
    assert [e["type"] for e in events[-2:]] == ["m.room.member", "m.room.member"]
    assert [e["state_key"] for e in events[-2:]] == [alice.user_id, bob.user_id]
    assert member_of(events, alice.user_id)["content"]["displayname"] == "Alice"
    assert {"m.room.create", "m.room.name", "m.room.topic", "m.room.join_rules"} <= {e["type"] for e in events}
    # the invite event as bob reads it carries the room's stripped state (spec: m.room.member unsigned)
    status, served = await harness.request("GET", f"rooms/{q(room)}/event/{q(event['event_id'])}", bob)
    assert status == 200, served
    pending = served["unsigned"]["invite_room_state"]
    assert member_of(pending, alice.user_id)["content"]["displayname"] == "Alice"
    assert not [e for e in pending if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
    assert "m.room.create" in {e["type"] for e in pending}
    # alice sees the same event without it: the stripped state is the invitee's
    status, served = await harness.request("GET", f"rooms/{q(room)}/event/{q(event['event_id'])}", alice)
    assert status == 200 and "invite_room_state" not in served["unsigned"]


async def test_knock_and_kick_profiles_as_synapse(harness: Harness) -> None:
    # Synapse puts the profile into joins, knocks and invites; kicks and bans carry none
    alice = await named(harness, "alice", "Alice", "mxc://hs.test/alice")
    bob = await named(harness, "bob", "Bob", "mxc://hs.test/bob")
    room = await create_room(
        harness,
        alice,
        initial_state=[{"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}],
    )
    status, body = await harness.request("POST", f"knock/{q(room)}", bob, json={})
    assert status == 200, body
    events = (await sync(harness, bob))["rooms"]["knock"][room]["knock_state"]["events"]
    knock = member_of(events, bob.user_id)
    assert knock["content"] == {"membership": "knock", "displayname": "Bob", "avatar_url": "mxc://hs.test/bob"}
    status, body = await harness.request("POST", f"rooms/{q(room)}/kick", alice, json={"user_id": bob.user_id})
    assert status == 200, body
    status, kicked = await harness.request("GET", f"rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}", alice)
    assert status == 200 and kicked == {"membership": "leave"}
    # an invite written as state gets the invitee's profile too, unless the client sets it
    status, body = await harness.request(
        "PUT", f"rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}", alice, json={"membership": "invite"}
    )
    assert status == 200, body
    status, invited = await harness.request("GET", f"rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}", alice)
    assert status == 200 and invited == {
        "membership": "invite",
        "displayname": "Bob",
        "avatar_url": "mxc://hs.test/bob",
    }


async def test_invite_blocking(harness: Harness) -> None:
    # spec: modules/invite_permission.md — default_action "block" refuses invites with M_INVITE_BLOCKED
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    early = await create_room(harness, alice)
    await invite(harness, alice, early, bob)  # before bob blocks invites
    config = f"user/{q(bob.user_id)}/account_data/m.invite_permission_config"
    status, _ = await harness.request("PUT", config, bob, json={"default_action": "block"})
    assert status == 200
    room = await create_room(harness, alice)
    status, err = await harness.request("POST", f"rooms/{q(room)}/invite", alice, json={"user_id": bob.user_id})
    assert status == 403 and err["errcode"] == "M_INVITE_BLOCKED"
    status, err = await harness.request(
        "PUT", f"rooms/{q(room)}/state/m.room.member/{q(bob.user_id)}", alice, json={"membership": "invite"}
    )
    assert status == 403 and err["errcode"] == "M_INVITE_BLOCKED"
    # createRoom still makes the room, without the blocked invitee
    made = await create_room(harness, alice, invite=[bob.user_id])
    status, members = await harness.request("GET", f"rooms/{q(made)}/members", alice)
    assert status == 200 and bob.user_id not in {m["state_key"] for m in members["chunk"]}
    # the invite from before is not served over /sync while invites are blocked
    assert early not in (await sync(harness, bob))["rooms"]["invite"]
    # without default_action, invites are allowed again
    status, _ = await harness.request("PUT", config, bob, json={})
    assert status == 200
    await invite(harness, alice, room, bob)
    assert {early, room} <= set((await sync(harness, bob))["rooms"]["invite"])


async def test_invites_stored_before_the_inviter_was_kept_get_it(harness: Harness) -> None:
    # a store written before this server kept the inviter's member event with the invite
    alice = await named(harness, "alice", "Alice", "mxc://hs.test/alice")
    bob = await harness.user("bob")
    room = await create_room(harness, alice, name="Old")
    await invite(harness, alice, room, bob)
    db = harness.hs.db
    short = db.ids.room(room)
    assert short is not None
    stored = db.rooms.invite_state(bob.user_id, short)
    assert stored is not None
    old = [e for e in stored if not (e["type"] == "m.room.member" and e["state_key"] == alice.user_id)]
    batch = db.store.batch()
    with batch:
        db.rooms.set_invite_state(bob.user_id, short, old, batch)
        await batch.commit()
    events = (await sync(harness, bob))["rooms"]["invite"][room]["invite_state"]["events"]
    assert member_of(events, alice.user_id)["content"]["displayname"] == "Alice"
    assert events[-1]["state_key"] == bob.user_id
