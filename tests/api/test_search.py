"""POST /search: the room_events category over the rooms a user may see."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.rooms.search import tokenize

from .conftest import Harness, User
from .rooms_helpers import create_room, join, put_state, q, send

pytestmark = pytest.mark.asyncio


async def search(harness: Harness, user: User, criteria: dict[str, Any], next_batch: str | None = None) -> Any:
    path = "search" + (f"?next_batch={next_batch}" if next_batch else "")
    status, body = await harness.request("POST", path, user, json={"search_categories": {"room_events": criteria}})
    assert status == 200, body
    return body["search_categories"]["room_events"]


def found(result: Any) -> list[str]:
    return [r["result"]["content"].get("body") or r["result"]["content"].get("name") for r in result["results"]]


async def test_search_finds_words_in_visible_rooms(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    shared = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, shared)
    private = await create_room(harness, alice)
    await send(harness, alice, shared, "The quick brown fox")
    await send(harness, bob, shared, "a lazy dog and a fox")
    await send(harness, alice, private, "secret fox den")
    await send(harness, alice, shared, "nothing here")
    result = await search(harness, bob, {"search_term": "fox"})
    assert sorted(found(result)) == ["The quick brown fox", "a lazy dog and a fox"]
    assert result["count"] == 2 and result["highlights"] == ["fox"]
    assert all(r["rank"] > 0 for r in result["results"])
    # alice sees her private room too; every term must match (prefixes count)
    result = await search(harness, alice, {"search_term": "FOX qui"})
    assert found(result) == ["The quick brown fox"]
    result = await search(harness, alice, {"search_term": "fox", "order_by": "recent"})
    assert found(result) == ["secret fox den", "a lazy dog and a fox", "The quick brown fox"]
    assert await search(harness, alice, {"search_term": "   "}) == {"count": 0, "highlights": [], "results": []}


async def test_search_respects_history_visibility_and_leaving(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(
        harness,
        alice,
        preset="public_chat",
        initial_state=[{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}],
    )
    await send(harness, alice, room_id, "apple before")
    await join(harness, bob, room_id)
    await send(harness, alice, room_id, "apple during")
    status, _ = await harness.request("POST", f"rooms/{q(room_id)}/leave", bob)
    assert status == 200
    await send(harness, alice, room_id, "apple after")
    assert found(await search(harness, bob, {"search_term": "apple"})) == ["apple during"]
    _status, _ = await harness.request("POST", f"rooms/{q(room_id)}/forget", bob)
    assert found(await search(harness, bob, {"search_term": "apple"})) == []


async def test_search_keys_filter_ordering_pagination_and_context(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, preset="public_chat", name="Banana republic", topic="banana talk")
    other = await create_room(harness, alice, name="elsewhere")
    await join(harness, bob, room_id)
    for i in range(5):
        await send(harness, alice if i % 2 else bob, room_id, f"banana number {i}")
    await send(harness, alice, other, "banana abroad")
    await put_state(harness, alice, room_id, "m.room.topic", {"topic": "new", "m.topic": [{"body": "banana bread"}]})

    result = await search(harness, alice, {"search_term": "banana", "keys": ["content.name"]})
    assert found(result) == ["Banana republic"]
    result = await search(harness, alice, {"search_term": "banana", "keys": ["content.topic"], "order_by": "recent"})
    assert [r["result"]["content"]["topic"] for r in result["results"]] == ["new", "banana talk"]
    result = await search(
        harness,
        alice,
        {"search_term": "banana", "keys": ["content.body"], "filter": {"rooms": [room_id], "senders": [bob.user_id]}},
    )
    assert sorted(found(result)) == ["banana number 0", "banana number 2", "banana number 4"]
    # pagination, by recency
    criteria = {"search_term": "banana", "keys": ["content.body"], "order_by": "recent", "filter": {"limit": 2}}
    page1 = await search(harness, alice, criteria)
    assert found(page1) == ["banana abroad", "banana number 4"] and page1["count"] == 6
    page2 = await search(harness, alice, criteria, page1["next_batch"])
    assert found(page2) == ["banana number 3", "banana number 2"]
    page3 = await search(harness, alice, criteria, page2["next_batch"])
    assert found(page3) == ["banana number 1", "banana number 0"] and "next_batch" not in page3
    # by rank
    rank_criteria = {"search_term": "banana", "keys": ["content.body"], "filter": {"limit": 4}}
    first = await search(harness, alice, rank_criteria)
    second = await search(harness, alice, rank_criteria, first["next_batch"])
    assert len(first["results"]) == 4 and len(second["results"]) == 2 and "next_batch" not in second
    # context, profiles, groups and state
    result = await search(
        harness,
        alice,
        {
            "search_term": "number 2",
            "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": True},
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
            "include_state": True,
        },
    )
    assert found(result) == ["banana number 2"]
    ctx = result["results"][0]["context"]
    assert [e["content"]["body"] for e in ctx["events_before"]] == ["banana number 1"]
    assert [e["content"]["body"] for e in ctx["events_after"]] == ["banana number 3"]
    assert ctx["start"].startswith("t") and ctx["end"].startswith("t")
    assert set(ctx["profile_info"]) == {alice.user_id, bob.user_id}
    assert ctx["profile_info"][bob.user_id] == {"displayname": "bob"}
    event_id = result["results"][0]["result"]["event_id"]
    assert result["groups"]["room_id"][room_id]["results"] == [event_id]
    assert result["groups"]["sender"][bob.user_id] == {"order": 1, "results": [event_id]}
    assert {e["type"] for e in result["state"][room_id]} >= {"m.room.create", "m.room.name"}


async def test_redacted_events_leave_the_index(harness: Harness) -> None:
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice)
    event_id = await send(harness, alice, room_id, "embarrassing typo")
    assert found(await search(harness, alice, {"search_term": "typo"})) == ["embarrassing typo"]
    status, _ = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q(event_id)}/1", alice, json={})
    assert status == 200
    assert found(await search(harness, alice, {"search_term": "typo"})) == []


async def test_search_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    cases: list[tuple[Any, str]] = [
        ({}, "M_MISSING_PARAM"),
        ({"search_categories": []}, "M_BAD_JSON"),
        ({"search_categories": {"room_events": {}}}, "M_MISSING_PARAM"),
        ({"search_categories": {"room_events": {"search_term": "x", "keys": ["content.nope"]}}}, "M_INVALID_PARAM"),
        ({"search_categories": {"room_events": {"search_term": "x", "order_by": "size"}}}, "M_INVALID_PARAM"),
        ({"search_categories": {"room_events": {"search_term": "x", "filter": {"limit": 0}}}}, "M_BAD_JSON"),
        (
            {"search_categories": {"room_events": {"search_term": "x", "groupings": {"group_by": [{"key": "type"}]}}}},
            "M_INVALID_PARAM",
        ),
        (
            {"search_categories": {"room_events": {"search_term": "x", "event_context": {"before_limit": -1}}}},
            "M_BAD_JSON",
        ),
    ]
    for body, errcode in cases:
        status, resp = await harness.request("POST", "search", alice, json=body)
        assert status == 400 and resp["errcode"] == errcode, (body, resp)
    status, resp = await harness.request(
        "POST", "search?next_batch=recent_5", alice, json={"search_categories": {"room_events": {"search_term": "x"}}}
    )
    assert status == 400 and resp["errcode"] == "M_INVALID_PARAM"
    status, resp = await harness.request("POST", "search", alice, json={"search_categories": {}})
    assert status == 200 and resp == {"search_categories": {}}


async def test_tokenize() -> None:
    assert tokenize("Hello, WORLD! ça-va? ﬁne_42") == ["hello", "world", "ça", "va", "fine_42"]
