"""State resolution v2 (rooms v2–v11) and v2.1 (room v12, MSC4297).

spec: rooms/fragments/v2-state-res "Definitions" and "Algorithm"; rooms/v12 "State resolution" for the
two changes of v2.1: the conflicted state subgraph joins the full conflicted set, and the first
iterative auth checks start from an empty state map.

A room only federates if every server resolves the same state, so where the text can be read more
loosely than the network's reference implementation behaves, we do what Synapse (matrix.org) does, and
say so where it happens: a state set's own events are part of its full auth chain
(`AuthChainProvider.auth_chain_difference`); step 1 follows auth events only inside the full conflicted
set (`power_closure`); power events need the empty state key and include the create event
(`is_power_event`); an event rejected on receipt is never admitted, nor read from the state being
built (`AuthChecker`); in rooms v12 the create event is an implied auth event of every event
(`EventSource.auth_event_ids`).
tests/unit/test_state_res_synapse_compat.py has a story for each.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence

from homeserver.protocol.power_levels import room_creators, user_power_level
from homeserver.protocol.room_versions import StateResAlgorithm
from homeserver.state.auth_chain import AuthChainProvider
from homeserver.state.event_source import (
    CREATE_KEY,
    POWER_LEVELS_KEY,
    Event,
    EventSource,
    StateKey,
    origin_server_ts,
)
from homeserver.state.iterative_auth_checks import AuthChecker

# Sort keys: (primary, origin_server_ts, event_id); smaller sorts first.
_SortKey = tuple[float, int, str]


def split_state_sets(
    state_sets: Sequence[Mapping[StateKey, str]],
) -> tuple[dict[StateKey, str], set[str]]:
    """The unconflicted state map and the conflicted state set.

    spec: v2-state-res "Unconflicted state map and conflicted state set" — (K, V) is unconflicted when
    K is in every Sᵢ with the same V; every other value is conflicted.
    """
    first, others = state_sets[0], state_sets[1:]
    unconflicted: dict[StateKey, str] = {}
    conflicted: set[str] = set()
    for key, event_id in first.items():
        for other in others:
            if other.get(key) != event_id:
                conflicted.add(event_id)
                break
        else:
            unconflicted[key] = event_id
    for other in others:
        for key, event_id in other.items():
            if key not in unconflicted:
                conflicted.add(event_id)
    return unconflicted, conflicted


# spec: v2-state-res "Power events" names power levels and join rules; Synapse and ruma also count the
# create event, and all three only with an empty state_key (see `is_power_event`).
_POWER_EVENT_TYPES = frozenset({"m.room.power_levels", "m.room.join_rules", "m.room.create"})


def is_power_event(event: Event) -> bool:
    """spec: v2-state-res "Power events" — power levels, join rules, and kicks and bans of others.

    We follow the network's reference implementations (Synapse `_is_power_event`, ruma
    `is_power_event`) where they are stricter or wider than the text: the power levels and join rules
    events count only with the empty state_key (the one the auth rules read), and the create event
    counts too (only ever conflicted when state sets disagree about it).
    """
    state_key = event.get("state_key")
    if not isinstance(state_key, str):
        return False
    event_type = event.get("type")
    if event_type in _POWER_EVENT_TYPES:
        return state_key == ""
    if event_type != "m.room.member":
        return False
    content = event.get("content")
    membership = content.get("membership") if type(content) is dict or isinstance(content, Mapping) else None
    return membership in ("leave", "ban") and event.get("sender") != state_key


class _Resolver:
    """One run of the algorithm over one `EventSource`."""

    __slots__ = ("_auth_refs", "_checker", "_create_fallback", "_creators", "_levels", "_source", "_v2_1")

    def __init__(self, source: EventSource, checker: AuthChecker, create_fallback: str | None) -> None:
        self._source = source
        self._checker = checker
        self._create_fallback = create_fallback
        self._v2_1 = source.room_version.state_res is StateResAlgorithm.V2_1
        self._auth_refs: dict[str, tuple[str | None, str | None]] = {}
        self._creators: dict[str | None, frozenset[str]] = {}
        self._levels: dict[tuple[str | None, str | None, str], float] = {}

    def auth_refs(self, event_id: str) -> tuple[str | None, str | None]:
        """The ids of the `m.room.power_levels` and `m.room.create` events among the event's auth
        events (the first of each; rooms v12: the create event its room id names), memoised."""
        refs = self._auth_refs.get(event_id)
        if refs is None:
            source = self._source
            power_levels: str | None = None
            create: str | None = None
            for auth_id in source.auth_event_ids(event_id):
                auth = source.event(auth_id)
                if auth.get("state_key") == "":
                    auth_type = auth.get("type")
                    if auth_type == "m.room.power_levels" and power_levels is None:
                        power_levels = auth_id
                    elif auth_type == "m.room.create" and create is None:
                        create = auth_id
            refs = self._auth_refs[event_id] = (power_levels, create)
        return refs

    def power_levels_auth_event(self, event_id: str) -> str | None:
        """The `m.room.power_levels` event in the event's `auth_events`, if any."""
        return self.auth_refs(event_id)[0]

    def sender_power_level(self, event_id: str) -> float:
        """The sender's power level "when looking at their respective auth_events".

        spec: v2-state-res "Reverse topological power ordering" rule 1; rooms/v12 — creators have
        infinite power, so they sort before everyone. Memoised per (power levels event, create event,
        sender): many events share all three, and the room's creators are worked out once.
        """
        source = self._source
        sender = source.event(event_id).get("sender")
        if not isinstance(sender, str):
            return 0
        power_levels_id, create_id = self.auth_refs(event_id)
        if create_id is None and source.room_version.room_id_from_create_event:
            create_id = self._create_fallback  # spec: rooms/v12 — the create event the states agree on
        key = (power_levels_id, create_id, sender)
        level = self._levels.get(key)
        if level is None:
            creators = self._creators.get(create_id)
            if creators is None:
                create = source.get(create_id) if create_id is not None else None
                creators = self._creators[create_id] = room_creators(create, source.room_version)
            power_levels = source.event(power_levels_id) if power_levels_id is not None else None
            level = self._levels[key] = user_power_level(sender, power_levels, creators, source.room_version)
        return level

    def power_closure(self, power_events: list[str], full_conflicted: set[str]) -> set[str]:
        """The power events and "the events in the auth chain of P which also belong to the full
        conflicted set" (spec: v2-state-res "Algorithm" step 1).

        The text can be read as auth_chain(P) ∩ full conflicted set. Synapse
        (`_add_event_and_auth_chain_to_graph`) and ruma (`add_event_and_auth_chain_to_graph`) follow
        `auth_events` links only while they stay inside the full conflicted set, so an event reached
        only through an event outside it is left to the mainline step. We do what they do.
        """
        auth_ids = self._source.auth_event_ids
        closure = set(power_events)
        stack = list(power_events)
        while stack:
            for auth_id in auth_ids(stack.pop()):
                if auth_id in full_conflicted and auth_id not in closure:
                    closure.add(auth_id)
                    stack.append(auth_id)
        return closure

    def reverse_topological_power_order(self, event_ids: set[str]) -> list[str]:
        """Kahn's algorithm over the auth DAG of `event_ids`, smallest candidate first.

        spec: v2-state-res "Reverse topological power ordering" — x < y if x's sender has greater
        power, then smaller origin_server_ts, then smaller event_id; earliest event first.
        """
        source = self._source
        waiting_on: dict[str, int] = {}
        dependants: dict[str, list[str]] = {}
        ready: list[tuple[_SortKey, str]] = []
        for event_id in event_ids:
            count = 0
            for auth_id in source.auth_event_ids(event_id):
                if auth_id in event_ids:
                    count += 1
                    dependants.setdefault(auth_id, []).append(event_id)
            waiting_on[event_id] = count
            if count == 0:
                ready.append((self._power_key(event_id), event_id))
        heapq.heapify(ready)
        ordered: list[str] = []
        while ready:
            _, event_id = heapq.heappop(ready)
            ordered.append(event_id)
            for dependant in dependants.get(event_id, ()):
                waiting_on[dependant] -= 1
                if waiting_on[dependant] == 0:
                    heapq.heappush(ready, (self._power_key(dependant), dependant))
        # Events on an auth cycle (only possible with forged v1-v2 ids) never become ready: ignored.
        return ordered

    def _power_key(self, event_id: str) -> _SortKey:
        return (-self.sender_power_level(event_id), origin_server_ts(self._source.event(event_id)), event_id)

    def mainline_order(self, event_ids: set[str], power_levels_id: str | None) -> list[str]:
        """spec: v2-state-res "Mainline ordering" based on the power levels event `power_levels_id`."""
        mainline: dict[str, int] = {}
        current = power_levels_id
        while current is not None and current not in mainline:
            mainline[current] = len(mainline)
            current = self.power_levels_auth_event(current)
        # position_from[p]: the mainline position reached by walking power levels events from p on.
        position_from: dict[str, float] = dict(mainline)

        def position(event_id: str) -> float:
            walked: list[str] = []
            current = self.power_levels_auth_event(event_id)
            found: float = math.inf
            while current is not None:
                known = position_from.get(current)
                if known is not None:
                    found = known
                    break
                walked.append(current)
                position_from[current] = math.inf  # guards against cycles in forged graphs
                current = self.power_levels_auth_event(current)
            for power_levels in walked:
                position_from[power_levels] = found
            return found

        source = self._source
        keyed = [
            ((-position(event_id), origin_server_ts(source.event(event_id)), event_id), event_id)
            for event_id in event_ids
        ]
        keyed.sort()
        return [event_id for _, event_id in keyed]

    def resolve(
        self,
        state_sets: Sequence[Mapping[StateKey, str]],
        unconflicted: dict[StateKey, str],
        conflicted: set[str],
        auth_chains: AuthChainProvider,
    ) -> dict[StateKey, str]:
        """spec: v2-state-res "Algorithm" steps 1–5 (rooms/v12 for the v2.1 changes)."""
        source = self._source
        full_conflicted = conflicted | auth_chains.auth_chain_difference([set(s.values()) for s in state_sets])
        if self._v2_1:
            # spec: rooms/v12 "Full conflicted set" — also the conflicted state subgraph.
            full_conflicted |= auth_chains.conflicted_subgraph(conflicted)

        # Step 1: power events of the full conflicted set, with their auth chains inside that set.
        power = [event_id for event_id in full_conflicted if is_power_event(source.event(event_id))]
        power_closure = self.power_closure(power, full_conflicted)
        ordered_power = self.reverse_topological_power_order(power_closure)

        # Step 2: iterative auth checks from the unconflicted map (v2.1: from an empty map).
        state: dict[StateKey, str] = {} if self._v2_1 else dict(unconflicted)
        self._checker.apply(ordered_power, state)

        # Steps 3–4: the rest, in mainline order of the partially resolved power levels.
        remaining = full_conflicted - power_closure
        self._checker.apply(self.mainline_order(remaining, state.get(POWER_LEVELS_KEY)), state)

        # Step 5: the unconflicted state map has the last word.
        state.update(unconflicted)
        return state


def resolve_v2(
    source: EventSource,
    state_sets: Sequence[Mapping[StateKey, str]],
    auth_chains: AuthChainProvider,
    is_rejected: Callable[[str], bool] | None,
) -> dict[StateKey, str]:
    """Resolve `state_sets` with state resolution v2, or v2.1 when the room version says so."""
    unconflicted, conflicted = split_state_sets(state_sets)
    if not conflicted:
        return unconflicted
    create_fallback = unconflicted.get(CREATE_KEY)
    checker = AuthChecker(source, is_rejected, create_fallback)
    return _Resolver(source, checker, create_fallback).resolve(state_sets, unconflicted, conflicted, auth_chains)
