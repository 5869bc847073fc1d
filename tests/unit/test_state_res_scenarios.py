"""State resolution stories: forks built event by event, then merged.

spec: rooms/fragments/v2-state-res (rooms v2–v11), rooms/v12 "State resolution" (v2.1) and rooms/v1
"State resolution". Each story says which rule of the algorithm decides it.
"""

from __future__ import annotations

import pytest

from homeserver.state import resolve_state
from tests.unit.stateres_graph import (
    ALICE,
    BOB,
    CAROL,
    EVE,
    JOIN_RULES,
    POWER_LEVELS,
    TOPIC,
    RoomGraph,
    member,
)

V2_FAMILY = ["2", "3", "4", "5", "6", "7", "8", "9", "10", "11"]
V2_AND_V12 = [*V2_FAMILY, "12"]
ALL_VERSIONS = ["1", *V2_AND_V12]


def _moderated_room(version: str) -> tuple[RoomGraph, str]:
    """Alice's public room where Bob (moderator, 50) and Carol have joined; returns the fork point."""
    g = RoomGraph(version)
    g.create_room()
    g.join(BOB)
    g.join(CAROL)
    fork = g.power_levels(ALICE, g.with_creator({BOB: 50}), name="pl-bob-mod")
    return g, fork


# --- ban vs power levels ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_demotion_beats_the_demoted_moderators_concurrent_ban(version: str) -> None:
    """Alice demotes Bob while Bob bans Carol on another branch. v2: power events are ordered by
    their auth DAG and sender power, so the demotion is applied before the ban, which then fails."""
    g, fork = _moderated_room(version)
    carol_join = g.state(fork)[member(CAROL)]
    demote = g.power_levels(ALICE, g.with_creator({BOB: 0}), prev=fork)
    ban = g.ban(BOB, CAROL, prev=fork)
    assert ban not in g.rejected  # valid on its own branch

    resolved = g.resolve(demote, ban)
    assert resolved[POWER_LEVELS] == demote
    assert resolved[member(CAROL)] == carol_join, g.describe(resolved)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_admins_ban_beats_the_banned_moderators_concurrent_power_change(version: str) -> None:
    """Bob promotes Carol, then (by the clock) Alice bans Bob on another branch. v2: Alice's ban sorts
    first for its sender's greater power, despite the later timestamp, so Bob is no longer joined
    when his power levels event is checked."""
    g, fork = _moderated_room(version)
    promote = g.power_levels(BOB, g.with_creator({BOB: 50, CAROL: 50}), prev=fork)
    ban = g.ban(ALICE, BOB, prev=fork)
    assert promote not in g.rejected
    assert g.events[ban]["origin_server_ts"] > g.events[promote]["origin_server_ts"]

    resolved = g.resolve(ban, promote)
    assert resolved[member(BOB)] == ban
    assert resolved[POWER_LEVELS] == fork, g.describe(resolved)


# --- join rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", V2_AND_V12)
def test_join_rules_cannot_be_evaded_from_an_old_branch(version: str) -> None:
    """Alice makes the room invite-only; Eve joins from a branch that predates it. The join rules are
    a power event, applied first; Eve's join is then checked against them and fails."""
    g = RoomGraph(version)
    fork = g.create_room()
    invite_only = g.join_rules(ALICE, "invite", prev=fork)
    eve = g.join(EVE, prev=fork)
    assert eve not in g.rejected

    resolved = g.resolve(invite_only, eve)
    assert resolved[JOIN_RULES] == invite_only
    assert member(EVE) not in resolved, g.describe(resolved)


def test_v1_lets_the_old_branch_join_through() -> None:
    """spec: rooms/v1 — only keys with different event ids conflict; Eve's key is in one state only,
    so the union keeps her join (one of the resets that v2 fixed)."""
    g = RoomGraph("1")
    fork = g.create_room()
    invite_only = g.join_rules(ALICE, "invite", prev=fork)
    eve = g.join(EVE, prev=fork)
    resolved = g.resolve(invite_only, eve)
    assert resolved[JOIN_RULES] == invite_only
    assert resolved[member(EVE)] == eve


