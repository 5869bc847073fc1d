"""One validation path for every body (homeserver.validation): on endpoints that used to check their
bodies by hand, a missing required key is 400 `M_MISSING_PARAM` and a key of the wrong type 400
`M_BAD_JSON` (spec: client-server-api "Common error codes"), the message naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Harness, User
from .rooms_helpers import create_room, q


async def _cases(harness: Harness, admin: User, bob: User) -> list[tuple[str, str, User, dict[str, Any], str]]:
    """(method, path, who, a good body, the key to drop or spoil)."""
    room = await create_room(harness, admin, preset="public_chat")
    status, _ = await harness.request("POST", f"rooms/{q(room)}/join", bob)
    assert status == 200
    return [
        ("PUT", f"directory/room/{q('#missing:hs.test')}", admin, {"room_id": room}, "room_id"),
        ("POST", f"rooms/{q(room)}/report", bob, {"reason": "spam"}, "reason"),
        ("POST", f"users/{q(bob.user_id)}/report", admin, {"reason": "spam"}, "reason"),
        ("POST", f"rooms/{q(room)}/upgrade", admin, {"new_version": "11"}, "new_version"),
        ("POST", "search", bob, {"search_categories": {}}, "search_categories"),
        ("PUT", f"/_matrix/client/v1/admin/lock/{bob.user_id}", admin, {"locked": False}, "locked"),
        ("POST", "user_directory/search", bob, {"search_term": "x"}, "search_term"),
        ("POST", f"rooms/{q(room)}/kick", admin, {"user_id": bob.user_id, "reason": "x"}, "user_id"),
    ]


@pytest.mark.parametrize("index", range(8))
async def test_missing_key_and_wrong_type(harness: Harness, index: int) -> None:
    admin = await harness.user("admin", admin=True)
    bob = await harness.user("bob")
    method, path, who, good, key = (await _cases(harness, admin, bob))[index]

    missing = {k: v for k, v in good.items() if k != key}
    status, body = await harness.request(method, path, who, json=missing)
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM", (path, body)
    assert key in body["error"]

    # strict types: a number where a string (or object, or boolean) belongs is refused, not converted
    status, body = await harness.request(method, path, who, json={**good, key: 1})
    assert status == 400 and body["errcode"] == "M_BAD_JSON", (path, body)
    assert key in body["error"]


async def test_nested_location_in_message(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request(
        "POST", "createRoom", alice, json={"initial_state": [{"type": "m.room.topic", "content": {}}, {"content": {}}]}
    )
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    assert "initial_state.1.type" in body["error"]
    status, body = await harness.request("POST", "createRoom", alice, json={"is_direct": "true"})
    assert status == 400 and body["errcode"] == "M_BAD_JSON" and "is_direct" in body["error"]


async def test_search_needs_a_search_term(harness: Harness) -> None:
    user = await harness.user("searcher")
    status, body = await harness.request("POST", "search", user, json={"search_categories": {"room_events": {}}})
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    assert "search_term" in body["error"]
    wrong = {"search_categories": {"room_events": {"search_term": 5}}}
    status, body = await harness.request("POST", "search", user, json=wrong)
    assert (status, body["errcode"]) == (400, "M_BAD_JSON")
