"""m.room.power_levels: the auth rule (10 in rooms v1–v5 and v12, 9 in v6–v11) and the level helpers."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from homeserver.protocol.power_levels import (
    CREATOR_POWER_LEVEL,
    get_named_level,
    get_notification_level,
    get_required_power_level,
    get_user_power_level,
    parse_power_level,
    room_creators,
)

from .test_auth_rules import ALICE, ALL, BOB, CAROL, DAVE, Room, expect, standard_room, versions

USERS = expect(v1_5="10.1", v6_9="9.1", v10_11="9.3", v12="10.3")
NAMED = expect(v1_5="10.3", v6_9="9.3", v10_11="9.5", v12="10.6")
MAP_CURRENT = expect(v1_5="10.4", v6_9="9.4", v10_11="9.6", v12="10.7")
MAP_NEW = expect(v1_5="10.5", v6_9="9.5", v10_11="9.7", v12="10.8")
USERS_CURRENT = expect(v1_5="10.6", v6_9="9.6", v10_11="9.8", v12="10.9")
USERS_NEW = expect(v1_5="10.7", v6_9="9.7", v10_11="9.9", v12="10.10")


def pl_room(version: str, **content: Any) -> Room:
    """Bob (50) is joined and may send power levels (state_default 50); the event also holds `content`."""
    room = standard_room(version, users={BOB: 50})
    room.member(BOB, "join")
    room.state[("m.room.power_levels", "")]["content"].update(copy.deepcopy(content))
    return room


def change(room: Room, sender: str = BOB, /, **updates: Any) -> dict[str, Any]:
    """A new power levels event from `sender`: the current content with `updates` (None removes a key)."""
    content = copy.deepcopy(room.state[("m.room.power_levels", "")]["content"])
    for key, value in updates.items():
        if value is None:
            content.pop(key, None)
        else:
            content[key] = value
    return room.event("m.room.power_levels", sender, content, "")


def users(room: Room, **extra: Any) -> dict[str, Any]:
    listed: dict[str, Any] = dict(room.state[("m.room.power_levels", "")]["content"]["users"])
    listed.update(extra)
    return listed


# --- validation of the new content ----------------------------------------------------------------------


@pytest.mark.parametrize(("version", "rule"), USERS)
def test_users_must_map_user_ids_to_levels(version: str, rule: str) -> None:
    room = pl_room(version)
    room.check(change(room, users=users(room, **{CAROL: 10})))
    for bad in ("x", [BOB]):
        assert room.rule(change(room, users=bad)) == rule
    assert room.rule(change(room, users={**users(room), "carol": 10})) == rule
    assert room.rule(change(room, users={**users(room), "@carol": 10})) == rule
    bad_levels: list[Any] = ["ten", True, None, {}, "10.0", "1_0"]
    for bad_level in bad_levels:
        assert room.rule(change(room, users=users(room, **{CAROL: bad_level}))) == rule
    string = change(room, users=users(room, **{CAROL: " +010 "}))
    fraction = change(room, users=users(room, **{CAROL: 10.5}))
    if int(version) <= 9:  # spec: v1-stringy-power-levels
        room.check(string)
    else:  # spec: rooms/v10 — integers only
        assert room.rule(string) == rule
    if int(version) <= 5:  # spec: v1-floaty-power-levels
        room.check(fraction)
    else:
        assert room.rule(fraction) == rule
    room.check(change(room, users=users(room, **{CAROL: 10.0})))  # JSON 1e1: an integer


@pytest.mark.parametrize(("version", "rule"), expect(v10_11="9.1", v12="10.1"))
def test_named_levels_must_be_integers_from_v10(version: str, rule: str) -> None:
    room = pl_room(version)
    for name in ("users_default", "events_default", "state_default", "ban", "redact", "kick", "invite"):
        bad_values: list[Any] = ["0", True, 0.5, "x", [0], {}]
        for bad in bad_values:
            assert room.rule(change(room, **{name: bad})) == rule
        room.check(change(room, **{name: 0}))


@pytest.mark.parametrize("version", versions(1, 9))
def test_named_levels_may_be_strings_before_v10(version: str) -> None:
    room = pl_room(version, ban="50")
    room.check(change(room, ban=" 50", kick="+40", invite="junk"))


@pytest.mark.parametrize(("version", "rule"), expect(v10_11="9.2", v12="10.2"))
def test_events_and_notifications_must_be_integer_maps_from_v10(version: str, rule: str) -> None:
    room = pl_room(version)
    for name in ("events", "notifications"):
        assert room.rule(change(room, **{name: []})) == rule
        assert room.rule(change(room, **{name: {"x": "10"}})) == rule
        assert room.rule(change(room, **{name: {"x": False}})) == rule
        room.check(change(room, **{name: {"x": 10}}))


@pytest.mark.parametrize("version", versions(1, 9))
def test_events_may_hold_strings_before_v10(version: str) -> None:
    room = pl_room(version)
    room.check(change(room, events={"m.room.name": "10"}, notifications={"room": "20"}))


def test_v12_creators_may_not_be_listed_10_4() -> None:
    room = Room("12", create_content={"additional_creators": [CAROL]})
    room.member(ALICE, "join")
    for listed in (ALICE, CAROL):
        ev = room.event("m.room.power_levels", ALICE, {"users": {listed: 100}}, "")
        assert room.rule(ev) == "10.4"  # before "no previous power levels event, allow"
    room.check(room.event("m.room.power_levels", ALICE, {"users": {BOB: 100}}, ""))


@pytest.mark.parametrize("version", versions(1, 11))
def test_creator_may_be_listed_before_v12(version: str) -> None:
    room = pl_room(version)
    room.check(change(room, ALICE, users=users(room, **{ALICE: 100})))


@pytest.mark.parametrize("version", ALL)
def test_first_power_levels_event_is_allowed(version: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    huge = {"users": {BOB: 10**6}, "ban": 10**6, "events": {"m.room.name": 10**6}, "notifications": {"room": 10**6}}
    room.check(room.event("m.room.power_levels", ALICE, huge, ""))


# --- changes against the previous event -------------------------------------------------------------


@pytest.mark.parametrize(("version", "rule"), NAMED)
def test_named_level_changes(version: str, rule: str) -> None:
    room = pl_room(version, ban=60)
    room.check(change(room, kick=40, invite=50, redact=None))
    room.check(change(room, ban=60))  # unchanged, though above Bob
    assert room.rule(change(room, ban=40)) == f"{rule}.1"
    assert room.rule(change(room, ban=None)) == f"{rule}.1"  # removed
    assert room.rule(change(room, kick=51)) == f"{rule}.2"
    assert room.rule(change(room, users_default=51)) == f"{rule}.2"  # added


@pytest.mark.parametrize("version", versions(1, 9))
def test_same_level_written_as_string_is_no_change(version: str) -> None:
    room = pl_room(version, ban=60)
    room.check(change(room, ban="060"))


@pytest.mark.parametrize(("version", "rule"), MAP_CURRENT)
def test_events_entries_changed_or_removed(version: str, rule: str) -> None:
    room = pl_room(version, events={"m.room.name": 60, "m.room.topic": 10})
    room.check(change(room, events={"m.room.name": 60, "m.room.topic": 20}))
    assert room.rule(change(room, events={"m.room.name": 40, "m.room.topic": 10})) == rule
    assert room.rule(change(room, events={"m.room.topic": 10})) == rule
    assert room.rule(change(room, events=None)) == rule


@pytest.mark.parametrize(("version", "rule"), MAP_NEW)
def test_events_entries_added_or_changed(version: str, rule: str) -> None:
    room = pl_room(version, events={"m.room.topic": 10})
    room.check(change(room, events={"m.room.topic": 50, "m.room.name": 50}))
    assert room.rule(change(room, events={"m.room.topic": 51})) == rule
    assert room.rule(change(room, events={"m.room.topic": 10, "m.room.name": 51})) == rule


@pytest.mark.parametrize(("version", "rule"), MAP_CURRENT)
def test_notifications_entries_changed_or_removed(version: str, rule: str) -> None:
    room = pl_room(version, notifications={"room": 60})
    lowered, removed = change(room, notifications={"room": 40}), change(room, notifications={})
    if int(version) >= 6:  # spec: rooms/v6 adds notifications to this rule
        assert room.rule(lowered) == rule
        assert room.rule(removed) == rule
    else:
        room.check(lowered)
        room.check(removed)


@pytest.mark.parametrize(("version", "rule"), MAP_NEW)
def test_notifications_entries_added_or_changed(version: str, rule: str) -> None:
    room = pl_room(version)
    raised = change(room, notifications={"room": 51})
    room.check(change(room, notifications={"room": 50}))
    if int(version) >= 6:
        assert room.rule(raised) == rule
    else:
        room.check(raised)


@pytest.mark.parametrize(("version", "rule"), USERS_CURRENT)
def test_users_changed_or_removed(version: str, rule: str) -> None:
    room = pl_room(version)
    room.state[("m.room.power_levels", "")]["content"]["users"].update({CAROL: 50, DAVE: 10})
    room.check(change(room, users=users(room, **{DAVE: 20})))
    room.check(change(room, users=users(room, **{BOB: 10})))  # the sender's own entry
    without_bob = users(room)
    del without_bob[BOB]
    room.check(change(room, users=without_bob))
    assert room.rule(change(room, users=users(room, **{CAROL: 10}))) == rule
    without_carol = users(room)
    del without_carol[CAROL]
    assert room.rule(change(room, users=without_carol)) == rule


@pytest.mark.parametrize(("version", "rule"), USERS_NEW)
def test_users_added_or_changed(version: str, rule: str) -> None:
    room = pl_room(version)
    room.check(change(room, users=users(room, **{DAVE: 50})))
    assert room.rule(change(room, users=users(room, **{DAVE: 51}))) == rule
    assert room.rule(change(room, users=users(room, **{BOB: 51}))) == rule


def test_v12_creator_has_no_ceiling() -> None:
    room = pl_room("12", ban=10**9, events={"m.room.name": 10**9})
    room.state[("m.room.power_levels", "")]["content"]["users"][CAROL] = 10**9
    room.check(change(room, ALICE, ban=0, events={}, users={BOB: 2**53 - 1}))


# --- helpers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "up_to_v5", "v6_to_v9", "from_v10"),
    [
        (100, 100, 100, 100),
        (-5, -5, -5, -5),
        (50.0, 50, 50, 50),
        (10.7, 10, None, None),
        (-10.7, -10, None, None),
        (5.11469e4, 51146, None, None),
        ("100", 100, 100, None),
        ("000100", 100, 100, None),
        (" -100 ", -100, -100, None),
        ("+7", 7, 7, None),
        ("\t+07\n", 7, 7, None),
        ("10.0", None, None, None),
        ("1_000", None, None, None),
        ("١٠٠", None, None, None),
        ("+-1", None, None, None),
        ("", None, None, None),
        (True, None, None, None),
        (math.inf, None, None, None),
        (math.nan, None, None, None),
        (None, None, None, None),
        ([1], None, None, None),
    ],
)
def test_parse_power_level(value: object, up_to_v5: int | None, v6_to_v9: int | None, from_v10: int | None) -> None:
    for version in ALL:
        n = int(version)
        wanted = up_to_v5 if n <= 5 else v6_to_v9 if n <= 9 else from_v10
        assert parse_power_level(value, version) == wanted, version


@pytest.mark.parametrize("version", ALL)
def test_user_level_without_power_levels_event(version: str) -> None:
    room = Room(version, create_content={"additional_creators": [CAROL]})
    alice = get_user_power_level(ALICE, None, room.create, version)
    assert alice == (CREATOR_POWER_LEVEL if version == "12" else 100)
    assert get_user_power_level(BOB, None, room.create, version) == 0
    assert get_user_power_level(CAROL, None, room.create, version) == (math.inf if version == "12" else 0)


@pytest.mark.parametrize("version", ALL)
def test_user_level_from_power_levels_event(version: str) -> None:
    room = Room(version)
    pl = {"content": {"users": {BOB: 30, CAROL: "40", ALICE: 5}, "users_default": 3}}
    assert get_user_power_level(BOB, pl, room.create, version) == 30
    assert get_user_power_level(DAVE, pl, room.create, version) == 3
    assert get_user_power_level(CAROL, pl, room.create, version) == (40 if int(version) <= 9 else 3)
    # The creator's default of 100 only applies without a power levels event; v12 creators are infinite.
    assert get_user_power_level(ALICE, pl, room.create, version) == (math.inf if version == "12" else 5)
    assert get_user_power_level(DAVE, {"content": {}}, room.create, version) == 0


def test_room_creators() -> None:
    create = {"sender": ALICE, "content": {"creator": BOB, "additional_creators": [CAROL, 5]}}
    assert room_creators(create, "10") == {BOB}
    assert room_creators(create, "11") == {ALICE}
    assert room_creators(create, "12") == {ALICE, CAROL}
    assert room_creators(None, "12") == frozenset()
    assert room_creators({"sender": ALICE, "content": {}}, "1") == frozenset()


@pytest.mark.parametrize("version", ALL)
def test_named_and_required_levels(version: str) -> None:
    defaults = {"ban": 50, "kick": 50, "redact": 50, "invite": 0, "events_default": 0, "state_default": 50}
    for name, level in defaults.items():
        assert get_named_level(None, name, version) == level
        assert get_named_level({"content": {name: 7}}, name, version) == 7
    with pytest.raises(ValueError):
        get_named_level(None, "users", version)
    pl = {"content": {"events": {"m.room.name": 20, "m.bad": "x" * int(version)}, "state_default": 30}}
    assert get_required_power_level(pl, "m.room.name", True, version) == 20
    assert get_required_power_level(pl, "m.room.topic", True, version) == 30
    assert get_required_power_level(pl, "m.room.message", False, version) == 0
    assert get_required_power_level(pl, "m.bad", True, version) == 30  # not a level: the default
    assert get_required_power_level(None, "m.room.topic", True, version) == 50
    assert get_notification_level(None, "room", version) == 50
    assert get_notification_level({"content": {"notifications": {"room": 20}}}, "room", version) == 20
