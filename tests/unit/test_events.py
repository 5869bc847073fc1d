"""`Event`: a read-only view over the canonical event dict (protocol/events.py), and `content_of`."""

from __future__ import annotations

import copy
from types import MappingProxyType
from typing import Any

import pytest

from homeserver.protocol import canonical_json
from homeserver.protocol.events import Event, content_of
from homeserver.protocol.power_levels import (
    get_named_level,
    get_notification_level,
    get_required_power_level,
    get_user_power_level,
    room_creators,
)
from homeserver.protocol.room_versions import get_room_version

MEMBER: dict[str, Any] = {
    "type": "m.room.member",
    "state_key": "@bob:hs.test",
    "sender": "@alice:hs.test",
    "room_id": "!room:hs.test",
    "origin_server_ts": 1_700_000_000_000,
    "content": {"membership": "invite", "displayname": "Bob"},
    "depth": 5,
    "prev_events": ["$a"],
    "auth_events": ["$b"],
    "hashes": {"sha256": "x"},
    "signatures": {"hs.test": {"ed25519:k": "y"}},
}


def test_fields_of_a_well_formed_event() -> None:
    ev = Event(MEMBER, "$member")
    assert ev.type == "m.room.member"
    assert ev.state_key == "@bob:hs.test"
    assert ev.is_state
    assert ev.sender == "@alice:hs.test"
    assert ev.room_id == "!room:hs.test"
    assert ev.event_id == "$member"
    assert ev.origin_server_ts == 1_700_000_000_000
    assert ev.membership == "invite"
    assert ev.content == {"membership": "invite", "displayname": "Bob"}
    assert ev.get("depth") == 5
    assert ev.get("missing", "default") == "default"
    assert repr(ev) == "Event('m.room.member', '@bob:hs.test', '$member')"


def test_a_view_not_a_copy() -> None:
    raw = copy.deepcopy(MEMBER)
    before = canonical_json.encode(raw)
    ev = Event(raw)
    assert ev.raw is raw
    assert ev.content is raw["content"]  # no copy of the content either
    assert canonical_json.encode(ev.raw) == before  # the canonical bytes are the dict's, untouched
    assert raw == MEMBER
    assert not hasattr(ev, "__dict__")  # __slots__: no per-instance dict
    with pytest.raises(AttributeError):
        ev.anything = 1  # type: ignore[attr-defined]
    raw["content"]["displayname"] = "Robert"  # a view: it sees the dict as it is now
    assert ev.content["displayname"] == "Robert"


def test_empty_state_key_is_state_and_absent_is_not() -> None:
    assert Event({"type": "m.room.name", "state_key": ""}).state_key == ""
    assert Event({"type": "m.room.name", "state_key": ""}).is_state
    message = Event({"type": "m.room.message", "content": {"body": "hi"}})
    assert message.state_key is None
    assert not message.is_state
    assert message.membership is None


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"type": 1, "state_key": 2, "sender": None, "room_id": [], "content": "text", "origin_server_ts": "5"},
        {"content": ["a"], "origin_server_ts": True, "event_id": 7},
        {"content": None, "origin_server_ts": 1.5},
    ],
)
def test_malformed_fields_read_as_empty(raw: dict[str, Any]) -> None:
    ev = Event(raw)
    assert ev.type == ""
    assert ev.state_key is None
    assert not ev.is_state
    assert ev.sender == ""
    assert ev.room_id == ""
    assert ev.content == {}
    assert ev.event_id is None
    assert ev.origin_server_ts == 0
    assert ev.membership is None


def test_membership_must_be_a_string() -> None:
    assert Event({"content": {"membership": 1}}).membership is None
    assert Event({"content": {"membership": "custom"}}).membership == "custom"


def test_event_id_given_wins_over_the_v1_field() -> None:
    v1 = {"event_id": "$abc:hs.test", "type": "m.room.message"}
    assert Event(v1).event_id == "$abc:hs.test"
    assert Event(v1, "$given").event_id == "$given"


def test_wrap() -> None:
    assert Event.wrap(None) is None
    wrapped = Event.wrap(MEMBER, "$e")
    assert wrapped is not None and wrapped.raw is MEMBER and wrapped.event_id == "$e"


def test_content_of() -> None:
    assert content_of(None) == {}
    assert content_of(MEMBER) is MEMBER["content"]
    assert content_of(Event(MEMBER)) is MEMBER["content"]
    assert content_of({"content": "not a dict"}) == {}
    assert content_of({}) == {}
    assert content_of(Event({"content": 3})) == {}
    # a read-only mapping is content too (frozen copies of events)
    frozen = MappingProxyType({"join_rule": "public"})
    assert content_of({"content": frozen}) is frozen
    assert Event({"content": frozen}).content is frozen


@pytest.mark.parametrize("version", ["1", "10", "11", "12"])
def test_power_levels_read_event_views_as_dicts(version: str) -> None:
    rv = get_room_version(version)
    create = {
        "type": "m.room.create",
        "state_key": "",
        "sender": "@alice:hs.test",
        "content": {"creator": "@alice:hs.test", "additional_creators": ["@carol:hs.test"]},
    }
    pl = {
        "type": "m.room.power_levels",
        "state_key": "",
        "sender": "@alice:hs.test",
        "content": {
            "users": {"@alice:hs.test": 100, "@bob:hs.test": 50},
            "users_default": 10,
            "events": {"m.room.name": 75},
            "invite": 20,
            "notifications": {"room": 40},
        },
    }
    for user in ("@alice:hs.test", "@bob:hs.test", "@carol:hs.test", "@dave:hs.test"):
        assert get_user_power_level(user, Event(pl), Event(create), rv) == get_user_power_level(user, pl, create, rv)
    assert room_creators(Event(create), rv) == room_creators(create, rv)
    assert get_named_level(Event(pl), "invite", rv) == 20
    assert get_required_power_level(Event(pl), "m.room.name", True, rv) == 75
    assert get_required_power_level(Event(pl), "m.room.topic", True, rv) == 50
    assert get_notification_level(Event(pl), "room", rv) == 40
