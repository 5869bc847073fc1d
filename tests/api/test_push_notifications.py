"""Notifications produced by push rules when events are sent: unread counts and highlights in
/sync, cleared by receipts and by the user's own messages; GET /notifications; pushers."""

from __future__ import annotations

import pytest

from .conftest import Harness
from .sync_helpers import create_room, join, put_state, q, send, sync

pytestmark = pytest.mark.asyncio


def _counts(body: dict, room: str) -> dict:
    return body["rooms"]["join"][room]["unread_notifications"]


async def test_counts_and_highlights_from_mentions(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    carol = await harness.user("carol")
    room = await create_room(harness, alice, invite=[bob.user_id, carol.user_id])
    await join(harness, bob, room)
    await join(harness, carol, room)
    since = (await sync(harness, bob))["next_batch"]
    await send(harness, alice, room, "plain")
    await send(harness, alice, room, "hey bob", **{"m.mentions": {"user_ids": [bob.user_id]}})
    await send(harness, alice, room, "everyone!", **{"m.mentions": {"room": True}})  # alice has PL 100
    await send(harness, carol, room, "everyone?", **{"m.mentions": {"room": True}})  # carol may not @room
    await send(harness, alice, room, "a bot says", msgtype="m.notice")  # suppressed
    await put_state(harness, alice, room, "m.room.topic", {"topic": "no notification for state"})
    # the counts come in the same response as the events
    delta = await sync(harness, bob, f"since={since}&timeout=0")
    assert _counts(delta, room) == {"notification_count": 4, "highlight_count": 2}
    # a message by bob himself marks everything before it read (spec: "by sending an event")
    await send(harness, bob, room, "caught up")
    assert _counts(await sync(harness, bob), room) == {"notification_count": 0, "highlight_count": 0}
    # alice's own messages never count for her; bob's and carol's do
    # (her later messages marked carol's @room read; bob's message after them counts)
    assert _counts(await sync(harness, alice), room) == {"notification_count": 1, "highlight_count": 0}


async def test_one_to_one_and_disabled_rules(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room = await create_room(harness, alice, invite=[bob.user_id])
    await join(harness, bob, room)
    await send(harness, alice, room, "dm")
    assert _counts(await sync(harness, bob), room)["notification_count"] == 1
    # a room rule with no actions silences the room for bob
    status, _ = await harness.request("PUT", f"pushrules/global/room/{q(room)}", bob, json={"actions": []})
    assert status == 200
    await send(harness, alice, room, "muted")
    assert _counts(await sync(harness, bob), room)["notification_count"] == 1
    # a content rule highlights a keyword
    status, _ = await harness.request("DELETE", f"pushrules/global/room/{q(room)}", bob)
    assert status == 200
    await harness.request(
        "PUT",
        "pushrules/global/content/tea",
        bob,
        json={"pattern": "tea", "actions": ["notify", {"set_tweak": "highlight"}]},
    )
    await send(harness, alice, room, "time for tea?")
    assert _counts(await sync(harness, bob), room) == {"notification_count": 2, "highlight_count": 1}
    # the master rule switches everything off
    await harness.request("PUT", "pushrules/global/override/.m.rule.master/enabled", bob, json={"enabled": True})
    await send(harness, alice, room, "tea again")
    assert _counts(await sync(harness, bob), room) == {"notification_count": 2, "highlight_count": 1}


async def test_notifications_endpoint(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room = await create_room(harness, alice, invite=[bob.user_id])
    await join(harness, bob, room)
    first = await send(harness, alice, room, "one")
    second = await send(harness, alice, room, "two", **{"m.mentions": {"user_ids": [bob.user_id]}})
    third = await send(harness, alice, room, "three")
    status, body = await harness.request("GET", "notifications", bob)
    assert status == 200
    items = body["notifications"]
    assert [n["event"]["event_id"] for n in items[:3]] == [third, second, first]  # newest first
    assert items[3]["event"]["type"] == "m.room.member"  # the invite (.m.rule.invite_for_me)
    assert items[0]["room_id"] == room and items[0]["read"] is False and isinstance(items[0]["ts"], int)
    assert items[0]["actions"][0] == "notify" and "next_token" not in body
    status, body = await harness.request("GET", "notifications?only=highlight", bob)
    assert [n["event"]["event_id"] for n in body["notifications"]] == [second]
    status, page = await harness.request("GET", "notifications?limit=2", bob)
    assert [n["event"]["event_id"] for n in page["notifications"]] == [third, second]
    status, rest = await harness.request("GET", f"notifications?limit=2&from={page['next_token']}", bob)
    assert [n["event"]["event_id"] for n in rest["notifications"]][:1] == [first]
    await harness.request("POST", f"rooms/{q(room)}/receipt/m.read/{q(second)}", bob, json={})
    status, body = await harness.request("GET", "notifications", bob)
    assert [n["read"] for n in body["notifications"]] == [False, True, True, True]
    status, body = await harness.request("GET", "notifications?from=xyz", bob)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


async def test_invite_notifies_the_invitee(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    await create_room(harness, alice, invite=[bob.user_id])
    status, body = await harness.request("GET", "notifications", bob)
    assert status == 200
    assert [n["event"]["type"] for n in body["notifications"]] == ["m.room.member"]


async def test_pushers(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    pusher = {
        "app_id": "face.mcapp.appy.prod",
        "pushkey": "Xp/MzCt8/9DcSNE9cuiaoT5Ac55job3TdLSSmtmYl4A=",
        "kind": "http",
        "app_display_name": "Appy McAppface",
        "device_display_name": "Alice's Phone",
        "lang": "en-US",
        "profile_tag": "xyz",
        "data": {"url": "https://push.example.com/_matrix/push/v1/notify", "format": "event_id_only"},
    }
    status, body = await harness.request("GET", "pushers", alice)
    assert status == 200 and body == {"pushers": []}
    status, body = await harness.request("POST", "pushers/set", alice, json=pusher)
    assert status == 200 and body == {}
    status, body = await harness.request("GET", "pushers", alice)
    assert body == {"pushers": [pusher]}
    # the same app id and pushkey for another user takes it over unless `append`
    assert (await harness.request("POST", "pushers/set", bob, json=pusher))[0] == 200
    assert (await harness.request("GET", "pushers", alice))[1] == {"pushers": []}
    assert (await harness.request("POST", "pushers/set", alice, json={**pusher, "append": True}))[0] == 200
    assert len((await harness.request("GET", "pushers", bob))[1]["pushers"]) == 1
    assert len((await harness.request("GET", "pushers", alice))[1]["pushers"]) == 1
    # kind null deletes
    status, _ = await harness.request("POST", "pushers/set", alice, json={**pusher, "kind": None})
    assert status == 200
    assert (await harness.request("GET", "pushers", alice))[1] == {"pushers": []}


async def test_pusher_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    good = {
        "app_id": "a.b",
        "pushkey": "k",
        "kind": "http",
        "app_display_name": "A",
        "device_display_name": "D",
        "lang": "en",
        "data": {"url": "https://push.example.com/_matrix/push/v1/notify"},
    }
    cases = [
        ({k: v for k, v in good.items() if k != "app_id"}, "M_MISSING_PARAM"),
        ({k: v for k, v in good.items() if k != "kind"}, "M_MISSING_PARAM"),
        ({k: v for k, v in good.items() if k not in ("lang", "data")}, "M_MISSING_PARAM"),
        ({**good, "data": {}}, "M_INVALID_PARAM"),
        ({**good, "data": {"url": "https://push.example.com/elsewhere"}}, "M_INVALID_PARAM"),
        ({**good, "kind": "pigeon"}, "M_INVALID_PARAM"),
        ({**good, "app_id": "x" * 65}, "M_INVALID_PARAM"),
    ]
    for body, errcode in cases:
        status, resp = await harness.request("POST", "pushers/set", alice, json=body)
        assert status == 400 and resp["errcode"] == errcode, (body, resp)
    assert (await harness.request("GET", "pushers", alice))[1] == {"pushers": []}


async def test_ignoring_the_sender_stops_their_notifications_at_once(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room = await create_room(harness, alice, invite=[bob.user_id])
    await join(harness, bob, room)
    await send(harness, alice, room, "one")  # bob's rules in this room are in use from here
    assert _counts(await sync(harness, bob), room)["notification_count"] == 1
    path = f"user/{q(bob.user_id)}/account_data/m.ignored_user_list"
    status, _ = await harness.request("PUT", path, bob, json={"ignored_users": {alice.user_id: {}}})
    assert status == 200
    await send(harness, alice, room, "ignored")
    assert _counts(await sync(harness, bob), room)["notification_count"] == 1
    status, _ = await harness.request("PUT", path, bob, json={"ignored_users": {}})
    assert status == 200
    await send(harness, alice, room, "heard again")
    assert _counts(await sync(harness, bob), room)["notification_count"] == 2
