"""Helpers for the sync, receipts, typing, push and account-data tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson

from .conftest import Harness, User

# The room helpers are shared with the rooms tests (re-exported for the sync tests' imports).
from .rooms_helpers import create_room as create_room
from .rooms_helpers import invite as invite
from .rooms_helpers import join as join
from .rooms_helpers import put_state as put_state
from .rooms_helpers import q as q
from .rooms_helpers import send as send


def inline(filter_json: dict[str, Any]) -> str:
    return q(orjson.dumps(filter_json).decode())


async def leave(harness: Harness, user: User, room_id: str) -> None:
    status, resp = await harness.request("POST", f"rooms/{q(room_id)}/leave", user, json={})
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
