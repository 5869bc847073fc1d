"""Filters: POST /user/{userId}/filter, GET /user/{userId}/filter/{filterId}, and their use in /sync."""

from __future__ import annotations

import pytest

from .conftest import Harness
from .sync_helpers import create_room, q, send, sync, timeline_ids

pytestmark = pytest.mark.asyncio

FILTER = {
    "event_fields": ["type", "content", "sender"],
    "room": {"timeline": {"limit": 2, "types": ["m.room.message"]}, "state": {"lazy_load_members": True}},
    "presence": {"not_senders": ["@spam:hs.test"]},
}


async def test_upload_get_and_sync_with_filter_id(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("POST", f"user/{q(alice.user_id)}/filter", alice, json=FILTER)
    assert status == 200
    filter_id = body["filter_id"]
    assert isinstance(filter_id, str) and not filter_id.startswith("{")
    status, body = await harness.request("GET", f"user/{q(alice.user_id)}/filter/{filter_id}", alice)
    assert status == 200 and body == FILTER
    # the same definition again gets the same id; another one a new id
    again = await harness.request("POST", f"user/{q(alice.user_id)}/filter", alice, json=FILTER)
    assert again[1]["filter_id"] == filter_id
    other = await harness.request("POST", f"user/{q(alice.user_id)}/filter", alice, json={})
    assert other[1]["filter_id"] != filter_id
    room = await create_room(harness, alice)
    sent = [await send(harness, alice, room, f"m{i}") for i in range(3)]
    body = await sync(harness, alice, f"timeout=0&filter={filter_id}")
    assert timeline_ids(body, room) == sent[-2:]
    assert body["rooms"]["join"][room]["timeline"]["limited"] is True


async def test_filter_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    base = f"user/{q(alice.user_id)}/filter"
    status, body = await harness.request("POST", f"user/{q(bob.user_id)}/filter", alice, json={})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    filter_id = (await harness.request("POST", base, alice, json={}))[1]["filter_id"]
    status, body = await harness.request("GET", f"user/{q(alice.user_id)}/filter/{filter_id}", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    for missing in ("999", "abc", "12345678901234567890123"):
        status, body = await harness.request("GET", f"{base}/{q(missing)}", alice)
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    for bad in (
        [1],
        {"room": {"timeline": {"limit": -1}}},
        {"room": {"timeline": {"types": "m.room.message"}}},
        {"event_format": "xml"},
        {"presence": {"senders": [1]}},
    ):
        status, body = await harness.request("POST", base, alice, json=bad)
        assert status == 400 and body["errcode"] == "M_BAD_JSON", bad
    status, body = await harness.request("POST", base, alice, data=b"not json")
    assert status == 400 and body["errcode"] == "M_NOT_JSON"
    # another user's filter id is unknown to this user's sync
    status, body = await harness.request("GET", f"sync?filter={filter_id}", bob)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
