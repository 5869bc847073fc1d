"""Filters (spec: client-server-api "Filtering"): validation of a definition with the spec's error
codes, and the compiled EventFilter / RoomEventFilter / Filter on their own."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.errors import MatrixError
from homeserver.rooms.event_filter import EventFilter, EventFilterModel, RoomEventFilter, RoomEventFilterModel
from homeserver.sync.filters import DEFAULT_TIMELINE_LIMIT, MAX_LIMIT, SyncFilter, parse_filter


def error(definition: Any) -> MatrixError:
    with pytest.raises(MatrixError) as info:
        parse_filter(definition)
    return info.value


def test_filter_errors() -> None:
    e = error({"room": {"timeline": {"limit": 0}}})
    assert (e.errcode, e.message) == ("M_BAD_JSON", "room.timeline.limit: must be greater than 0")
    e = error({"room": {"timeline": {"limit": True}}})  # JSON types as JSON says them: no bool for an int
    assert (e.errcode, e.message) == ("M_BAD_JSON", "room.timeline.limit: expected an integer")
    assert error({"room": {"timeline": {"limit": 5.0}}}).errcode == "M_BAD_JSON"
    assert error({"presence": {"senders": [1]}}).message.startswith("presence.senders.0: ")
    assert error({"room": {"state": {"types": "m.room.member"}}}).message.startswith("room.state.types: ")
    assert error({"event_format": "xml"}).message.startswith("event_format: ")
    assert error({"room": {"include_leave": "yes"}}).errcode == "M_BAD_JSON"
    assert error([]).message == "filter must be a JSON object"
    with pytest.raises(MatrixError) as info:
        RoomEventFilter.parse({"limit": -3}, "room_events.filter")
    assert info.value.errcode == "M_BAD_JSON"
    with pytest.raises(MatrixError) as info:
        RoomEventFilter.parse(["m.room.message"], "room_events.filter")
    assert info.value.message == "room_events.filter must be a JSON object"


def test_unknown_keys_are_kept_and_null_is_absent() -> None:
    got = parse_filter({"room": {"timeline": {"limit": 5, "types": ["m.*"], "x-custom": 1}}, "org.x": [1]})
    assert got.model_dump(exclude_unset=True) == {
        "room": {"timeline": {"limit": 5, "types": ["m.*"], "x-custom": 1}},
        "org.x": [1],
    }
    f = SyncFilter(parse_filter({"event_format": None, "room": {"include_leave": None, "state": {"types": None}}}))
    assert f.event_format == "client" and not f.include_leave and f.state.is_empty


def test_query_filter() -> None:
    assert RoomEventFilter.from_query(None).is_empty and RoomEventFilter.from_query("").is_empty
    with pytest.raises(MatrixError) as info:
        RoomEventFilter.from_query("{not json")
    assert info.value.errcode == "M_INVALID_PARAM"
    f = RoomEventFilter.from_query('{"contains_url": true, "lazy_load_members": true, "limit": 3}')
    assert f.contains_url is True and f.lazy_load_members and f.limit == 3 and not f.is_empty
    # compiled once per text (a client pages with the same filter); a bad one is refused every time
    assert RoomEventFilter.from_query('{"contains_url": true, "lazy_load_members": true, "limit": 3}') is f
    for _ in range(2):
        with pytest.raises(MatrixError) as info:
            RoomEventFilter.from_query('{"types": "m.room.message"}')
        assert info.value.errcode == "M_BAD_JSON"


EVENTS = [
    {"type": "m.room.message", "sender": "@a:hs", "content": {"body": "hi"}},
    {"type": "m.room.message", "sender": "@b:hs", "content": {"body": "pic", "url": "mxc://hs/1"}},
    {"type": "m.room.member", "sender": "@b:hs", "state_key": "@b:hs", "content": {"membership": "join"}},
    {"type": "org.example.ping", "sender": "@c:hs", "content": {"url": 5}},
]


def passing(definition: dict[str, Any]) -> list[int]:
    f = RoomEventFilter(RoomEventFilterModel.model_validate(definition))
    return [i for i, e in enumerate(EVENTS) if f.allows(e)]


def test_event_tests() -> None:
    assert passing({}) == [0, 1, 2, 3]
    assert passing({"types": ["m.room.*"]}) == [0, 1, 2]
    assert passing({"types": ["m.room.*"], "not_types": ["m.room.member"]}) == [0, 1]
    assert passing({"not_types": ["*"]}) == []
    assert passing({"types": []}) == []  # an empty list includes nothing
    assert passing({"not_types": []}) == [0, 1, 2, 3]  # and excludes nothing
    assert passing({"types": ["m.room.?ember"]}) == []  # `?` is a literal in filters
    assert passing({"types": ["M.ROOM.*"]}) == []  # and case counts
    assert passing({"senders": ["@b:hs"]}) == [1, 2]
    assert passing({"senders": ["@b:hs"], "not_senders": ["@b:hs"]}) == []  # `not_` wins
    assert passing({"senders": ["@*"]}) == []  # senders are ids, not patterns
    assert passing({"contains_url": True}) == [1]  # a `url` that is a string
    assert passing({"contains_url": False}) == [0, 2, 3]
    assert passing({"types": ["m.room.message"], "contains_url": False}) == [0]
    assert not RoomEventFilter().allows({"content": {}})  # an event needs a type


def test_rooms_and_options() -> None:
    f = RoomEventFilter(RoomEventFilterModel(rooms=["!a:hs", "!b:hs"], not_rooms=["!b:hs"]))
    assert f.allows_room("!a:hs") and not f.allows_room("!b:hs") and not f.allows_room("!c:hs")
    assert f.is_empty  # rooms are checked apart from the events
    assert RoomEventFilter(RoomEventFilterModel(rooms=[])).allows_room("!a:hs") is False
    plain = EventFilter(EventFilterModel(types=["m.presence"], limit=2))
    assert plain.allows_type("m.presence") and not plain.allows_type("m.typing") and plain.limit == 2
    assert EventFilter().is_empty and EventFilter().allows({"type": "x"})


def test_sync_filter() -> None:
    default = SyncFilter()
    assert default.timeline_limit == DEFAULT_TIMELINE_LIMIT and default.event_format == "client"
    assert default.timeline.is_empty and default.allows_room("!a:hs") and not default.include_leave
    f = SyncFilter(
        parse_filter(
            {
                "event_format": "federation",
                "presence": {"types": ["m.presence"]},
                "account_data": {"not_types": ["m.push_rules"]},
                "room": {
                    "not_rooms": ["!x:hs"],
                    "include_leave": True,
                    "timeline": {"limit": 5000, "unread_thread_notifications": True},
                    "state": {"lazy_load_members": True, "include_redundant_members": True},
                    "ephemeral": {"types": ["m.receipt"]},
                    "account_data": {"rooms": ["!y:hs"]},
                },
            }
        )
    )
    assert f.event_format == "federation" and f.include_leave
    assert f.timeline_limit == MAX_LIMIT
    assert f.lazy_load_members and f.include_redundant_members and f.unread_thread_notifications
    assert not f.allows_room("!x:hs") and f.allows_room("!y:hs")
    assert f.ephemeral.allows_type("m.receipt") and not f.ephemeral.allows_type("m.typing")
    assert f.room_account_data.allows_room("!y:hs") and not f.room_account_data.allows_room("!z:hs")
    assert not f.account_data.allows({"type": "m.push_rules", "content": {}})
    assert f.presence.allows({"type": "m.presence", "sender": "@a:hs", "content": {}})
    # lazy-loading is an option of the `state` filter only (spec: GET /sync)
    assert not SyncFilter(parse_filter({"room": {"timeline": {"lazy_load_members": True}}})).lazy_load_members


def test_event_fields_projection() -> None:
    f = SyncFilter(parse_filter({"event_fields": ["content.body", "content.m\\.relates_to.rel_type", "unsigned"]}))
    event = {
        "event_id": "$e",
        "type": "m.room.message",
        "sender": "@a:hs",
        "origin_server_ts": 1,
        "content": {"body": "hi", "msgtype": "m.text", "m.relates_to": {"rel_type": "m.thread", "event_id": "$t"}},
    }
    assert f.project(event) == {
        "event_id": "$e",
        "type": "m.room.message",
        "sender": "@a:hs",
        "origin_server_ts": 1,
        "content": {"body": "hi", "m.relates_to": {"rel_type": "m.thread"}},
    }
    assert SyncFilter().project(event) is event