# --- topics -------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_admins_topic_survives_a_concurrent_demotion(version: str) -> None:
    """Alice demotes Bob and sets the topic; Bob, on an older branch, sets a later topic. The demotion
    is resolved first, so Bob's topic (at a later timestamp) fails and Alice's stays."""
    g, fork = _moderated_room(version)
    demote = g.power_levels(ALICE, g.with_creator({BOB: 0}), prev=fork)
    admin_topic = g.topic(ALICE, "admin's topic", prev=demote)
    mod_topic = g.topic(BOB, "moderator's topic", prev=fork, ts=g.clock + 100)
    assert mod_topic not in g.rejected

    resolved = g.resolve(admin_topic, mod_topic)
    assert resolved[POWER_LEVELS] == demote
    assert resolved[TOPIC] == admin_topic, g.describe(resolved)


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_a_stale_branch_does_not_reset_the_topic(version: str) -> None:
    """Alice changes the topic on one branch while Bob chats on another that still sees the old
    topic: the newer topic wins (v2: same mainline position, later timestamp; v1: greater depth)."""
    g = RoomGraph(version)
    g.create_room()
    g.join(BOB)
    old = g.topic(ALICE, "old")
    new = g.topic(ALICE, "new", prev=old)
    chat = g.message(BOB, "hello", prev=old)
    assert g.resolve(new, chat)[TOPIC] == new
    assert g.resolve(chat, new)[TOPIC] == new


# --- mainline ordering --------------------------------------------------------------------------


@pytest.mark.parametrize("version", V2_AND_V12)
def test_mainline_position_beats_timestamps(version: str) -> None:
    """spec: v2-state-res "Mainline ordering" — an event authorised by an older power levels event on
    the mainline sorts before one authorised by a newer one, whatever their timestamps, so the
    latter is applied last and wins."""
    g = RoomGraph(version)
    fork = g.create_room()
    newer_levels = g.power_levels(ALICE, g.with_creator({CAROL: 10}), prev=fork)
    topic_on_newer = g.topic(ALICE, "authorised by the newer levels", prev=newer_levels, ts=1)
    topic_on_older = g.topic(ALICE, "authorised by the older levels", prev=fork, ts=10_000)

    resolved = g.resolve(topic_on_newer, topic_on_older)
    assert resolved[POWER_LEVELS] == newer_levels
    assert resolved[TOPIC] == topic_on_newer, g.describe(resolved)


# --- concurrent membership ----------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_concurrent_joins_are_both_kept(version: str) -> None:
    g = RoomGraph(version)
    fork = g.create_room()
    bob = g.join(BOB, prev=fork)
    carol = g.join(CAROL, prev=fork)
    for order in ((bob, carol), (carol, bob)):
        resolved = g.resolve(*order)
        assert resolved[member(BOB)] == bob
        assert resolved[member(CAROL)] == carol


@pytest.mark.parametrize("version", V2_AND_V12)
@pytest.mark.parametrize("leave_last", [True, False])
def test_concurrent_leave_and_profile_change_later_timestamp_wins(version: str, leave_last: bool) -> None:
    """Neither a self-leave nor a join is a power event: both go through mainline ordering, where the
    same mainline position leaves origin_server_ts to decide which is applied last."""
    g = RoomGraph(version)
    g.create_room()
    fork = g.join(BOB)
    leave = g.leave(BOB, prev=fork, ts=200 if leave_last else 100)
    rename = g.add(
        "m.room.member",
        BOB,
        {"membership": "join", "displayname": "Bobby"},
        state_key=BOB,
        prev=fork,
        ts=100 if leave_last else 200,
    )
    resolved = g.resolve(leave, rename)
    assert resolved[member(BOB)] == (leave if leave_last else rename)


