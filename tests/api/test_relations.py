"""Relations: bundled aggregations, GET /v1/.../relations, GET /v1/.../threads, annotation and thread rules."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Harness, User
from .rooms_helpers import create_room, join, q, send, send_event

pytestmark = pytest.mark.asyncio


def edit(target: str, body: str) -> dict[str, Any]:
    return {
        "msgtype": "m.text",
        "body": f"* {body}",
        "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    }


def reply_in_thread(root: str, body: str) -> dict[str, Any]:
    return {"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}}


async def get_event(harness: Harness, user: User, room_id: str, event_id: str) -> dict[str, Any]:
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/event/{q(event_id)}", user)
    assert status == 200, body
    return body


async def relations(harness: Harness, user: User, room_id: str, tail: str) -> tuple[int, Any]:
    return await harness.request("GET", f"/_matrix/client/v1/rooms/{q(room_id)}/relations/{tail}", user)


async def _two_users(harness: Harness) -> tuple[User, User, str]:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, room_id)
    return alice, bob, room_id


async def test_edits_are_bundled(harness: Harness) -> None:
    alice, bob, room_id = await _two_users(harness)
    original = await send(harness, alice, room_id, "helo")
    first = await send_event(harness, alice, room_id, "m.room.message", edit(original, "hello"))
    second = await send_event(harness, alice, room_id, "m.room.message", edit(original, "hello!"))
    # an edit by someone else is not valid
    await send_event(harness, bob, room_id, "m.room.message", edit(original, "hijacked"))
    # spec: event_replacements "the most recent by origin_server_ts; if two have the same, the
    # lexicographically largest event_id" (two sends can land in the same millisecond)
    edits = [await get_event(harness, bob, room_id, e) for e in (first, second)]
    newest = max(edits, key=lambda e: (e["origin_server_ts"], e["event_id"]))
    latest = newest["event_id"]
    ev = await get_event(harness, bob, room_id, original)
    assert ev["content"]["body"] == "helo"  # the original content is left intact
    replace = ev["unsigned"]["m.relations"]["m.replace"]
    body = newest["content"]["m.new_content"]["body"]
    assert replace["event_id"] == latest and replace["content"]["m.new_content"]["body"] == body
    # in /messages too
    status, page = await harness.request("GET", f"rooms/{q(room_id)}/messages?dir=b&limit=10", bob)
    served = {e["event_id"]: e for e in page["chunk"]}
    assert served[original]["unsigned"]["m.relations"]["m.replace"]["event_id"] == latest
    # redacting the latest edit falls back to the previous one; redacting the original drops the bundle
    status, _ = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q(latest)}/r1", alice, json={})
    assert status == 200
    ev = await get_event(harness, bob, room_id, original)
    other = next(e for e in edits if e is not newest)
    expected = other["content"]["m.new_content"]["body"]
    assert ev["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"] == expected
    status, _ = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q(original)}/r2", alice, json={})
    ev = await get_event(harness, bob, room_id, original)
    assert ev["content"] == {} and "m.relations" not in ev["unsigned"]


async def test_threads_are_bundled_and_listed(harness: Harness) -> None:
    alice, bob, room_id = await _two_users(harness)
    root = await send(harness, alice, room_id, "root")
    other_root = await send(harness, bob, room_id, "other root")
    await send_event(harness, bob, room_id, "m.room.message", reply_in_thread(root, "r1"))
    last = await send_event(harness, bob, room_id, "m.room.message", reply_in_thread(root, "r2"))
    edit_of_last = await send_event(harness, bob, room_id, "m.room.message", edit(last, "r2 (edited)"))
    ev = await get_event(harness, alice, room_id, root)
    thread = ev["unsigned"]["m.relations"]["m.thread"]
    assert thread["count"] == 2 and thread["current_user_participated"] is True  # alice sent the root
    assert thread["latest_event"]["event_id"] == last
    assert thread["latest_event"]["unsigned"]["m.relations"]["m.replace"]["event_id"] == edit_of_last
    carol = await harness.user("carol")
    await join(harness, carol, room_id)
    ev = await get_event(harness, carol, room_id, root)
    assert ev["unsigned"]["m.relations"]["m.thread"]["current_user_participated"] is False

    base = f"/_matrix/client/v1/rooms/{q(room_id)}/threads"
    status, body = await harness.request("GET", base, carol)
    assert status == 200 and [e["event_id"] for e in body["chunk"]] == [root] and "next_batch" not in body
    assert body["chunk"][0]["unsigned"]["m.relations"]["m.thread"]["count"] == 2
    # a second thread, more recently active
    await send_event(harness, alice, room_id, "m.room.message", reply_in_thread(other_root, "x"))
    status, body = await harness.request("GET", f"{base}?limit=1", carol)
    assert [e["event_id"] for e in body["chunk"]] == [other_root] and "next_batch" in body
    status, body = await harness.request("GET", f"{base}?limit=1&from={body['next_batch']}", carol)
    assert [e["event_id"] for e in body["chunk"]] == [root] and "next_batch" not in body
    status, body = await harness.request("GET", f"{base}?include=participated", bob)
    assert {e["event_id"] for e in body["chunk"]} == {root, other_root}
    status, body = await harness.request("GET", f"{base}?include=participated", carol)
    assert body["chunk"] == []
    for query, errcode in [
        ("include=some", "M_INVALID_PARAM"),
        ("limit=0", "M_INVALID_PARAM"),
        ("from=x", "M_INVALID_PARAM"),
    ]:
        status, body = await harness.request("GET", f"{base}?{query}", carol)
        assert status == 400 and body["errcode"] == errcode
    stranger = await harness.user("dave")
    private = await create_room(harness, alice)
    status, body = await harness.request("GET", f"/_matrix/client/v1/rooms/{q(private)}/threads", stranger)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


async def test_thread_redaction_deaggregates(harness: Harness) -> None:
    alice, bob, room_id = await _two_users(harness)
    root = await send(harness, alice, room_id, "root")
    first = await send_event(harness, bob, room_id, "m.room.message", reply_in_thread(root, "one"))
    second = await send_event(harness, bob, room_id, "m.room.message", reply_in_thread(root, "two"))
    status, _ = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q(second)}/r", bob, json={})
    thread = (await get_event(harness, alice, room_id, root))["unsigned"]["m.relations"]["m.thread"]
    assert thread["count"] == 1 and thread["latest_event"]["event_id"] == first
    status, _ = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q(first)}/r2", bob, json={})
    ev = await get_event(harness, alice, room_id, root)
    assert "m.relations" not in ev["unsigned"]
    status, body = await harness.request("GET", f"/_matrix/client/v1/rooms/{q(room_id)}/threads", alice)
    assert status == 200
    assert body["chunk"] == []
    _status, body = await harness.request(
        "GET", f"/_matrix/client/v1/rooms/{q(room_id)}/threads?include=participated", bob
    )
    assert body["chunk"] == []


async def test_references_are_bundled(harness: Harness) -> None:
    alice, bob, room_id = await _two_users(harness)
    target = await send(harness, alice, room_id, "poll")
    ref = {"m.relates_to": {"rel_type": "m.reference", "event_id": target}}
    one = await send_event(harness, bob, room_id, "org.example.vote", ref)
    two = await send_event(harness, alice, room_id, "org.example.vote", ref)
    ev = await get_event(harness, bob, room_id, target)
    assert ev["unsigned"]["m.relations"]["m.reference"] == {"chunk": [{"event_id": one}, {"event_id": two}]}


async def test_relations_endpoint(harness: Harness) -> None:
    alice, bob, room_id = await _two_users(harness)
    root = await send(harness, alice, room_id, "root")
    replies = [
        await send_event(harness, bob, room_id, "m.room.message", reply_in_thread(root, f"r{i}")) for i in range(5)
    ]
    reaction = await send_event(
        harness,
        alice,
        room_id,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}},
    )
    # everything, newest first
    status, body = await relations(harness, bob, room_id, q(root))
    assert status == 200 and [e["event_id"] for e in body["chunk"]] == [reaction, *reversed(replies)]
    assert "recursion_depth" not in body
    # by rel type, paginated
    status, page1 = await relations(harness, bob, room_id, f"{q(root)}/m.thread?limit=2")
    assert [e["event_id"] for e in page1["chunk"]] == [replies[4], replies[3]] and "prev_batch" not in page1
    status, page2 = await relations(harness, bob, room_id, f"{q(root)}/m.thread?limit=2&from={page1['next_batch']}")
    assert [e["event_id"] for e in page2["chunk"]] == [replies[2], replies[1]]
    assert page2["prev_batch"] == page1["next_batch"]
    status, page3 = await relations(harness, bob, room_id, f"{q(root)}/m.thread?limit=2&from={page2['next_batch']}")
    assert [e["event_id"] for e in page3["chunk"]] == [replies[0]] and "next_batch" not in page3
    # forwards
    status, fwd = await relations(harness, bob, room_id, f"{q(root)}/m.thread?dir=f&limit=3")
    assert [e["event_id"] for e in fwd["chunk"]] == replies[:3]
    status, fwd2 = await relations(harness, bob, room_id, f"{q(root)}/m.thread?dir=f&from={fwd['next_batch']}")
    assert [e["event_id"] for e in fwd2["chunk"]] == replies[3:]
    # by rel type and event type
    status, body = await relations(harness, bob, room_id, f"{q(root)}/m.annotation/m.reaction")
    assert [e["event_id"] for e in body["chunk"]] == [reaction]
    status, body = await relations(harness, bob, room_id, f"{q(root)}/m.annotation/m.room.message")
    assert body["chunk"] == []
    # /messages tokens bound the range: the page held the reaction, r4 and r3
    status, page = await harness.request("GET", f"rooms/{q(room_id)}/messages?dir=b&limit=3", bob)
    status, body = await relations(harness, bob, room_id, f"{q(root)}/m.thread?from={page['end']}")
    assert [e["event_id"] for e in body["chunk"]] == list(reversed(replies[:3]))
    status, body = await relations(harness, bob, room_id, f"{q(root)}/m.thread?to={page['end']}")
    assert [e["event_id"] for e in body["chunk"]] == [replies[4], replies[3]]


async def test_relations_recurse(harness: Harness) -> None:
    alice, bob, room_id = await _two_users(harness)
    root = await send(harness, alice, room_id, "root")
    reply = await send_event(harness, bob, room_id, "m.room.message", reply_in_thread(root, "reply"))
    edit_of_reply = await send_event(harness, bob, room_id, "m.room.message", edit(reply, "reply!"))
    status, body = await relations(harness, alice, room_id, f"{q(root)}?recurse=true")
    assert status == 200 and [e["event_id"] for e in body["chunk"]] == [edit_of_reply, reply]
    assert body["recursion_depth"] == 3
    status, body = await relations(harness, alice, room_id, f"{q(root)}?recurse=false")
    assert [e["event_id"] for e in body["chunk"]] == [reply] and body["recursion_depth"] == 1


async def test_relations_errors_and_visibility(harness: Harness) -> None:
    alice, bob, room_id = await _two_users(harness)
    root = await send(harness, alice, room_id, "root")
    stranger = await harness.user("carol")
    private = await create_room(harness, alice)
    hidden = await send(harness, alice, private, "hidden")
    status, body = await relations(harness, stranger, private, q(hidden))
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await relations(harness, bob, room_id, q("$missing"))
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await relations(harness, bob, room_id, f"{q(root)}?dir=up")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await relations(harness, bob, room_id, f"{q(root)}?from=nonsense")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await relations(harness, bob, room_id, f"{q(root)}?recurse=maybe")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await relations(harness, bob, "!nope:hs.test", q(root))
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_duplicate_annotations_and_threads_off_relations_are_refused(harness: Harness) -> None:
    alice, bob, room_id = await _two_users(harness)
    target = await send(harness, alice, room_id, "react to me")
    react = {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "🎉"}}
    first = await send_event(harness, bob, room_id, "m.reaction", react)
    status, body = await harness.request("PUT", f"rooms/{q(room_id)}/send/m.reaction/dup", bob, json=react)
    assert status == 400 and body["errcode"] == "M_DUPLICATE_ANNOTATION"
    # another user, or another key, is fine; after a redaction the same annotation may be sent again
    await send_event(harness, alice, room_id, "m.reaction", react)
    status, _ = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q(first)}/r", bob, json={})
    assert status == 200
    await send_event(harness, bob, room_id, "m.reaction", react)
    # a thread may not start from an event that has a relationship itself
    reply = await send_event(harness, bob, room_id, "m.room.message", reply_in_thread(target, "in thread"))
    status, body = await harness.request(
        "PUT", f"rooms/{q(room_id)}/send/m.room.message/t", bob, json=reply_in_thread(reply, "nested")
    )
    assert status == 400 and body["errcode"] == "M_UNKNOWN"
