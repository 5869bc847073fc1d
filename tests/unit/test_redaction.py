from __future__ import annotations

from typing import Any

import pytest

from homeserver.protocol.redaction import redact

ALL = [str(n) for n in range(1, 13)]
TOP = {
    "event_id": "$e:x",
    "type": "T",
    "room_id": "!r:x",
    "sender": "@s:x",
    "state_key": "",
    "hashes": {"sha256": "h"},
    "signatures": {"x": {"ed25519:1": "s"}},
    "depth": 4,
    "prev_events": [],
    "prev_state": [],
    "auth_events": [],
    "origin": "x",
    "origin_server_ts": 1,
    "membership": "join",
    "unsigned": {"age": 1},
    "redacts": "$other:x",
    "extra": "gone",
}


def ev(event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    return {**TOP, "type": event_type, "content": content}


def kept_content(version: str, event_type: str, content: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = redact(ev(event_type, content), version)["content"]
    return result


@pytest.mark.parametrize("version", ALL)
def test_top_level_keys(version: str) -> None:
    out = redact(ev("m.room.message", {"body": "hi"}), version)
    always = {"event_id", "type", "room_id", "sender", "state_key", "content", "hashes", "signatures"}
    always |= {"depth", "prev_events", "auth_events", "origin_server_ts"}
    # spec: v11-redactions drops origin, membership and prev_state from the protected keys
    expected = always if int(version) >= 11 else always | {"origin", "membership", "prev_state"}
    assert set(out) == expected
    assert out["content"] == {}


@pytest.mark.parametrize("version", ALL)
def test_member(version: str) -> None:
    content = {
        "membership": "join",
        "displayname": "A",
        "join_authorised_via_users_server": "@b:x",
        "third_party_invite": {"signed": {"token": "t"}, "display_name": "d"},
    }
    expected: dict[str, Any] = {"membership": "join"}
    if int(version) >= 9:
        expected["join_authorised_via_users_server"] = "@b:x"
    if int(version) >= 11:
        expected["third_party_invite"] = {"signed": {"token": "t"}}
    assert kept_content(version, "m.room.member", content) == expected


@pytest.mark.parametrize("version", ALL)
def test_create(version: str) -> None:
    content = {"creator": "@s:x", "room_version": "1", "m.federate": False}
    expected = content if int(version) >= 11 else {"creator": "@s:x"}
    assert kept_content(version, "m.room.create", content) == expected


@pytest.mark.parametrize("version", ALL)
def test_join_rules(version: str) -> None:
    content = {"join_rule": "restricted", "allow": [{"type": "m.room_membership"}], "x": 1}
    expected: dict[str, Any] = {"join_rule": "restricted"}
    if int(version) >= 8:
        expected["allow"] = content["allow"]
    assert kept_content(version, "m.room.join_rules", content) == expected


@pytest.mark.parametrize("version", ALL)
def test_power_levels(version: str) -> None:
    keys = ["ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"]
    content: dict[str, Any] = {k: 1 for k in keys} | {"invite": 0, "notifications": {"room": 50}}
    expected = {k: 1 for k in keys}
    if int(version) >= 11:
        expected["invite"] = 0
    assert kept_content(version, "m.room.power_levels", content) == expected


@pytest.mark.parametrize("version", ALL)
def test_aliases_history_visibility_and_redaction(version: str) -> None:
    aliases = kept_content(version, "m.room.aliases", {"aliases": ["#a:x"]})
    assert aliases == ({"aliases": ["#a:x"]} if int(version) <= 5 else {})
    hv = kept_content(version, "m.room.history_visibility", {"history_visibility": "shared", "x": 1})
    assert hv == {"history_visibility": "shared"}
    red = kept_content(version, "m.room.redaction", {"redacts": "$e:x", "reason": "spam"})
    assert red == ({"redacts": "$e:x"} if int(version) >= 11 else {})


def test_input_is_not_modified_and_bad_content_is_dropped() -> None:
    event = ev("m.room.member", {"membership": "join", "displayname": "A"})
    before = repr(event)
    redact(event, "10")
    assert repr(event) == before
    assert redact({**TOP, "content": "not an object"}, "10")["content"] == {}
