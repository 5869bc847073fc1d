"""The Timeline service (homeserver/rooms/timeline.py): positions on a room's timeline, and backfilled
history (written here with the storage API, as federation backfill will write it: timeline orders
below every live event, no stream position) leaving `/sync` positions and device lists alone."""

from __future__ import annotations

import secrets
from typing import Any

import orjson
import pytest

from homeserver.rooms.tokens import before_token, live_order, parse_position
from homeserver.server import HomeServer
from storage.events import BACKFILLED, STATE, EventMeta

from .conftest import Harness
from .rooms_helpers import messages
from .sync_helpers import create_room, inline, invite, join, send, sync, timeline_ids, types_of

pytestmark = pytest.mark.asyncio

MEMBER = "m.room.member"


def backfill(hs: HomeServer, room_id: str, event: dict[str, Any], *, state: int) -> tuple[str, int]:
    """Store `event` as backfilled history of the room, older than anything it holds, with `state` as
    the state snapshot before and after it; returns its event id and short id."""
    db = hs.db
    room = db.ids.room(room_id)
    assert room is not None
    event = {"room_id": room_id, "origin_server_ts": 1, "depth": 1, **event}
    event_id = "$" + secrets.token_urlsafe(16)
    order = db.rooms.first_backfill_order(room) - 1
    with db.store.batch() as batch:
        short = db.ids.new_event(event_id, batch)
        is_state = isinstance(event.get("state_key"), str)
        state_key = db.ids.state_key_or_create(event["type"], event["state_key"], batch) if is_state else 0
        flags = BACKFILLED | (STATE if is_state else 0)
        meta = EventMeta(room, order, 1, state, state, state_key, flags)
        db.events.put(short, orjson.dumps(event), meta, batch, parsed=event)
        db.rooms.append_timeline(room, order, short, batch)
        db.store.commit_now(batch)
    return event_id, short


def current_state(hs: HomeServer, room_id: str) -> int:
    room = hs.queries.room(room_id)
    assert room is not None
    return hs.timeline.current_state(room, hs.notifier.token)


async def test_positions_of_live_events(harness: Harness) -> None:
    alice = await harness.user("alice")
    hs = harness.hs
    before_room = hs.notifier.token
    room_id = await create_room(harness, alice)
    room = hs.queries.room(room_id)
    assert room is not None
    after_create = hs.notifier.token
    msg = await send(harness, alice, room_id, "one")
    after_msg = hs.notifier.token
    short = hs.db.ids.event(msg)
    assert short is not None
    timeline = hs.timeline

    assert timeline.last_event(room, before_room) is None
    assert timeline.state_at(room, before_room) == 0
    assert timeline.last_event(room, after_msg) == short
    assert timeline.last_event(room, after_create) != short
    # a message changes no state: the state at its position is the state before it
    place = timeline.place(short)
    assert place is not None and place.order == live_order(after_msg)
    assert timeline.state_at(room, after_msg) == place.state_before == place.state_after
    assert timeline.current_state(room, after_msg) == place.state_after
    assert timeline.changed_since(room, after_create) and not timeline.changed_since(room, after_msg)
    # /messages and /sync tokens name the same place
    assert parse_position(f"s{after_msg}") == place.order
    assert parse_position(before_token(place.order)) == place.order - 1
    changes = list(timeline.membership_changes(room, before_room))
    assert [(c.user_id, c.membership) for c in changes] == [(alice.user_id, "join")]
    assert changes[0].stream <= after_create
    assert list(timeline.membership_changes(room, after_create)) == []