# --- tie-breaks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", V2_AND_V12)
@pytest.mark.parametrize("first_is_later", [True, False])
def test_power_events_tie_break_on_origin_server_ts(version: str, first_is_later: bool) -> None:
    """spec: v2-state-res "Reverse topological power ordering" rule 2 — same sender power, so the
    earlier timestamp is applied first and the later join rules win."""
    g = RoomGraph(version)
    fork = g.create_room()
    a = g.join_rules(ALICE, "invite", prev=fork, ts=500 if first_is_later else 400)
    b = g.join_rules(ALICE, "public", prev=fork, ts=400 if first_is_later else 500)
    assert g.resolve(a, b)[JOIN_RULES] == (a if first_is_later else b)


@pytest.mark.parametrize("version", V2_AND_V12)
@pytest.mark.parametrize("swap", [False, True])
def test_power_events_tie_break_on_event_id(version: str, swap: bool) -> None:
    """spec: v2-state-res "Reverse topological power ordering" rule 3 — same power and timestamp:
    the smaller event id is applied first, so the greater one wins."""
    g = RoomGraph(version)
    fork = g.create_room()
    ids = ["$jr-aaa:example.com", "$jr-zzz:example.com"]
    if swap:
        ids.reverse()
    first = g.join_rules(ALICE, "invite", prev=fork, ts=500, event_id=ids[0])
    second = g.join_rules(ALICE, "public", prev=fork, ts=500, event_id=ids[1])
    assert g.resolve(first, second)[JOIN_RULES] == "$jr-zzz:example.com"
    assert g.resolve(second, first)[JOIN_RULES] == "$jr-zzz:example.com"


@pytest.mark.parametrize("version", V2_AND_V12)
@pytest.mark.parametrize("swap", [False, True])
def test_mainline_tie_break_on_origin_server_ts_then_event_id(version: str, swap: bool) -> None:
    """spec: v2-state-res "Mainline ordering" rules 2 and 3."""
    g = RoomGraph(version)
    fork = g.create_room()
    early = g.topic(ALICE, "early", prev=fork, ts=300)
    late = g.topic(ALICE, "late", prev=fork, ts=301)
    assert g.resolve(*((late, early) if swap else (early, late)))[TOPIC] == late

    ids = ["$topic-aaa:example.com", "$topic-zzz:example.com"]
    if swap:
        ids.reverse()
    x = g.topic(ALICE, "x", prev=fork, ts=700, event_id=ids[0])
    y = g.topic(ALICE, "y", prev=fork, ts=700, event_id=ids[1])
    assert g.resolve(x, y)[TOPIC] == "$topic-zzz:example.com"


# --- sender power, and creators in v12 ----------------------------------------------------------


@pytest.mark.parametrize("version", V2_AND_V12)
def test_room_creators_power_events_go_first_in_v12(version: str) -> None:
    """Alice (creator) and Bob (100) change `state_default` concurrently, Bob earlier. Rooms v2–v11:
    both have 100, so the timestamp decides — Bob's goes first and Alice's, applied last, wins.
    spec: rooms/v12 — creators have infinite power, so Alice's goes first and Bob's wins.

    (Bob's join is in both states, so it is in every full auth chain and not in the auth difference:
    it does not hold his power levels event back. See test_state_res_synapse_compat.)"""
    g = RoomGraph(version)
    g.create_room()
    g.join(BOB)
    levels = g.power_levels(ALICE, g.with_creator({BOB: 100}))
    fork = g.topic(BOB, "Bob's topic")
    bobs = g.add(
        "m.room.power_levels", BOB, g.content(levels) | {"state_default": 40}, state_key="", prev=fork, ts=1_000
    )
    alices = g.add(
        "m.room.power_levels", ALICE, g.content(levels) | {"state_default": 60}, state_key="", prev=fork, ts=2_000
    )
    assert not {bobs, alices} & g.rejected

    expected = bobs if g.rv.privileged_creators else alices
    assert g.resolve(bobs, alices)[POWER_LEVELS] == expected
    assert g.resolve(alices, bobs)[POWER_LEVELS] == expected


