"""Our state resolution against Synapse's answers, recorded once (tests/vectors/state_res_synapse.json).

The file holds small generated rooms (bench/dag_gen.py) and, for every merge, the state sets and what
Synapse resolved them to; each merge also appears with the create event removed from one state set.
It is derived, not from the spec: the file's `_about` says how it was made, and bench/README.md how to
regenerate it. So the test suite checks agreement with the network's reference server without
needing Synapse installed. The rooms are ones where the resolver before these vectors disagreed
with Synapse (auth difference, the power events' auth-chain walk, v12's implied create edge).
"""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.state import resolve_state
from tests.unit.vectors import load

StateKey = tuple[str, str]

_FILE = load("state_res_synapse.json")
_ROOMS: list[dict[str, Any]] = _FILE["rooms"]


def _events(room: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(zip(room["event_ids"], room["events"], strict=True))


def _state(room: dict[str, Any], indexes: list[int]) -> dict[StateKey, str]:
    events, ids = room["events"], room["event_ids"]
    return {(events[i]["type"], events[i]["state_key"]): ids[i] for i in indexes}


_CASES = [
    pytest.param(room, case, id=f"v{room['room_version']}-seed{room['seed']}-{case['label']}")
    for room in _ROOMS
    for case in room["cases"]
]


def test_vector_file_says_it_is_derived_and_from_synapse() -> None:
    about = _FILE["_about"]
    assert about.startswith("Derived") and "Synapse" in about
    assert {room["room_version"] for room in _ROOMS} == {"10", "12"}


@pytest.mark.parametrize("room", _ROOMS, ids=lambda r: f"v{r['room_version']}-seed{r['seed']}")
def test_event_ids_are_reference_hashes(room: dict[str, Any]) -> None:
    for event_id, event in zip(room["event_ids"], room["events"], strict=True):
        assert compute_event_id(event, room["room_version"]) == event_id


@pytest.mark.parametrize(("room", "case"), _CASES)
def test_we_resolve_as_synapse_did(room: dict[str, Any], case: dict[str, Any]) -> None:
    events = _events(room)
    state_sets = [_state(room, s) for s in case["state_sets"]]
    expected = _state(room, case["expected"])
    assert resolve_state(room["room_version"], state_sets, events) == expected
    assert resolve_state(room["room_version"], state_sets[::-1], events) == expected