async def test_backfilled_events_have_no_stream_position(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    hs = harness.hs
    before_room = hs.notifier.token
    room_id = await create_room(harness, alice, invite=[bob.user_id])
    await join(harness, bob, room_id)
    room = hs.queries.room(room_id)
    assert room is not None
    now = hs.notifier.token
    last = hs.timeline.last_event(room, now)
    state = current_state(hs, room_id)
    _, old_message = backfill(
        hs,
        room_id,
        {"type": "m.room.message", "sender": alice.user_id, "content": {"msgtype": "m.text", "body": "old"}},
        state=state,
    )
    _, old_member = backfill(
        hs,
        room_id,
        {"type": MEMBER, "state_key": bob.user_id, "sender": bob.user_id, "content": {"membership": "join"}},
        state=state,
    )
    assert hs.notifier.token == now  # backfill takes no place on the stream
    timeline = hs.timeline
    # before the room's first live event there is no event and no state, backfilled history or not
    assert timeline.last_event(room, before_room) is None
    assert timeline.state_at(room, before_room) == 0
    assert timeline.current_state(room, before_room) == 0
    assert timeline.last_event(room, now) == last
    assert not timeline.changed_since(room, now)
    # both sort before every live event, the newer backfill first
    member_place, message_place = timeline.place(old_member), timeline.place(old_message)
    assert member_place is not None and message_place is not None
    assert member_place.order is not None and message_place.order is not None
    assert member_place.order < message_place.order < live_order(0)
    assert before_token(member_place.order).startswith("t-")
    # only live member events are membership changes
    users = [(c.user_id, c.membership) for c in timeline.membership_changes(room, before_room)]
    assert users == [(alice.user_id, "join"), (bob.user_id, "invite"), (bob.user_id, "join")]
    assert list(timeline.membership_changes(room, now)) == []


async def test_backfill_does_not_move_sync_positions(harness: Harness) -> None:
    alice = await harness.user("alice")
    hs = harness.hs
    room_id = await create_room(harness, alice)
    msg = await send(harness, alice, room_id, "live")
    first = await sync(harness, alice)
    old_id, _ = backfill(
        hs,
        room_id,
        {"type": "m.room.message", "sender": alice.user_id, "content": {"msgtype": "m.text", "body": "old"}},
        state=current_state(hs, room_id),
    )
    # an incremental sync does not report history that arrived from the past
    later = await sync(harness, alice, f"since={first['next_batch']}&timeout=0")
    assert later["next_batch"] == first["next_batch"]
    assert room_id not in later["rooms"]["join"]
    # an initial sync shows it where it belongs: before every live event
    wide = inline({"room": {"timeline": {"limit": 100}}})
    before = await sync(harness, alice, f"filter={wide}")
    assert before["next_batch"] == first["next_batch"]
    ids = timeline_ids(before, room_id)
    assert ids[0] == old_id and ids[-1] == msg
    entry = before["rooms"]["join"][room_id]
    assert entry["timeline"]["limited"] is False
    assert entry["timeline"]["prev_batch"].startswith("t-")
    # a timeline cut inside live events gives a prev_batch that /messages reads on from, into history
    limited = await sync(harness, alice, f"filter={inline({'room': {'timeline': {'limit': 1}}})}")
    assert timeline_ids(limited, room_id) == [msg]
    prev_batch = limited["rooms"]["join"][room_id]["timeline"]["prev_batch"]
    status, page = await messages(harness, alice, room_id, f"dir=b&limit=100&from={prev_batch}")
    assert status == 200, page
    assert [e["event_id"] for e in page["chunk"]] == list(reversed(ids[:-1]))


async def test_join_after_since_is_new_even_with_backfilled_history(harness: Harness) -> None:
    # The state at `since` comes from live events only: history backfilled later, whose state has
    # Bob joined, must not make a room Bob joined after `since` look old to him (he needs its state).
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    hs = harness.hs
    since = (await sync(harness, bob))["next_batch"]
    room_id = await create_room(harness, alice, name="Attic", invite=[bob.user_id])
    await join(harness, bob, room_id)
    msg = await send(harness, alice, room_id, "hello")
    backfill(
        hs,
        room_id,
        {"type": "m.room.message", "sender": alice.user_id, "content": {"msgtype": "m.text", "body": "old"}},
        state=current_state(hs, room_id),
    )
    body = await sync(harness, bob, f"since={since}&timeout=0&filter={inline({'room': {'timeline': {'limit': 1}}})}")
    entry = body["rooms"]["join"][room_id]
    assert timeline_ids(body, room_id) == [msg]
    assert entry["timeline"]["limited"] is True
    state_types = set(types_of(entry["state"]["events"]))
    assert {"m.room.create", "m.room.name", MEMBER} <= state_types
    assert entry["summary"]["m.joined_member_count"] == 2


async def test_device_lists_ignore_backfilled_membership(harness: Harness) -> None:
    # Carol's backfilled join is history, not a change in the window: Alice hears nothing of Carol.
    alice = await harness.user("alice")
    carol = await harness.user("carol")
    hs = harness.hs
    room_id = await create_room(harness, alice, invite=[carol.user_id])
    since = (await sync(harness, alice))["next_batch"]
    backfill(
        hs,
        room_id,
        {"type": MEMBER, "state_key": carol.user_id, "sender": carol.user_id, "content": {"membership": "join"}},
        state=current_state(hs, room_id),
    )
    dave = await harness.user("dave")
    await invite(harness, alice, room_id, dave)
    body = await sync(harness, alice, f"since={since}&timeout=0")
    lists = body.get("device_lists", {"changed": [], "left": []})
    assert carol.user_id not in lists["changed"] and carol.user_id not in lists["left"]
