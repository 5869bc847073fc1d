"""Where the spec's text leaves room, state resolution does what the network's reference servers do.

Rooms only federate if every server resolves the same state. Each story below is a point where a
looser reading of rooms/fragments/v2-state-res (or rooms/v12) gave a different answer from Synapse,
which runs matrix.org; the expected results were checked against Synapse 1.163.2's resolver
(`bench/synapse_ref.py`, `resolve_foreign`) and, where it has the same code path, ruma-state-res.
Each story fails with the earlier reading and passes with Synapse's.
"""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.protocol.room_versions import get_room_version
from homeserver.state import EventMapAuthChains, EventSource, resolve_state
from homeserver.state.v2 import is_power_event
from tests.unit.stateres_graph import (
    ALICE,
    BOB,
    CAROL,
    CREATE,
    JOIN_RULES,
    POWER_LEVELS,
    TOPIC,
    RoomGraph,
    member,
)

V2_FAMILY = ["2", "3", "4", "5", "6", "7", "8", "9", "10", "11"]
V2_AND_V12 = [*V2_FAMILY, "12"]


# --- auth difference: a state set's own events are part of its full auth chain --------------------


def _two_admins_change_levels(version: str) -> tuple[RoomGraph, str, str]:
    """Bob and Carol (both 100, granted after they joined) change the power levels concurrently, Bob
    first by the clock. Carol's topic before the fork puts her join in both branches' auth chains;
    Bob's join is cited only by Bob's power levels event, in one branch."""
    g = RoomGraph(version)
    g.create_room()
    g.join(BOB)
    g.join(CAROL)
    levels = g.power_levels(ALICE, g.with_creator({BOB: 100, CAROL: 100}))
    fork = g.topic(CAROL, "before the fork")
    bobs = g.add(
        "m.room.power_levels", BOB, g.content(levels) | {"state_default": 40}, state_key="", prev=fork, ts=1_000
    )
    carols = g.add(
        "m.room.power_levels", CAROL, g.content(levels) | {"state_default": 60}, state_key="", prev=fork, ts=2_000
    )
    assert not {bobs, carols} & g.rejected
    return g, bobs, carols


@pytest.mark.parametrize("version", V2_AND_V12)
def test_an_event_every_state_set_holds_is_not_in_the_auth_difference(version: str) -> None:
    """spec: v2-state-res "Auth difference" — Cᵢ is "the full auth chain" of Sᵢ. Synapse and ruma count
    Sᵢ's own events in it, so Bob's join (in both states, cited by one) is in every Cᵢ and not in the
    difference. Counted only from the chains, it was: it then joined the power ordering's graph
    below Bob's power levels event and, with the power 0 Bob had when he joined, held it back until
    after Carol's, so Bob's (earlier) event was applied last and won."""
    g, bobs, carols = _two_admins_change_levels(version)
    sets = [g.state(bobs), g.state(carols)]
    bob_join = sets[0][member(BOB)]
    assert sets[1][member(BOB)] == bob_join

    difference = EventMapAuthChains(EventSource(g.events, g.rv)).auth_chain_difference([set(s.values()) for s in sets])
    assert bob_join not in difference
    assert g.resolve(bobs, carols)[POWER_LEVELS] == carols
    assert g.resolve(carols, bobs)[POWER_LEVELS] == carols


# --- step 1: the power events' auth chains, followed inside the full conflicted set only ----------


