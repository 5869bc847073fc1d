"""Receipts and read markers: POST /rooms/{roomId}/receipt/{receiptType}/{eventId} and
/read_markers, their delivery in /sync, private receipts, threaded receipts, and the unread counts
they clear."""

from __future__ import annotations

import pytest

from .conftest import Harness
from .sync_helpers import create_room, join, q, send, sync

pytestmark = pytest.mark.asyncio


async def _pair(harness: Harness) -> tuple[object, object, str]:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room = await create_room(harness, alice, invite=[bob.user_id])
    await join(harness, bob, room)
    return alice, bob, room


def _counts(body: dict, room: str) -> dict:
    return body["rooms"]["join"][room]["unread_notifications"]


def _receipts(body: dict, room: str) -> dict:
    entry = body["rooms"]["join"].get(room, {})
    for event in entry.get("ephemeral", {}).get("events", []):
        if event["type"] == "m.receipt":
            return event["content"]
    return {}


async def test_read_receipt_is_shared_and_clears_counts(harness: Harness) -> None:
    alice, bob, room = await _pair(harness)
    alice_since = (await sync(harness, alice))["next_batch"]
    await send(harness, alice, room, "one")
    two = await send(harness, alice, room, "two")
    body = await sync(harness, bob)
    assert _counts(body, room) == {"notification_count": 2, "highlight_count": 0}
    status, resp = await harness.request("POST", f"rooms/{q(room)}/receipt/m.read/{q(two)}", bob, json={})
    assert status == 200 and resp == {}
    after = await sync(harness, bob, f"since={body['next_batch']}&timeout=0")
    assert _counts(after, room) == {"notification_count": 0, "highlight_count": 0}
    # alice sees bob's receipt in the room's ephemeral events
    seen = await sync(harness, alice, f"since={alice_since}&timeout=0")
    content = _receipts(seen, room)
    assert bob.user_id in content[two]["m.read"]
    assert isinstance(content[two]["m.read"][bob.user_id]["ts"], int)
    # and an initial sync carries the room's current receipts
    assert bob.user_id in _receipts(await sync(harness, alice), room)[two]["m.read"]


async def test_private_receipt_is_only_for_its_owner(harness: Harness) -> None:
    alice, bob, room = await _pair(harness)
    alice_since = (await sync(harness, alice))["next_batch"]
    msg = await send(harness, alice, room, "secret read")
    status, _ = await harness.request("POST", f"rooms/{q(room)}/receipt/m.read.private/{q(msg)}", bob, json={})
    assert status == 200
    assert _receipts(await sync(harness, alice, f"since={alice_since}&timeout=0"), room) == {}
    assert _receipts(await sync(harness, alice), room) == {}
    bob_body = await sync(harness, bob)
    assert bob.user_id in _receipts(bob_body, room)[msg]["m.read.private"]
    assert _counts(bob_body, room)["notification_count"] == 0


async def test_receipts_never_move_backwards(harness: Harness) -> None:
    alice, bob, room = await _pair(harness)
    first = await send(harness, alice, room, "one")
    second = await send(harness, alice, room, "two")
    for event_id in (second, first):
        status, _ = await harness.request("POST", f"rooms/{q(room)}/receipt/m.read/{q(event_id)}", bob, json={})
        assert status == 200
    content = _receipts(await sync(harness, alice), room)
    assert bob.user_id in content[second]["m.read"] and first not in content


