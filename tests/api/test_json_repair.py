"""The schema 2 -> 3 repair (storage/json_repair.py): a store that already holds client JSON nested
too deep to re-encode serves every user's /sync again once opened, and keeps every good value.

The bad values are written straight into the tables, as the server wrote them before the nesting
rule at the JSON edge: then a to-device message ~250 levels deep broke its recipient's /sync and
deep account data its owner's, for good.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from homeserver.push import rules as push_rules
from storage import engine
from storage.account_data import AccountDataStore
from storage.codec import u64
from storage.device_keys import DeviceKeyStore
from storage.engine import Store
from storage.filters import FilterStore
from storage.push import PushStore
from storage.to_device import ToDeviceStore

from .conftest import Harness, User, make_config, running
from .rooms_helpers import create_room, join, q

# Stored this deep, a value still fits orjson's 255 levels, but not inside a /sync answer.
DEEP = 252


def deep(levels: int = DEEP) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for _ in range(levels - 1):
        value = {"n": value}
    return value


async def sync_status(h: Harness, user: User, query: str = "timeout=0") -> tuple[int, Any]:
    resp = await h.client.get(f"/_matrix/client/v3/sync?{query}", headers=user.headers)
    return resp.status, await resp.json()


async def write_bad_values(db_path: Path, alice: User, bob: User, room_id: str, filter_id: int) -> None:
    with Store(db_path) as store:
        account_data, device_keys, to_device, push, filters = (
            AccountDataStore(store),
            DeviceKeyStore(store),
            ToDeviceStore(store),
            PushStore(store),
            FilterStore(store),
        )
        tags = (account_data.get(alice.user_id, room_id, "m.tag") or (0, {}))[1]
        record = push.rules(alice.user_id) or push_rules.empty_record()
        record["rules"]["override"].insert(
            0, {"rule_id": "bad", "enabled": True, "conditions": [], "actions": [deep(240)]}
        )
        batch = store.batch()
        with batch:
            account_data.put(alice.user_id, "", "x.bad", deep(), batch.next_count(), batch)
            account_data.put(alice.user_id, room_id, "x.bad", deep(), batch.next_count(), batch)
            tags = {"tags": {**tags["tags"], "u.bad": deep(DEEP - 2)}}
            account_data.put(alice.user_id, room_id, "m.tag", tags, batch.next_count(), batch)
            message = {"sender": alice.user_id, "type": "m.bad", "content": deep()}
            to_device.put(bob.user_id, bob.device_id, message, batch)
            push.put_rules(alice.user_id, {**record, "stream": batch.next_count()}, batch)
            pusher = {"app_id": "bad.app", "pushkey": "k", "kind": "http", "data": deep(), "lang": "en"}
            push.put_pusher(alice.user_id, pusher, batch)
            filters.put(alice.user_id, filter_id, {"room": {"timeline": {"limit": 3}}, "x": deep()}, batch)
            device_keys.put(bob.user_id, bob.device_id, {"user_id": bob.user_id, "unsigned": deep()}, batch)
            await batch.commit()


def set_schema(db_path: Path, version: int) -> None:
    with Store(db_path) as store:
        store.db.put(engine.META.prefix + b"schema_version", u64(version))


async def test_repair_restores_sync_and_keeps_good_values(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db_path = tmp_path / "data" / "db"
    async with running(make_config(tmp_path)) as h:
        alice, bob = await h.user("alice"), await h.user("bob")
        room_id = await create_room(h, alice, preset="public_chat")
        await join(h, bob, room_id)
        base = f"user/{q(alice.user_id)}"
        for path, body in [
            (f"{base}/account_data/x.good", {"ok": 1}),
            (f"{base}/rooms/{q(room_id)}/account_data/x.good", {"ok": 2}),
            (f"{base}/rooms/{q(room_id)}/tags/u.good", {"order": 0.5}),
        ]:
            status, _ = await h.request("PUT", path, alice, json=body)
            assert status == 200
        status, made = await h.request("POST", f"{base}/filter", alice, json={"room": {"timeline": {"limit": 3}}})
        assert status == 200
        status, _ = await h.request("POST", f"{base}/filter", alice, json={"presence": {"limit": 1}})
        assert status == 200
        good_message = {"messages": {bob.user_id: {bob.device_id: {"hello": "bob"}}}}
        status, _ = await h.request("PUT", "sendToDevice/m.good/t1", alice, json=good_message)
        assert status == 200
    bad_filter = int(made["filter_id"]) + 1
    await write_bad_values(db_path, alice, bob, room_id, bad_filter)

    # Without the repair these values break both users' /sync (the reason for the repair).
    async with running(make_config(tmp_path)) as h:
        assert (await sync_status(h, alice))[0] == 500
        assert (await sync_status(h, bob))[0] == 500

    set_schema(db_path, 2)
    with caplog.at_level(logging.WARNING, logger="storage.json_repair"):
        async with running(make_config(tmp_path)) as h:
            assert h.hs.db.store.schema_version == engine.SCHEMA_VERSION
            status, body = await sync_status(h, alice)
            assert status == 200, body
            global_data = {e["type"]: e["content"] for e in body["account_data"]["events"]}
            assert global_data["x.good"] == {"ok": 1} and "x.bad" not in global_data
            assert global_data["m.push_rules"]["global"]["override"][0]["rule_id"] != "bad"
            room_data = {e["type"]: e["content"] for e in body["rooms"]["join"][room_id]["account_data"]["events"]}
            assert room_data["x.good"] == {"ok": 2} and "x.bad" not in room_data
            assert room_data["m.tag"] == {"tags": {"u.good": {"order": 0.5}}}
            status, again = await sync_status(h, alice, f"timeout=0&since={body['next_batch']}")
            assert status == 200, again

            status, body = await sync_status(h, bob)
            assert status == 200, body
            assert [(m["type"], m["content"]) for m in body["to_device"]["events"]] == [("m.good", {"hello": "bob"})]
            status, again = await sync_status(h, bob, f"timeout=0&since={body['next_batch']}")
            assert status == 200, again

            status, got = await h.request("GET", f"user/{q(alice.user_id)}/filter/{bad_filter}", alice)
            assert status == 200 and got == {"room": {"timeline": {"limit": 3}}}
            status, got = await h.request("GET", "pushers", alice)
            assert status == 200 and got == {"pushers": []}
            status, got = await h.request("POST", "keys/query", alice, json={"device_keys": {bob.user_id: []}})
            assert status == 200 and got["device_keys"].get(bob.user_id, {}) == {}
    lines = [r.getMessage() for r in caplog.records if r.name == "storage.json_repair"]
    assert len(lines) == 8, lines
    assert sum(alice.user_id in line for line in lines) == 6 and sum(bob.user_id in line for line in lines) == 2
