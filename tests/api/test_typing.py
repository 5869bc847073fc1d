"""Typing notifications: PUT /rooms/{roomId}/typing/{userId}, delivery in /sync, expiry."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import Harness
from .sync_helpers import create_room, join, q, sync, wait_until

pytestmark = pytest.mark.asyncio


def _typing(body: dict, room: str) -> list[str] | None:
    entry = body["rooms"]["join"].get(room)
    for event in (entry or {}).get("ephemeral", {}).get("events", []):
        if event["type"] == "m.typing":
            return list(event["content"]["user_ids"])
    return None


async def test_typing_appears_wakes_and_expires(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room = await create_room(harness, alice, invite=[bob.user_id])
    await join(harness, bob, room)
    since = (await sync(harness, alice))["next_batch"]
    poll = asyncio.create_task(sync(harness, alice, f"since={since}&timeout=20000"))
    await wait_until(lambda: harness.hs.notifier.waiting(alice.user_id) > 0)
    status, resp = await harness.request(
        "PUT", f"rooms/{q(room)}/typing/{q(bob.user_id)}", bob, json={"typing": True, "timeout": 300}
    )
    assert status == 200 and resp == {}
    body = await asyncio.wait_for(poll, 10)
    assert _typing(body, room) == [bob.user_id]
    assert _typing(await sync(harness, alice), room) == [bob.user_id]  # initial syncs show who types now
    # the timeout passes: a long-polling sync learns that nobody types any more
    body = await asyncio.wait_for(sync(harness, alice, f"since={body['next_batch']}&timeout=20000"), 10)
    assert _typing(body, room) == []
    assert _typing(await sync(harness, alice), room) is None


async def test_typing_stop_and_refresh(harness: Harness) -> None:
    alice = await harness.user("alice")
    room = await create_room(harness, alice)
    path = f"rooms/{q(room)}/typing/{q(alice.user_id)}"
    assert (await harness.request("PUT", path, alice, json={"typing": True, "timeout": 30000}))[0] == 200
    since = (await sync(harness, alice))["next_batch"]
    # typing again only moves the expiry: nothing new for syncs
    assert (await harness.request("PUT", path, alice, json={"typing": True, "timeout": 30000}))[0] == 200
    assert _typing(await sync(harness, alice, f"since={since}&timeout=0"), room) is None
    assert (await harness.request("PUT", path, alice, json={"typing": False}))[0] == 200
    assert _typing(await sync(harness, alice, f"since={since}&timeout=0"), room) == []


async def test_typing_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room = await create_room(harness, alice)
    cases = [
        (alice, bob.user_id, {"typing": True}, 403, "M_FORBIDDEN"),  # someone else's typing
        (bob, bob.user_id, {"typing": True}, 403, "M_FORBIDDEN"),  # not in the room
        (alice, alice.user_id, {"timeout": 100}, 400, "M_BAD_JSON"),
        (alice, alice.user_id, {"typing": "yes"}, 400, "M_BAD_JSON"),
        (alice, alice.user_id, {"typing": True, "timeout": "long"}, 400, "M_BAD_JSON"),
    ]
    for user, target, body, want, errcode in cases:
        status, resp = await harness.request("PUT", f"rooms/{q(room)}/typing/{q(target)}", user, json=body)
        assert (status, resp.get("errcode")) == (want, errcode), (body, resp)
    status, resp = await harness.request("PUT", f"rooms/{q(room)}/typing/{q(alice.user_id)}", alice, data=b"nope")
    assert status == 400 and resp["errcode"] == "M_NOT_JSON"
