"""Sending: PUT /send (transaction ids), PUT/GET /state, PUT /redact and redacted copies."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import Harness
from .rooms_helpers import create_room, get_unchecked, join, put_state, q, send

pytestmark = pytest.mark.asyncio


async def test_send_is_idempotent_per_device_and_txn(harness: Harness) -> None:
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice)
    path = f"rooms/{q(room_id)}/send/m.room.message/abc"
    status, first = await harness.request("PUT", path, alice, json={"msgtype": "m.text", "body": "once"})
    assert status == 200 and first["event_id"].startswith("$")
    status, again = await harness.request("PUT", path, alice, json={"msgtype": "m.text", "body": "once"})
    assert status == 200 and again == first
    # concurrent retries share one event
    other = f"rooms/{q(room_id)}/send/m.room.message/concurrent"
    results = await asyncio.gather(
        *(harness.request("PUT", other, alice, json={"msgtype": "m.text", "body": "c"}) for _ in range(3))
    )
    assert len({r[1]["event_id"] for r in results}) == 1
    # the same txn id on another endpoint path is another request
    status, state_like = await harness.request("PUT", f"rooms/{q(room_id)}/send/m.room.other/abc", alice, json={"x": 1})
    assert status == 200 and state_like["event_id"] != first["event_id"]
    # another device of the same user: another request
    session = await harness.hs.accounts.new_session(alice.user_id)
    from .conftest import User

    phone = User(alice.user_id, session.device_id, session.access_token)
    status, from_phone = await harness.request("PUT", path, phone, json={"msgtype": "m.text", "body": "once"})
    assert status == 200 and from_phone["event_id"] != first["event_id"]
    # transaction_id is shown to the sending device only
    status, ev = await harness.request("GET", f"rooms/{q(room_id)}/event/{q(first['event_id'])}", alice)
    assert status == 200 and ev["unsigned"]["transaction_id"] == "abc"
    status, ev = await harness.request("GET", f"rooms/{q(room_id)}/event/{q(first['event_id'])}", phone)
    assert status == 200 and "transaction_id" not in ev["unsigned"]
    status, chunk = await harness.request("GET", f"rooms/{q(room_id)}/messages?dir=b&limit=10", alice)
    mine = [e for e in chunk["chunk"] if e["event_id"] == first["event_id"]]
    assert mine[0]["unsigned"]["transaction_id"] == "abc"


async def test_send_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice)
    base = f"rooms/{q(room_id)}/send/m.room.message"
    status, body = await harness.request("PUT", f"{base}/1", bob, json={"body": "x"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("PUT", f"{base}/2", alice, json=[1, 2])
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await harness.request("PUT", f"{base}/3", alice, data=b"{nope")
    assert status == 400 and body["errcode"] == "M_NOT_JSON"
    status, body = await harness.request("PUT", f"{base}/4", alice, json={"n": 1.5})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await harness.request("PUT", f"{base}/5", alice, json={"big": "x" * 70000})
    assert status == 413 and body["errcode"] == "M_TOO_LARGE"
    status, body = await harness.request(
        "PUT", f"rooms/{q('!missing:hs.test')}/send/m.room.message/6", alice, json={"body": "x"}
    )
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("PUT", "rooms/not-a-room/send/m.room.message/7", alice, json={"body": "x"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("PUT", f"{base}/8", None, json={"body": "x"})
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"


async def test_state_put_and_get_with_and_without_trailing_slash(harness: Harness) -> None:
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice)
    room = q(room_id)
    # nio style: no trailing slash
    status, body = await harness.request("PUT", f"rooms/{room}/state/m.room.topic", alice, json={"topic": "one"})
    assert status == 200 and body["event_id"].startswith("$")
    status, body = await harness.request("GET", f"rooms/{room}/state/m.room.topic", alice)
    assert status == 200 and body == {"topic": "one"}
    # js-sdk style: trailing slash
    status, body = await harness.request("PUT", f"rooms/{room}/state/m.room.topic/", alice, json={"topic": "two"})
    assert status == 200
    topic_event = body["event_id"]
    status, body = await harness.request("GET", f"rooms/{room}/state/m.room.topic/", alice)
    assert status == 200 and body == {"topic": "two"}
    status, body = await get_unchecked(harness, f"rooms/{room}/state/m.room.topic/?format=event", alice)
    assert status == 200
    assert body["event_id"] == topic_event and body["content"] == {"topic": "two"} and body["state_key"] == ""
    assert body["unsigned"]["prev_content"] == {"topic": "one"}
    assert body["unsigned"]["replaces_state"].startswith("$")
    # a state key with a slash and unicode
    key = "a/b ✓"
    status, body = await harness.request("PUT", f"rooms/{room}/state/org.example.thing/{q(key)}", alice, json={"v": 1})
    assert status == 200
    status, body = await get_unchecked(harness, f"rooms/{room}/state/org.example.thing/{q(key)}?format=event", alice)
    assert status == 200 and body["state_key"] == key and body["content"] == {"v": 1}
    status, body = await harness.request("GET", f"rooms/{room}/state", alice)
    assert status == 200 and ("org.example.thing", key) in {(e["type"], e["state_key"]) for e in body}


async def test_state_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice)
    room = q(room_id)
    status, body = await harness.request("GET", f"rooms/{room}/state/m.room.nothing", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"rooms/{room}/state/m.room.name?format=xml", alice)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("GET", f"rooms/{room}/state", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("GET", f"rooms/{room}/state/m.room.create", bob)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("PUT", f"rooms/{room}/state/m.room.name", bob, json={"name": "x"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("GET", f"rooms/{q('!nope:hs.test')}/state", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    # POST is not a method of state paths
    status, body = await harness.request("POST", f"rooms/{room}/state/m.room.name", alice, json={"name": "x"})
    assert status == 405 and body["errcode"] == "M_UNRECOGNIZED"


async def test_canonical_alias_validation(harness: Harness) -> None:
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice, room_alias_name="mine")
    other = await create_room(harness, alice, room_alias_name="other")
    assert other
    path = f"rooms/{q(room_id)}/state/m.room.canonical_alias/"
    status, body = await harness.request("PUT", path, alice, json={"alias": "not an alias"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("PUT", path, alice, json={"alias": "#other:hs.test"})
    assert status == 400 and body["errcode"] == "M_BAD_ALIAS"
    status, body = await harness.request("PUT", path, alice, json={"alias": "#unknown:hs.test"})
    assert status == 400 and body["errcode"] == "M_BAD_ALIAS"
    status, body = await harness.request(
        "PUT", path, alice, json={"alias": "#mine:hs.test", "alt_aliases": ["#remote:elsewhere.test"]}
    )
    assert status == 200 and body["event_id"].startswith("$")


async def test_redact_endpoint_and_redacted_copies(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, room_id)
    secret = await send(harness, bob, room_id, "secret", format="org.matrix.custom.html", formatted_body="<b>s</b>")
    path = f"rooms/{q(room_id)}/redact/{q(secret)}/r1"
    status, body = await harness.request("PUT", path, bob, json={"reason": "oops"})
    assert status == 200 and body["event_id"].startswith("$")
    redaction_id = body["event_id"]
    status, again = await harness.request("PUT", path, bob, json={"reason": "oops"})
    assert again == body
    for user in (alice, bob):
        status, ev = await harness.request("GET", f"rooms/{q(room_id)}/event/{q(secret)}", user)
        assert status == 200 and ev["content"] == {}
        because = ev["unsigned"]["redacted_because"]
        assert because["event_id"] == redaction_id and because["content"]["reason"] == "oops"
        assert because["redacts"] == secret
    status, chunk = await harness.request("GET", f"rooms/{q(room_id)}/messages?dir=b&limit=3", alice)
    served = {e["event_id"]: e for e in chunk["chunk"]}
    assert served[secret]["content"] == {} and "redacted_because" in served[secret]["unsigned"]
    assert served[redaction_id]["type"] == "m.room.redaction" and served[redaction_id]["redacts"] == secret


async def test_redaction_permissions(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    room_id = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, room_id)
    alices = await send(harness, alice, room_id, "alice's")
    status, body = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q(alices)}/x", bob, json={})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # a moderator may redact others' events
    bobs = await send(harness, bob, room_id, "bob's")
    status, body = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q(bobs)}/y", alice, json={})
    assert status == 200
    status, ev = await harness.request("GET", f"rooms/{q(room_id)}/event/{q(bobs)}", bob)
    assert ev["content"] == {}
    status, body = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q('$missing')}/z", alice, json={})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q(bobs)}/w", alice, json={"reason": 1})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"


@pytest.mark.parametrize("version", ["1", "6", "11", "12"])
async def test_redaction_sent_with_send_endpoint(harness: Harness, version: str) -> None:
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice, room_version=version)
    target = await send(harness, alice, room_id, "to go")
    status, body = await harness.request(
        "PUT", f"rooms/{q(room_id)}/send/m.room.redaction/t1", alice, json={"redacts": target, "reason": "x"}
    )
    assert status == 200
    redaction = body["event_id"]
    status, ev = await harness.request("GET", f"rooms/{q(room_id)}/event/{q(redaction)}", alice)
    assert ev["redacts"] == target
    # spec: rooms before v11 carry `redacts` at the top level only
    assert ("redacts" in ev["content"]) == (int(version) >= 11)
    status, ev = await harness.request("GET", f"rooms/{q(room_id)}/event/{q(target)}", alice)
    assert ev["content"] == {}
    status, body = await harness.request("PUT", f"rooms/{q(room_id)}/send/m.room.redaction/t2", alice, json={})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"


async def test_redacted_state_keeps_protected_keys(harness: Harness) -> None:
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice)
    topic = await put_state(harness, alice, room_id, "m.room.join_rules", {"join_rule": "public", "extra": 1})
    status, _ = await harness.request("PUT", f"rooms/{q(room_id)}/redact/{q(topic)}/r", alice, json={})
    assert status == 200
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/state/m.room.join_rules", alice)
    assert status == 200 and body == {"join_rule": "public"}


async def test_each_new_state_gets_its_own_auth_events(harness: Harness) -> None:
    # The pipeline keeps the auth events of messages per (state, sender): a message sent before a
    # change of state must not lend its auth events to one sent after it.
    alice, bob = await harness.user("alice"), await harness.user("bob")
    room = await create_room(harness, alice, preset="public_chat")
    await join(harness, bob, room)
    await send(harness, bob, room, "before")
    await send(harness, bob, room, "again, same state")  # a second message: the kept selection is used
    levels = {"users": {alice.user_id: 100}, "events_default": 50}
    levels_id = await put_state(harness, alice, room, "m.room.power_levels", levels)
    status, err = await harness.request(
        "PUT", f"rooms/{q(room)}/send/m.room.message/after-levels", bob, json={"msgtype": "m.text", "body": "x"}
    )
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    after = await send(harness, alice, room, "alice may")
    # the new message names the new power levels among its auth events (read from the stored PDU)
    pdu = harness.hs.db.events.get_json(harness.hs.db.ids.event(after))
    assert pdu is not None and levels_id in pdu["auth_events"]
    status, err = await harness.request("POST", f"rooms/{q(room)}/ban", alice, json={"user_id": bob.user_id})
    assert status == 200
    status, err = await harness.request(
        "PUT", f"rooms/{q(room)}/send/m.room.message/after-ban", bob, json={"msgtype": "m.text", "body": "x"}
    )
    assert status == 403