def _closure_story(version: str) -> tuple[RoomGraph, list[dict[tuple[str, str], str]], str, str]:
    """Bob joins (X, his clock says 500) and changes the power levels (U). Concurrently he renames
    himself (Y, citing X; his other device's clock says 400). One branch merges U and Y; on the
    other Alice kicks Carol (P, citing U). U is in both states; X and Y are Bob's conflicted
    membership. P's auth chain reaches X only through U, which is outside the full conflicted set."""
    g = RoomGraph(version)
    g.create_room()
    g.join(CAROL)
    first_levels = g.power_levels(ALICE, g.with_creator({BOB: 100}))
    bob_join = g.join(BOB, ts=500, name="join-bob")
    bobs_levels = g.add(
        "m.room.power_levels", BOB, g.content(first_levels) | {"state_default": 40}, state_key="", prev=bob_join
    )
    renamed = g.add(
        "m.room.member",
        BOB,
        {"membership": "join", "displayname": "Bobby"},
        state_key=BOB,
        prev=bob_join,
        ts=400,
        name="rename-bob",
    )
    kick = g.leave(ALICE, CAROL, prev=bobs_levels)
    merged = g.state_before([bobs_levels, renamed])
    assert merged[POWER_LEVELS] == g.state(kick)[POWER_LEVELS] == bobs_levels
    assert (merged[member(BOB)], g.state(kick)[member(BOB)]) == (renamed, bob_join)
    return g, [merged, g.state(kick)], bob_join, renamed


@pytest.mark.parametrize("version", V2_FAMILY)
def test_power_events_auth_chain_is_followed_inside_the_full_conflicted_set_only(version: str) -> None:
    """spec: v2-state-res "Algorithm" step 1 — "the events in the auth chain of P which also belong to
    the full conflicted set". Synapse and ruma walk P's auth events only while they stay in the full
    conflicted set, so X (reached only through U) is left to the mainline ordering, where it sorts
    after Y (same mainline position, later timestamp) and wins. Taking auth_chain(P) ∩ full set
    applied X in step 1, before Y, and Y won."""
    g, sets, bob_join, _ = _closure_story(version)
    assert resolve_state(version, sets, g.events)[member(BOB)] == bob_join
    assert resolve_state(version, sets[::-1], g.events)[member(BOB)] == bob_join


def test_v12_conflicted_subgraph_brings_the_cut_event_back() -> None:
    """spec: rooms/v12 "Conflicted state subgraph" — U lies on the path P → U → X between two conflicted
    events, so it joins the full conflicted set and P's walk reaches X after all (Synapse agrees)."""
    g, sets, _, renamed = _closure_story("12")
    assert resolve_state("12", sets, g.events)[member(BOB)] == renamed


# --- power events: the state key must be empty --------------------------------------------------


@pytest.mark.parametrize("version", V2_AND_V12)
def test_join_rules_with_a_state_key_are_not_power_events(version: str) -> None:
    """spec: v2-state-res "Power events" names the event types; Synapse and ruma also require the empty
    state key. So these two go through the mainline ordering (the later one wins), not the power
    ordering (where Alice's greater power would put hers first, and Bob's would win)."""
    g = RoomGraph(version)
    g.create_room()
    g.join(BOB)
    fork = g.power_levels(ALICE, g.with_creator({BOB: 50}))
    bobs = g.add("m.room.join_rules", BOB, {"join_rule": "public"}, state_key="x", prev=fork, ts=1_000)
    alices = g.add("m.room.join_rules", ALICE, {"join_rule": "invite"}, state_key="x", prev=fork, ts=2_000)
    assert not {bobs, alices} & g.rejected
    assert g.resolve(bobs, alices)[("m.room.join_rules", "x")] == alices
    assert g.resolve(alices, bobs)[("m.room.join_rules", "x")] == alices
    assert g.resolve(bobs, alices)[JOIN_RULES] == g.state(fork)[JOIN_RULES]


