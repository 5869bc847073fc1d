"""State resolution v2.0 vs v2.1 on MSC4297 problems A and B (tests/vectors/state_res_msc4297.json).

spec: rooms/fragments/v2-state-res (rooms v2–v11) and rooms/v12 "State resolution" (v2.1). The vector
file carries its provenance (`_about`, each scenario's `source`); event ids are literal strings, taken
as given, never recomputed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from homeserver.state import MissingEventError, resolve_state
from tests.unit.vectors import load

StateKey = tuple[str, str]

_FILE = load("state_res_msc4297.json")
_SCENARIOS = {s["name"]: s for s in _FILE["msc4297_scenarios"]["scenarios"]}


class RecordingMap(Mapping[str, Mapping[str, Any]]):
    """A lazy-looking event map: records every key read and refuses to be iterated."""

    def __init__(self, events: Mapping[str, Mapping[str, Any]]) -> None:
        self._events = events
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        self.read.add(key)
        return self._events[key]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("state resolution must not iterate over the event map")

    def __len__(self) -> int:
        raise AssertionError("state resolution must not size the event map")


def _case(
    name: str, variant: str
) -> tuple[str, dict[str, dict[str, Any]], list[dict[StateKey, str]], dict[StateKey, str]]:
    scenario = _SCENARIOS[name]
    part = scenario[variant]
    events = {e["event_id"]: e for e in part["events"]}
    state_sets = [{(events[i]["type"], events[i]["state_key"]): i for i in ids} for ids in scenario["state_sets"]]
    expected = {(s["type"], s["state_key"]): s["event_id"] for s in part["expected_resolved_state"]}
    return part["room_version"], events, state_sets, expected


CASES = [
    pytest.param("msc4297_problem_A", "v2_0", id="A-v2.0"),
    pytest.param("msc4297_problem_A", "v2_1", id="A-v2.1"),
    pytest.param("msc4297_problem_B", "v2_0", id="B-v2.0"),
    pytest.param("msc4297_problem_B", "v2_1", id="B-v2.1"),
]


def test_vector_file_keeps_its_provenance() -> None:
    assert "ruma" in _FILE["_about"] and "MIT" in _FILE["_about"]
    for scenario in _SCENARIOS.values():
        assert scenario["source"]["transcribed_from"]["license"].startswith("MIT")


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_msc4297_resolved_state(name: str, variant: str) -> None:
    room_version, events, state_sets, expected = _case(name, variant)
    assert resolve_state(room_version, state_sets, events) == expected


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_msc4297_order_of_state_sets_does_not_matter(name: str, variant: str) -> None:
    room_version, events, state_sets, expected = _case(name, variant)
    assert resolve_state(room_version, state_sets[::-1], events) == expected


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_msc4297_reads_only_what_it_needs_from_a_lazy_map(name: str, variant: str) -> None:
    room_version, events, state_sets, expected = _case(name, variant)
    lazy = RecordingMap(events)
    assert resolve_state(room_version, state_sets, lazy) == expected
    assert lazy.read <= set(events)


def test_problem_a_v2_0_loses_the_join_rules() -> None:
    """spec: rooms/v12 note — v2.0 checks the conflicted join rules against the unconflicted state, in
    which Alice has already left, so neither join rules event survives."""
    room_version, events, state_sets, _ = _case("msc4297_problem_A", "v2_0")
    assert ("m.room.join_rules", "") not in resolve_state(room_version, state_sets, events)


def test_problem_a_v2_1_keeps_the_latest_join_rules() -> None:
    """spec: rooms/v12 — the iterative auth checks start from an empty state map, so Alice's join
    rules are checked against their own auth events (where she is joined) and the later one wins."""
    room_version, events, state_sets, _ = _case("msc4297_problem_A", "v2_1")
    resolved = resolve_state(room_version, state_sets, events)
    assert resolved[("m.room.join_rules", "")] == "$01-m-room-join_rules"


def test_problem_a_v2_1_rejected_auth_event_is_not_a_fallback() -> None:
    """spec: v2-state-res "Rejected events" — a rejected auth event is not used during the iterative
    auth checks. With Alice's join rejected, nothing shows that she may change the join rules."""
    room_version, events, state_sets, _ = _case("msc4297_problem_A", "v2_1")
    assert ("m.room.join_rules", "") in resolve_state(room_version, state_sets, events)
    rejected = {"$00-m-room-member-join-alice"}
    resolved = resolve_state(room_version, state_sets, events, rejected=rejected)
    assert ("m.room.join_rules", "") not in resolved
    # The callable form means the same.
    assert resolve_state(room_version, state_sets, events, rejected=rejected.__contains__) == resolved


def test_problem_b_v2_1_keeps_the_newer_power_levels() -> None:
    """spec: rooms/v12 "Conflicted state subgraph" — PL01 lies between the conflicted PL00 and PL02, so
    it is re-checked and PL02 (Bob giving Charlie 50) stays valid; v2.0 falls back to PL00."""
    for variant, winner in (("v2_0", "$00-m-room-power_levels"), ("v2_1", "$02-m-room-power_levels")):
        room_version, events, state_sets, _ = _case("msc4297_problem_B", variant)
        assert resolve_state(room_version, state_sets, events)[("m.room.power_levels", "")] == winner


def test_missing_event_is_reported_by_id() -> None:
    room_version, events, state_sets, _ = _case("msc4297_problem_A", "v2_0")
    partial = {k: v for k, v in events.items() if k != "$00-m-room-member-join-alice"}
    with pytest.raises(MissingEventError) as caught:
        resolve_state(room_version, state_sets, partial)
    assert caught.value.event_id == "$00-m-room-member-join-alice"
