"""Auth chains, the auth difference and the conflicted state subgraph against their definitions.

spec: rooms/fragments/v2-state-res "Auth chain", "Auth difference"; rooms/v12 "Conflicted state
subgraph". Also: the provider is pluggable, and the event map is only read by key.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.protocol.room_versions import EventFormat, get_room_version
from homeserver.state import AuthChainProvider, EventMapAuthChains, EventSource, resolve_state
from homeserver.state.event_source import reference_ids
from tests.unit.stateres_graph import ALICE, BOB, CAROL, TOPIC, RoomGraph

# --- random auth DAGs -----------------------------------------------------------------------------


@st.composite
def auth_dags(draw: Any) -> dict[str, dict[str, Any]]:
    """Events `$0`…`$n` whose auth events are earlier events (no room semantics needed here)."""
    count = draw(st.integers(1, 18))
    events: dict[str, dict[str, Any]] = {}
    for i in range(count):
        earlier = [f"${j}" for j in range(i)]
        auth = draw(st.lists(st.sampled_from(earlier), max_size=3, unique=True)) if earlier else []
        events[f"${i}"] = {"type": "t", "state_key": str(i), "auth_events": auth}
    return events


def _naive_auth_chain(events: Mapping[str, Mapping[str, Any]], event_id: str) -> set[str]:
    found: set[str] = set()
    todo = list(events[event_id]["auth_events"])
    while todo:
        current = todo.pop()
        if current not in found:
            found.add(current)
            todo.extend(events[current]["auth_events"])
    return found


def _provider(events: Mapping[str, Mapping[str, Any]]) -> EventMapAuthChains:
    return EventMapAuthChains(EventSource(events, get_room_version("11")))


@settings(max_examples=100, deadline=None)
@given(auth_dags(), st.data())
def test_auth_chain_difference_matches_the_definition(events: dict[str, dict[str, Any]], data: Any) -> None:
    """spec: v2-state-res "Auth difference", with Cᵢ = Sᵢ ∪ the auth chains of Sᵢ's events (the reading of
    Synapse and ruma: a set's own events are part of its full auth chain)."""
    ids = sorted(events)
    sets = data.draw(st.lists(st.sets(st.sampled_from(ids)), min_size=1, max_size=4))
    chains = [set(s).union(*(_naive_auth_chain(events, e) for e in s)) for s in sets]
    expected = set().union(*chains) - set.intersection(*chains)
    assert _provider(events).auth_chain_difference(sets) == expected


@settings(max_examples=100, deadline=None)
@given(auth_dags(), st.data())
def test_auth_chain_is_the_union_of_auth_chains(events: dict[str, dict[str, Any]], data: Any) -> None:
    chosen = data.draw(st.sets(st.sampled_from(sorted(events))))
    expected = set().union(*(_naive_auth_chain(events, e) for e in chosen))
    assert _provider(events).auth_chain(chosen) == expected


@settings(max_examples=100, deadline=None)
@given(auth_dags(), st.data())
def test_conflicted_subgraph_is_every_path_between_conflicted_events(
    events: dict[str, dict[str, Any]], data: Any
) -> None:
    conflicted = data.draw(st.sets(st.sampled_from(sorted(events)), min_size=1))
    below = {e: _naive_auth_chain(events, e) for e in events}
    # Inner points of paths c1 -> ... -> y -> ... -> c2 between conflicted events; the endpoints are
    # the conflicted events themselves.
    inner = {y for y in events if any(y in below[c1] for c1 in conflicted) and any(c2 in below[y] for c2 in conflicted)}
    assert _provider(events).conflicted_subgraph(conflicted) == inner | conflicted


# --- reference formats ------------------------------------------------------------------------------


def test_reference_ids_read_both_event_formats() -> None:
    pairs = [["$a:x", {"sha256": "h"}], ["$b:x", {"sha256": "h"}], ["$a:x", {"sha256": "h"}]]
    assert reference_ids(pairs, EventFormat.V1) == ("$a:x", "$b:x")
    assert reference_ids(["$a", "$b", "$a"], EventFormat.V3) == ("$a", "$b")
    assert reference_ids(pairs, EventFormat.V3) == ()
    assert reference_ids(None, EventFormat.V3) == ()


# --- pluggable provider, lazy event map ---------------------------------------------------------------


class CountingProvider:
    """Stands in for a storage-backed provider: answers from the default one and counts calls."""

    def __init__(self, inner: AuthChainProvider) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        self.calls.append("auth_chain")
        return self.inner.auth_chain(event_ids)

    def auth_chain_difference(self, state_sets: Sequence[Collection[str]]) -> set[str]:
        self.calls.append("auth_chain_difference")
        return self.inner.auth_chain_difference(state_sets)

    def conflicted_subgraph(self, conflicted: Collection[str]) -> set[str]:
        self.calls.append("conflicted_subgraph")
        return self.inner.conflicted_subgraph(conflicted)


class LazyMap(Mapping[str, Mapping[str, Any]]):
    def __init__(self, events: Mapping[str, Mapping[str, Any]]) -> None:
        self._events = events
        self.read: list[str] = []

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        self.read.append(key)
        return self._events[key]

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("never iterate the event map")

    def __len__(self) -> int:
        raise AssertionError("never size the event map")


def _busy_fork(version: str) -> tuple[RoomGraph, str, str]:
    g = RoomGraph(version)
    fork = g.create_room()
    a = g.join(BOB, prev=fork)
    for i in range(5):
        a = g.message(BOB, f"a{i}", prev=a)
    a = g.topic(ALICE, "a", prev=a)
    b = g.join(CAROL, prev=fork)
    for i in range(5):
        b = g.message(CAROL, f"b{i}", prev=b)
    b = g.topic(ALICE, "b", prev=b)
    return g, a, b


def test_a_custom_provider_answers_the_auth_chain_queries() -> None:
    for version, expected_calls in (
        ("11", {"auth_chain_difference"}),
        ("12", {"auth_chain_difference", "conflicted_subgraph"}),
    ):
        g, a, b = _busy_fork(version)
        states = [g.state(a), g.state(b)]
        provider = CountingProvider(EventMapAuthChains(EventSource(g.events, g.rv)))
        assert isinstance(provider, AuthChainProvider)
        resolved = resolve_state(version, states, g.events, auth_chain_provider=provider)
        assert resolved == resolve_state(version, states, g.events)
        assert set(provider.calls) == expected_calls
        assert resolved[TOPIC] == b


def test_event_map_is_read_by_key_only_and_messages_are_never_read() -> None:
    for version in ("1", "2", "11", "12"):
        g, a, b = _busy_fork(version)
        lazy = LazyMap(g.events)
        resolve_state(version, [g.state(a), g.state(b)], lazy)
        messages = {e for e, ev in g.events.items() if ev["type"] == "m.room.message"}
        assert lazy.read and not messages & set(lazy.read)
        # Each event is fetched from the map at most once per resolution.
        assert len(lazy.read) == len(set(lazy.read))