async def test_threaded_receipts(harness: Harness) -> None:
    alice, bob, room = await _pair(harness)
    root = await send(harness, alice, room, "root")
    in_thread = await send(
        harness, alice, room, "in thread", **{"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    )
    await send(harness, alice, room, "main again")
    threads = '{"room":{"timeline":{"unread_thread_notifications":true}}}'
    body = await sync(harness, bob, f"timeout=0&filter={q(threads)}")
    entry = body["rooms"]["join"][room]
    assert entry["unread_notifications"]["notification_count"] == 2  # main timeline only
    assert entry["unread_thread_notifications"] == {root: {"notification_count": 1, "highlight_count": 0}}
    # a receipt in the thread clears the thread, not the main timeline
    status, _ = await harness.request(
        "POST", f"rooms/{q(room)}/receipt/m.read/{q(in_thread)}", bob, json={"thread_id": root}
    )
    assert status == 200
    entry = (await sync(harness, bob, f"timeout=0&filter={q(threads)}"))["rooms"]["join"][room]
    assert entry["unread_notifications"]["notification_count"] == 2
    assert "unread_thread_notifications" not in entry
    assert _counts(await sync(harness, bob), room)["notification_count"] == 2  # all threads together
    content = _receipts(await sync(harness, alice), room)
    assert content[in_thread]["m.read"][bob.user_id]["thread_id"] == root


async def test_fully_read_and_read_markers(harness: Harness) -> None:
    alice, bob, room = await _pair(harness)
    one = await send(harness, alice, room, "one")
    two = await send(harness, alice, room, "two")
    since = (await sync(harness, bob))["next_batch"]
    status, _ = await harness.request("POST", f"rooms/{q(room)}/receipt/m.fully_read/{q(one)}", bob, json={})
    assert status == 200
    status, resp = await harness.request(
        "POST", f"rooms/{q(room)}/read_markers", bob, json={"m.fully_read": two, "m.read.private": two}
    )
    assert status == 200 and resp == {}
    body = await sync(harness, bob, f"since={since}&timeout=0")
    entry = body["rooms"]["join"][room]
    assert entry["account_data"]["events"] == [{"type": "m.fully_read", "content": {"event_id": two}}]
    assert bob.user_id in _receipts(body, room)[two]["m.read.private"]
    assert entry["unread_notifications"]["notification_count"] == 0
    status, data = await harness.request("GET", f"user/{q(bob.user_id)}/rooms/{q(room)}/account_data/m.fully_read", bob)
    assert status == 200 and data == {"event_id": two}


async def test_receipt_errors(harness: Harness) -> None:
    alice, bob, room = await _pair(harness)
    carol = await harness.user("carol")
    msg = await send(harness, alice, room, "x")
    cases = [
        (bob, f"rooms/{q(room)}/receipt/m.unknown/{q(msg)}", {}, 400, "M_INVALID_PARAM"),
        (bob, f"rooms/{q(room)}/receipt/m.read/{q(msg)}", {"thread_id": ""}, 400, "M_INVALID_PARAM"),
        (bob, f"rooms/{q(room)}/receipt/m.read/{q(msg)}", {"thread_id": 5}, 400, "M_INVALID_PARAM"),
        (bob, f"rooms/{q(room)}/receipt/m.fully_read/{q(msg)}", {"thread_id": "main"}, 400, "M_INVALID_PARAM"),
        (bob, f"rooms/{q(room)}/receipt/m.read/{q('$nope')}", {}, 404, "M_NOT_FOUND"),
        (carol, f"rooms/{q(room)}/receipt/m.read/{q(msg)}", {}, 403, "M_FORBIDDEN"),
        (bob, f"rooms/{q('!nowhere:hs.test')}/receipt/m.read/{q(msg)}", {}, 403, "M_FORBIDDEN"),
        (bob, f"rooms/{q(room)}/read_markers", {"m.fully_read": 3}, 400, "M_INVALID_PARAM"),
        (bob, f"rooms/{q(room)}/read_markers", {"m.read": "$missing"}, 404, "M_NOT_FOUND"),
        (carol, f"rooms/{q(room)}/read_markers", {"m.read": msg}, 403, "M_FORBIDDEN"),
    ]
    for user, path, body, want_status, errcode in cases:
        status, resp = await harness.request("POST", path, user, json=body)
        assert (status, resp.get("errcode")) == (want_status, errcode), (path, body, resp)
    status, resp = await harness.request("POST", f"rooms/{q(room)}/receipt/m.read/{q(msg)}")
    assert status == 401