# --- rejected events ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", V2_FAMILY)
def test_rejected_auth_event_is_not_used_as_fallback(version: str) -> None:
    """spec: v2-state-res "Iterative auth checks" and "Rejected events" — when the state lacks a key the
    rules need, the event's own auth event is used, unless that auth event was rejected.

    Bob's topic is only in one state; his join (its auth event) is in the auth difference and fails
    against the invite-only rules, so his membership is missing when the topic is checked."""
    g = RoomGraph(version)
    g.create_room(power_levels={"state_default": 0})
    fork = g.head
    assert fork is not None
    bob_join = g.join(BOB, prev=fork)
    bob_topic = g.topic(BOB, "Bob's topic", prev=bob_join)
    carol = g.join(CAROL, prev=fork)
    invite_only = g.join_rules(ALICE, "invite", prev=carol)

    without_topic = g.state(invite_only)
    with_topic = dict(without_topic)
    with_topic[TOPIC] = bob_topic
    sets = [with_topic, without_topic]

    assert resolve_state(version, sets, g.events)[TOPIC] == bob_topic
    rejected = {bob_join}
    assert TOPIC not in resolve_state(version, sets, g.events, rejected=rejected)
    assert TOPIC not in resolve_state(version, sets, g.events, rejected=rejected.__contains__)


# --- MSC4297 problem A, rebuilt ----------------------------------------------------------------


@pytest.mark.parametrize("version", ["11", "12"])
def test_problem_a_rebuilt(version: str) -> None:
    """MSC4297 problem A with real event ids: Alice makes the room invite-only and leaves; the two
    state sets disagree on the join rules. v2.0 checks them against the unconflicted state (Alice has
    left) and loses both; v2.1 starts from an empty map and keeps the newer ones."""
    g = RoomGraph(version)
    public = g.create_room()
    bob = g.join(BOB)
    carol = g.join(CAROL)
    invite_only = g.join_rules(ALICE, "invite")
    alice_leaves = g.leave(ALICE)
    bob_renamed = g.add(
        "m.room.member", BOB, {"membership": "join", "displayname": "bob++"}, state_key=BOB, prev=alice_leaves
    )
    carol_renamed = g.add(
        "m.room.member", CAROL, {"membership": "join", "displayname": "carol++"}, state_key=CAROL, prev=alice_leaves
    )
    base = g.state(alice_leaves)
    bobs_view = base | {member(CAROL): carol, member(BOB): bob_renamed}
    carols_view = base | {JOIN_RULES: public, member(BOB): bob, member(CAROL): carol_renamed}

    resolved = resolve_state(version, [bobs_view, carols_view], g.events)
    assert resolved[member(ALICE)] == alice_leaves
    assert resolved[member(BOB)] == bob_renamed
    assert resolved[member(CAROL)] == carol_renamed
    if version == "12":
        assert resolved[JOIN_RULES] == invite_only
    else:
        assert JOIN_RULES not in resolved


# --- v1 -------------------------------------------------------------------------------------------


def test_v1_takes_the_deepest_other_event_that_passes_auth() -> None:
    """spec: rooms/v1 — for conflicts outside power levels, join rules and members, pick the event
    with the highest depth (then lowest sha1) that passes authentication in R."""
    g, fork = _moderated_room("1")
    demote = g.power_levels(ALICE, g.with_creator({BOB: 0}), prev=fork)
    alices = g.topic(ALICE, "Alice's", prev=demote)
    bobs_1 = g.topic(BOB, "Bob's", prev=fork)
    bobs_2 = g.message(BOB, "deeper", prev=bobs_1)
    bobs_3 = g.topic(BOB, "Bob's, deeper", prev=bobs_2)
    resolved = g.resolve(alices, bobs_3)
    assert g.events[bobs_3]["depth"] > g.events[alices]["depth"]
    assert resolved[POWER_LEVELS] == demote
    assert resolved[TOPIC] == alices


# --- trivial inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_trivial_inputs(version: str) -> None:
    g = RoomGraph(version)
    head = g.create_room()
    state = g.state(head)
    assert resolve_state(version, [], g.events) == {}
    assert resolve_state(version, [state], {}) == state
    assert resolve_state(version, [state, dict(state), state], {}) == state