def _event(event_type: str, state_key: str | None, sender: str = ALICE, **content: Any) -> dict[str, Any]:
    event: dict[str, Any] = {"type": event_type, "sender": sender, "content": content}
    if state_key is not None:
        event["state_key"] = state_key
    return event


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (_event("m.room.power_levels", ""), True),
        (_event("m.room.join_rules", "", join_rule="public"), True),
        (_event("m.room.create", ""), True),  # Synapse and ruma: the create event is a power event
        (_event("m.room.power_levels", "x"), False),
        (_event("m.room.join_rules", "x"), False),
        (_event("m.room.create", "x"), False),
        (_event("m.room.power_levels", None), False),
        (_event("m.room.member", BOB, membership="ban"), True),
        (_event("m.room.member", BOB, membership="leave"), True),
        (_event("m.room.member", ALICE, membership="leave"), False),  # leaving is not a kick
        (_event("m.room.member", BOB, membership="join"), False),
        (_event("m.room.topic", ""), False),
    ],
)
def test_power_event_classification(event: dict[str, Any], expected: bool) -> None:
    assert is_power_event(event) is expected


# --- rejected events ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", V2_AND_V12)
def test_a_rejected_event_is_never_admitted(version: str) -> None:
    """Synapse never admits an event it rejected on receipt into the resolved state, though it would
    pass the checks now (spec: v2-state-res "Rejected events" says "handled as usual"; see
    matrix-org/synapse#13797). Alice's later topic would win; rejected, it is skipped."""
    g = RoomGraph(version)
    fork = g.create_room()
    earlier = g.topic(ALICE, "earlier", prev=fork, ts=1_000)
    later = g.topic(ALICE, "later", prev=fork, ts=2_000)
    sets = [g.state(earlier), g.state(later)]
    assert resolve_state(version, sets, g.events)[TOPIC] == later
    assert resolve_state(version, sets, g.events, rejected={later})[TOPIC] == earlier


@pytest.mark.parametrize("version", V2_AND_V12)
def test_a_rejected_event_in_the_state_is_not_used_by_the_auth_rules(version: str) -> None:
    """spec: v2-state-res "Iterative auth checks" only rules out rejected *fallback* auth events;
    Synapse and ruma also skip a rejected event found in the state being built. Bob's join, in both
    states but rejected here, therefore does not let Bob's topic through."""
    g = RoomGraph(version)
    g.create_room(power_levels={"state_default": 0})
    bob_join = g.join(BOB)
    bobs = g.topic(BOB, "Bob's", prev=bob_join, ts=1_000)
    alices = g.topic(ALICE, "Alice's", prev=bob_join, ts=500)
    sets = [g.state(bobs), g.state(alices)]
    assert resolve_state(version, sets, g.events)[TOPIC] == bobs
    assert resolve_state(version, sets, g.events, rejected={bob_join})[TOPIC] == alices


# --- rooms v12: the room id names an implied auth event -------------------------------------------


def test_v12_create_event_is_an_implied_auth_event() -> None:
    """spec: rooms/v12 — the create event is never listed in `auth_events`; "the room_id ... implies
    this instead". Synapse's auth graph has that edge (its `auth_event_ids()` appends the create
    event), so ours does too: it is in every auth chain, and when the state sets disagree about the
    create event, every path from a conflicted event down to it is in the conflicted subgraph."""
    g = RoomGraph("12")
    g.create_room()
    bob_join = g.join(BOB)
    topic = g.topic(ALICE, "t")
    create = g.state(topic)[CREATE]
    source = EventSource(g.events, get_room_version("12"))
    assert create not in g.events[bob_join]["auth_events"]
    assert source.auth_event_ids(bob_join)[-1] == create
    assert source.auth_event_ids(create) == ()
    chains = EventMapAuthChains(source)
    assert create in chains.auth_chain([bob_join])
    # The create event conflicted (one state set lacks it): Alice's join and the power levels lie
    # between the topic and the create event.
    subgraph = chains.conflicted_subgraph({create, topic})
    power_levels = g.state(topic)[POWER_LEVELS]
    assert {create, topic, power_levels, g.state(topic)[member(ALICE)]} <= subgraph
    # Earlier room versions list the create event themselves and have no implied edge.
    g11 = RoomGraph("11")
    g11.create_room()
    join11 = g11.join(BOB)
    source11 = EventSource(g11.events, get_room_version("11"))
    assert source11.auth_event_ids(join11) == tuple(g11.events[join11]["auth_events"])
