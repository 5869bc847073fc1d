"""Small helpers for the room API tests: create rooms, send messages, join, read state."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .conftest import Harness, User


def q(value: str) -> str:
    """A path segment, percent-encoded as clients do (`!`, `#`, `$`, `:`, `/`)."""
    return quote(value, safe="")


async def create_room(harness: Harness, user: User, **body: Any) -> str:
    status, resp = await harness.request("POST", "createRoom", user, json=body)
    assert status == 200, resp
    room_id: str = resp["room_id"]
    return room_id


_txn_counter = iter(range(1, 10**9))


async def send(harness: Harness, user: User, room_id: str, body: str = "hello", **content: Any) -> str:
    payload = {"msgtype": "m.text", "body": body, **content}
    status, resp = await harness.request(
        "PUT", f"rooms/{q(room_id)}/send/m.room.message/txn{next(_txn_counter)}", user, json=payload
    )
    assert status == 200, resp
    event_id: str = resp["event_id"]
    return event_id


async def send_event(harness: Harness, user: User, room_id: str, event_type: str, content: dict[str, Any]) -> str:
    status, resp = await harness.request(
        "PUT", f"rooms/{q(room_id)}/send/{q(event_type)}/txn{next(_txn_counter)}", user, json=content
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


async def invite(harness: Harness, inviter: User, room_id: str, invitee: User) -> None:
    status, resp = await harness.request(
        "POST", f"rooms/{q(room_id)}/invite", inviter, json={"user_id": invitee.user_id}
    )
    assert status == 200, resp


async def messages(harness: Harness, user: User, room_id: str, query: str = "dir=b") -> tuple[int, Any]:
    return await harness.request("GET", f"rooms/{q(room_id)}/messages?{query}", user)


async def bodies(harness: Harness, user: User, room_id: str, query: str = "dir=b&limit=100") -> list[str]:
    """The bodies of the m.room.message events a user can page through."""
    status, resp = await messages(harness, user, room_id, query)
    assert status == 200, resp
    return [e["content"].get("body") for e in resp["chunk"] if e["type"] == "m.room.message"]


async def get_unchecked(harness: Harness, path: str, user: User) -> tuple[int, Any]:
    """A GET that skips the OpenAPI response check: the spec's schema for GET /state/{type}/{key}
    with format=event is `oneOf` [StateEvent, object], which no full event can satisfy (it matches both)."""
    resp = await harness.client.get("/_matrix/client/v3/" + path, headers=user.headers)
    return resp.status, await resp.json()
