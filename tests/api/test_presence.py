"""Presence: GET/PUT /presence/{userId}/status and m.presence in /sync."""

from __future__ import annotations

import pytest

from .conftest import Harness
from .sync_helpers import create_room, join, q, sync

pytestmark = pytest.mark.asyncio


def _presence(body: dict) -> dict[str, dict]:
    return {e["sender"]: e["content"] for e in body["presence"]["events"]}


async def test_set_get_and_sync(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room = await create_room(harness, alice, invite=[bob.user_id])
    await join(harness, bob, room)
    since = (await sync(harness, bob, "timeout=0&set_presence=offline"))["next_batch"]
    status, body = await harness.request(
        "PUT", f"presence/{q(alice.user_id)}/status", alice, json={"presence": "unavailable", "status_msg": "lunch"}
    )
    assert status == 200 and body == {}
    status, body = await harness.request("GET", f"presence/{q(alice.user_id)}/status", bob)
    assert status == 200
    assert body["presence"] == "unavailable" and body["status_msg"] == "lunch"
    assert isinstance(body["last_active_ago"], int)
    delta = await sync(harness, bob, f"since={since}&timeout=0&set_presence=offline")
    assert _presence(delta)[alice.user_id]["presence"] == "unavailable"
    assert _presence(delta)[alice.user_id]["status_msg"] == "lunch"
    initial = await sync(harness, bob, "timeout=0&set_presence=offline")
    assert _presence(initial)[alice.user_id]["presence"] == "unavailable"
    # syncing marks a user online (the default of set_presence)
    await sync(harness, bob)
    status, body = await harness.request("GET", f"presence/{q(bob.user_id)}/status", alice)
    assert body["presence"] == "online" and body["currently_active"] is True


async def test_presence_of_strangers_and_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    carol = await harness.user("carol")
    status, body = await harness.request("GET", f"presence/{q(carol.user_id)}/status", alice)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("GET", f"presence/{q('@ghost:hs.test')}/status", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"presence/{q(alice.user_id)}/status", alice)
    assert status == 200 and body["presence"] == "offline"
    carol_status = f"presence/{q(carol.user_id)}/status"
    status, body = await harness.request("PUT", carol_status, alice, json={"presence": "online"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    for bad in ({"presence": "busy"}, {}, {"presence": "online", "status_msg": 5}):
        status, body = await harness.request("PUT", f"presence/{q(alice.user_id)}/status", alice, json=bad)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", bad
    # no presence of users who share no room with us in sync
    await harness.request("PUT", f"presence/{q(carol.user_id)}/status", carol, json={"presence": "online"})
    assert carol.user_id not in _presence(await sync(harness, alice))


@pytest.mark.parametrize("harness", [{"presence": False}], indirect=True)
async def test_presence_can_be_switched_off(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, _ = await harness.request("PUT", f"presence/{q(alice.user_id)}/status", alice, json={"presence": "online"})
    assert status == 200
    status, body = await harness.request("GET", f"presence/{q(alice.user_id)}/status", alice)
    assert body == {"presence": "offline"}
    assert (await sync(harness, alice))["presence"]["events"] == []
