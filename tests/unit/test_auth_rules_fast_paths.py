"""The auth rules' fast paths say exactly what the slow, general code says.

State resolution runs the auth rules tens of thousands of times; the shortcuts taken for it (a regex for
everyday user ids, an `AuthMemo` of parsed power levels and creators) must never change an answer.
The memo is also exercised by every check in test_auth_rules*.py (`Room.check` / `Room.rule`).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.protocol import identifiers
from homeserver.protocol.auth_rules import AuthMemo, check_auth
from homeserver.protocol.auth_rules_common import is_valid_user_id
from homeserver.protocol.errors import AuthError
from homeserver.protocol.room_versions import get_room_version

from .test_auth_rules import ALICE, BOB, CAROL, standard_room

# --- user ids -----------------------------------------------------------------------------------------

_PIECES = ["@", ":", "a", "Z", "0", "9", ".", "-", "_", "=", "/", "+", "[", "]", "::1", " ", "\x00", "é", "\ud800"]


def _slow(value: str) -> bool:
    return identifiers.is_valid_user_id(value, historical=True)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))
def test_user_id_check_agrees_with_the_parser_on_random_strings(value: str) -> None:
    assert is_valid_user_id(value) == _slow(value)


@pytest.mark.parametrize(
    "value",
    [
        "@alice:example.com",
        "@alice:example.com:8448",
        "@alice:example.com:65535",
        "@alice:example.com:65536",  # above the highest port
        "@alice:example.com:099999",
        "@alice:1.2.3.4",
        "@alice:999.1.1.1",  # IPv4-shaped with an octet above 255
        "@alice:1.2.3",  # not IPv4-shaped: a DNS name
        "@alice:[::1]:8448",
        "@alice:[::1",
        "@:example.com",  # historical: an empty localpart
        "@ALICE:example.com",  # historical: upper case
        "@al ice:example.com",
        "@al\x00ice:example.com",
        "@alice:",
        "@alice",
        "alice:example.com",
        "@alice:exa_mple.com",
        "@" + "a" * 240 + ":example.com",  # 253 characters
        "@" + "a" * 250 + ":example.com",  # 263 characters: too long
        "@élodie:example.com",
    ],
)
def test_user_id_check_agrees_with_the_parser(value: str) -> None:
    assert is_valid_user_id(value) == _slow(value)


def test_user_id_check_takes_strings_only() -> None:
    assert not is_valid_user_id(None)
    assert not is_valid_user_id(b"@alice:example.com")


# --- AuthMemo ---------------------------------------------------------------------------------------


def _outcome(ev: dict[str, Any], state: Any, version: str, memo: AuthMemo | None) -> str | None:
    try:
        check_auth(ev, state, version, memo=memo)
    except AuthError as e:
        return e.rule
    return None


@pytest.mark.parametrize("version", ["6", "10", "12"])
def test_memo_is_shared_across_checks_of_many_events(version: str) -> None:
    """One memo for a run of power levels changes against the same (unchanged) state, as state
    resolution uses it: every outcome equals the memo-less one."""
    room = standard_room(version, users={BOB: 50})
    room.member(BOB, "join")
    room.member(CAROL, "join")
    current = room.state[("m.room.power_levels", "")]["content"]
    memo = AuthMemo(get_room_version(version))
    contents: list[dict[str, Any]] = []
    for users in ({BOB: 50, CAROL: 40}, {BOB: 60}, {BOB: 50, CAROL: 50}, {BOB: 50, "not a user": 1}, {BOB: "50"}):
        content = copy.deepcopy(current)
        content["users"] = {**({} if room.rv.privileged_creators else {ALICE: 100}), **users}
        contents.append(content)
    contents.append(copy.deepcopy(current) | {"kick": 60})
    contents.append(copy.deepcopy(current) | {"events": {"m.room.topic": "x"}})
    events = [room.event("m.room.power_levels", sender, c, "") for c in contents for sender in (ALICE, BOB)]
    expected = [_outcome(ev, room.state, version, None) for ev in events]
    assert {None} < set(expected)  # some pass, some fail
    for _ in range(2):
        assert [_outcome(ev, room.state, version, memo) for ev in events] == expected


def test_memo_belongs_to_one_room_version() -> None:
    room = standard_room("10")
    ev = room.event("m.room.topic", ALICE, {"topic": "t"}, "")
    with pytest.raises(ValueError):
        check_auth(ev, room.state, "10", memo=AuthMemo(get_room_version("11")))
