"""Property tests for state resolution over random room histories with forks and merges.

What the spec guarantees, for every algorithm (rooms/v1, rooms/fragments/v2-state-res, rooms/v12):
- the resolution is a function of the *set* of states: their order does not matter;
- unconflicted state survives (v2 and v2.1 step 5 put the unconflicted state map back last; v1
  starts from it and only ever changes conflicted keys);
- hence one state set, or several identical ones, resolve to themselves.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeserver.state import resolve_state
from tests.unit.stateres_graph import ALICE, BOB, CAROL, DAVE, RoomGraph, StateKey

USERS = [ALICE, BOB, CAROL, DAVE]
VERSIONS = ["1", "2", "6", "10", "11", "12"]
ACTIONS = ["join", "leave", "kick", "ban", "invite", "topic", "levels", "join_rules", "message"]

_settings = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@st.composite
def room_histories(draw: Any) -> tuple[RoomGraph, list[str]]:
    """A random room: a few users doing things on branches that fork off recent events and merge
    back; events that break the auth rules are kept in the DAG as rejected. Returns the graph and
    2–3 distinct extremities to resolve."""
    g = RoomGraph(draw(st.sampled_from(VERSIONS)))
    g.create_room()
    recent: list[str] = [g.head] if g.head else []
    for _ in range(draw(st.integers(2, 12))):
        action = draw(st.sampled_from(ACTIONS))
        sender = draw(st.sampled_from(USERS))
        target = draw(st.sampled_from(USERS))
        window = recent[-5:]
        prev: str | list[str] = draw(st.sampled_from(window))
        if len(window) > 1 and draw(st.booleans()):
            prev = sorted(set(draw(st.lists(st.sampled_from(window), min_size=2, max_size=3))))
        ts = draw(st.one_of(st.none(), st.integers(0, 40)))  # equal timestamps happen
        kw: dict[str, Any] = {"prev": prev, "ts": ts}
        if action == "join":
            event = g.join(sender, **kw)
        elif action == "leave":
            event = g.leave(sender, **kw)
        elif action == "kick":
            event = g.leave(sender, target, **kw)
        elif action == "ban":
            event = g.ban(sender, target, **kw)
        elif action == "invite":
            event = g.invite(sender, target, **kw)
        elif action == "topic":
            event = g.topic(sender, f"topic {len(g.events)}", **kw)
        elif action == "levels":
            level = draw(st.sampled_from([0, 50, 100]))
            event = g.power_levels(sender, g.with_creator({target: level} if target != g.creator else {}), **kw)
        elif action == "join_rules":
            event = g.join_rules(sender, draw(st.sampled_from(["public", "invite"])), **kw)
        else:
            event = g.message(sender, "hi", **kw)
        recent.append(event)
    tips = draw(st.lists(st.sampled_from(recent), min_size=2, max_size=3, unique=True))
    return g, tips


def _resolve(g: RoomGraph, states: list[dict[StateKey, str]]) -> dict[StateKey, str]:
    return resolve_state(g.rv.identifier, states, g.events, rejected=g.rejected)


@_settings
@given(room_histories())
def test_order_of_state_sets_does_not_matter(history: tuple[RoomGraph, list[str]]) -> None:
    g, tips = history
    states = [g.state(t) for t in tips]
    expected = _resolve(g, states)
    for permutation in itertools.permutations(states):
        assert _resolve(g, list(permutation)) == expected


@_settings
@given(room_histories())
def test_unconflicted_state_survives(history: tuple[RoomGraph, list[str]]) -> None:
    g, tips = history
    states = [g.state(t) for t in tips]
    resolved = _resolve(g, states)
    for key, event_id in states[0].items():
        if all(s.get(key) == event_id for s in states[1:]):
            assert resolved.get(key) == event_id, (key, g.describe(resolved))


@_settings
@given(room_histories())
def test_resolved_values_are_state_events_for_their_keys(history: tuple[RoomGraph, list[str]]) -> None:
    g, tips = history
    resolved = _resolve(g, [g.state(t) for t in tips])
    for (event_type, state_key), event_id in resolved.items():
        event = g.events[event_id]
        assert (event["type"], event["state_key"]) == (event_type, state_key)


@_settings
@given(room_histories(), st.integers(1, 3))
def test_one_or_identical_state_sets_resolve_to_themselves(history: tuple[RoomGraph, list[str]], copies: int) -> None:
    g, tips = history
    state = g.state(tips[0])
    assert _resolve(g, [state]) == state
    assert _resolve(g, [dict(state) for _ in range(copies)]) == state


@_settings
@given(room_histories())
def test_adding_a_state_set_already_present_changes_nothing(history: tuple[RoomGraph, list[str]]) -> None:
    """Conflicts are defined on the set of values per key, so a duplicate state set is invisible."""
    g, tips = history
    states = [g.state(t) for t in tips]
    assert _resolve(g, [*states, dict(states[0])]) == _resolve(g, states)
