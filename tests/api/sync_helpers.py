"""Helpers for the sync, receipts, typing, push and account-data tests."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import orjson

from .conftest import Harness, User

_txn = itertools.count(1)


def q(value: str) -> str:
    return quote(value, safe="")


def inline(filter_json: dict[str, Any]) -> str:
    return q(orjson.dumps(filter_json).decode())


async def create_room(harness: Harness, user: User, **body: Any) -> str:
    status, resp = await harness.request("POST", "createRoom", user, json=body)
    assert status == 200, resp
    room_id: str = resp["room_id"]
    return room_id


async def send(harness: Harness, user: User, room_id: str, body: str = "hello", **content: Any) -> str:
    payload = {"msgtype": "m.text", "body": body, **content}
    status, resp = await harness.request(
        "PUT", f"rooms/{q(room_id)}/send/m.room.message/sync{next(_txn)}", user, json=payload
    )
    assert status == 200, resp
    event_id: str = resp["event_id"]
    return event_id


async def put_state(
    harness: Harness, user: User, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
) -> str:
    status, resp = await harness.request(
        "PUT", f"rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}", user, json=content
    )
    assert status == 200, resp
    event_id: str = resp["event_id"]
    return event_id


async def join(harness: Harness, user: User, room_id: str) -> None:
    status, resp = await harness.request("POST", f"join/{q(room_id)}", user, json={})
    assert status == 200, resp


async def leave(harness: Harness, user: User, room_id: str) -> None:
    status, resp = await harness.request("POST", f"rooms/{q(room_id)}/leave", user, json={})
    assert status == 200, resp


async def invite(harness: Harness, user: User, room_id: str, invitee: User) -> None:
    status, resp = await harness.request(
        "POST", f"rooms/{q(room_id)}/invite", user, json={"user_id": invitee.user_id}
    )
    assert status == 200, resp


async def sync(harness: Harness, user: User, query: str = "timeout=0") -> dict[str, Any]:
    status, body = await harness.request("GET", f"sync?{query}", user)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


def timeline_ids(body: dict[str, Any], room_id: str, section: str = "join") -> list[str]:
    return [e["event_id"] for e in body["rooms"][section][room_id]["timeline"]["events"]]


def types_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll with a deadline (no sleeps to wait for things)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.002)
