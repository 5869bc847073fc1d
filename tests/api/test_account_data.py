"""Account data (global and per room) and room tags, with their delivery in /sync."""

from __future__ import annotations

import pytest

from .conftest import Harness
from .sync_helpers import create_room, q, sync

pytestmark = pytest.mark.asyncio


async def test_global_account_data_roundtrip_and_sync(harness: Harness) -> None:
    alice = await harness.user("alice")
    path = f"user/{q(alice.user_id)}/account_data/im.vector.web.settings"
    status, body = await harness.request("GET", path, alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    since = (await sync(harness, alice))["next_batch"]
    status, body = await harness.request("PUT", path, alice, json={"theme": "dark"})
    assert status == 200 and body == {}
    status, body = await harness.request("GET", path, alice)
    assert status == 200 and body == {"theme": "dark"}
    delta = await sync(harness, alice, f"since={since}&timeout=0")
    assert delta["account_data"]["events"] == [{"type": "im.vector.web.settings", "content": {"theme": "dark"}}]
    # replaced, then seen once
    await harness.request("PUT", path, alice, json={"theme": "light"})
    delta2 = await sync(harness, alice, f"since={delta['next_batch']}&timeout=0")
    assert delta2["account_data"]["events"] == [{"type": "im.vector.web.settings", "content": {"theme": "light"}}]
    delta3 = await sync(harness, alice, f"since={delta2['next_batch']}&timeout=0")
    assert delta3["account_data"]["events"] == []
    initial = await sync(harness, alice)
    assert {"type": "im.vector.web.settings", "content": {"theme": "light"}} in initial["account_data"]["events"]
    # a filter can leave account data out
    f = q('{"account_data":{"not_types":["im.vector.*"]}}')
    filtered = await sync(harness, alice, f"timeout=0&filter={f}")
    assert all(e["type"] != "im.vector.web.settings" for e in filtered["account_data"]["events"])


async def test_room_account_data_and_sync(harness: Harness) -> None:
    alice = await harness.user("alice")
    room = await create_room(harness, alice)
    since = (await sync(harness, alice))["next_batch"]
    path = f"user/{q(alice.user_id)}/rooms/{q(room)}/account_data/org.example.note"
    status, body = await harness.request("PUT", path, alice, json={"note": "hi"})
    assert status == 200 and body == {}
    status, body = await harness.request("GET", path, alice)
    assert status == 200 and body == {"note": "hi"}
    delta = await sync(harness, alice, f"since={since}&timeout=0")
    entry = delta["rooms"]["join"][room]
    assert entry["account_data"]["events"] == [{"type": "org.example.note", "content": {"note": "hi"}}]
    assert entry["timeline"]["events"] == []
    assert delta["account_data"]["events"] == []  # not global
    initial = await sync(harness, alice)
    assert initial["rooms"]["join"][room]["account_data"]["events"] == [
        {"type": "org.example.note", "content": {"note": "hi"}}
    ]


async def test_tags(harness: Harness) -> None:
    alice = await harness.user("alice")
    room = await create_room(harness, alice)
    base = f"user/{q(alice.user_id)}/rooms/{q(room)}/tags"
    status, body = await harness.request("GET", base, alice)
    assert status == 200 and body == {"tags": {}}
    since = (await sync(harness, alice))["next_batch"]
    assert (await harness.request("PUT", f"{base}/m.favourite", alice, json={"order": 0.25}))[0] == 200
    assert (await harness.request("PUT", f"{base}/u.work", alice, json={}))[0] == 200
    status, body = await harness.request("GET", base, alice)
    assert body == {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}
    delta = await sync(harness, alice, f"since={since}&timeout=0")
    assert delta["rooms"]["join"][room]["account_data"]["events"] == [
        {"type": "m.tag", "content": {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}}
    ]
    status, body = await harness.request("DELETE", f"{base}/m.favourite", alice)
    assert status == 200 and body == {}
    assert (await harness.request("GET", base, alice))[1] == {"tags": {"u.work": {}}}
    assert (await harness.request("DELETE", f"{base}/not.there", alice))[0] == 200
    status, body = await harness.request("PUT", f"{base}/u.bad", alice, json={"order": "first"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


async def test_account_data_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room = await create_room(harness, alice)
    other = f"user/{q(bob.user_id)}/account_data/x.y"
    for method in ("GET", "PUT"):
        status, body = await harness.request(method, other, alice, json={} if method == "PUT" else None)
        assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    mine = f"user/{q(alice.user_id)}"
    status, body = await harness.request("PUT", f"{mine}/account_data/m.push_rules", alice, json={})
    assert status == 405 and body["errcode"] == "M_BAD_JSON"
    status, body = await harness.request("PUT", f"{mine}/rooms/{q(room)}/account_data/m.fully_read", alice, json={})
    assert status == 405 and body["errcode"] == "M_BAD_JSON"
    status, body = await harness.request("PUT", f"{mine}/account_data/x.y", alice, json=[1, 2])
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await harness.request("PUT", f"{mine}/account_data/x.y", alice, data=b"{oops")
    assert status == 400 and body["errcode"] == "M_NOT_JSON"
    status, body = await harness.request("GET", f"{mine}/rooms/{q('@notaroom:hs.test')}/account_data/x.y", alice)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("GET", f"{mine}/rooms/{q(room)}/account_data/x.y", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"{mine}/rooms/{q(room)}/tags", bob)
    assert status == 403
