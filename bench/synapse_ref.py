"""Synapse as a library: its state resolver and auth checks, run in-process on an in-memory store.

Only Synapse's public-ish entry points are called (`synapse.state.v2.resolve_events_with_store`,
`synapse.event_auth`); the store they need is implemented here: `get_events` from a dict, and the
auth chain difference (plus the v2.1 conflicted subgraph) by graph walks that give what Synapse's
database answers (its chain-cover index counts a state set's own events as part of its auth chain).

Synapse's resolver is async only so that it can yield to the Twisted reactor now and then; with a
clock whose `sleep` returns at once and a store that never waits, the coroutine finishes on its
first step, so `run_sync` drives it without a reactor.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from synapse import event_auth
from synapse.api.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, StateResolutionVersions
from synapse.events import EventBase, make_event_from_dict
from synapse.state.v2 import resolve_events_with_store
from synapse.storage.databases.main.event_federation import StateDifference

T = TypeVar("T")
StateKey = tuple[str, str]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never really suspends; fail loudly if it does."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("Synapse code suspended: the in-memory store and clock should never block")


def synapse_supports(room_version: str) -> bool:
    return room_version in KNOWN_ROOM_VERSIONS


class InstantClock:
    """Stands in for `synapse.util.Clock`: state res only ever sleeps for 0 s to yield."""

    async def sleep(self, duration: Any) -> None:
        return None


def auth_closure(starts: Iterable[str], auth_of: Mapping[str, Sequence[str]]) -> set[str]:
    """`starts` and every event reachable from them through auth_events."""
    seen = set(starts)
    stack = list(seen)
    while stack:
        for a in auth_of[stack.pop()]:
            if a not in seen:
                seen.add(a)
                stack.append(a)
    return seen


def auth_chain_difference(state_sets: Sequence[Iterable[str]], auth_of: Mapping[str, Sequence[str]]) -> set[str]:
    """Union minus intersection of the state sets' full auth chains (each set's events included)."""
    chains = [auth_closure(s, auth_of) for s in state_sets]
    return set[str]().union(*chains) - chains[0].intersection(*chains[1:])


def conflicted_subgraph(conflicted: Iterable[str], auth_of: Mapping[str, Sequence[str]]) -> set[str]:
    """spec: rooms/v12 "Conflicted state subgraph": every event on an auth path between two
    conflicted events, endpoints included."""
    conflicted = set(conflicted)
    below = auth_closure(conflicted, auth_of)  # reachable from some conflicted event
    cited_by: dict[str, list[str]] = {}
    for e in below:
        for a in auth_of[e]:
            cited_by.setdefault(a, []).append(e)
    # Within `below`, walk up from the conflicted events: what reaches one of them lies on a path.
    above = set(conflicted)
    stack = list(conflicted)
    while stack:
        for e in cited_by.get(stack.pop(), ()):
            if e not in above:
                above.add(e)
                stack.append(e)
    return above


class MemoryStore:
    """The `StateResolutionStore` (and `_EventSourceStore`) protocol over a dict of events.

    With `cache_differences` the auth chain difference of a given input is computed once and then
    answered from memory, so timed runs measure Synapse's algorithm, not this adapter (Synapse's
    own database answers it with its chain-cover index). `difference_seconds` adds up the time
    spent computing them.
    """

    def __init__(self, events: Mapping[str, EventBase], cache_differences: bool = True) -> None:
        self.events = events
        self.auth_of: dict[str, tuple[str, ...]] = {}
        self.cache_differences = cache_differences
        self._differences: dict[Any, StateDifference] = {}
        self.difference_seconds = 0.0

    def note(self, event: EventBase) -> None:
        self.auth_of[event.event_id] = tuple(event.auth_event_ids())

    async def get_events(self, event_ids: Iterable[str], *args: Any, **kwargs: Any) -> dict[str, EventBase]:
        events = self.events
        return {e: events[e] for e in event_ids if e in events}

    async def get_auth_chain_difference(
        self,
        room_id: str,
        state_sets: list[set[str]],
        conflicted_state: set[str] | None,
        additional_backwards_reachable_conflicted_events: set[str] | None,
    ) -> StateDifference:
        if additional_backwards_reachable_conflicted_events:
            raise NotImplementedError("all events are persisted in this store")
        key = (
            tuple(frozenset(s) for s in state_sets),
            None if conflicted_state is None else frozenset(conflicted_state),
        )
        if self.cache_differences and key in self._differences:
            cached = self._differences[key]
            return StateDifference(
                auth_difference=set(cached.auth_difference),
                conflicted_subgraph=None if cached.conflicted_subgraph is None else set(cached.conflicted_subgraph),
            )
        t0 = time.perf_counter()
        diff = StateDifference(
            auth_difference=auth_chain_difference(state_sets, self.auth_of),
            conflicted_subgraph=None
            if conflicted_state is None
            else conflicted_subgraph(conflicted_state, self.auth_of),
        )
        self.difference_seconds += time.perf_counter() - t0
        if self.cache_differences:
            self._differences[key] = StateDifference(
                auth_difference=set(diff.auth_difference),
                conflicted_subgraph=None if diff.conflicted_subgraph is None else set(diff.conflicted_subgraph),
            )
        return diff


class SynapseRoom:
    """One room's events as Synapse events, with Synapse's resolver and auth checks over them."""

    def __init__(self, room_version: str, check_auth: bool = True, cache_differences: bool = True) -> None:
        self.room_version: RoomVersion = KNOWN_ROOM_VERSIONS[room_version]
        self.events: dict[str, EventBase] = {}
        self.store = MemoryStore(self.events, cache_differences)
        self.clock = InstantClock()
        self.check_auth = check_auth
        self.room_id = ""

    @property
    def is_v21(self) -> bool:
        return bool(self.room_version.state_res == StateResolutionVersions.V2_1)

    def add(self, event_id: str, pdu: Mapping[str, Any], rejected_reason: str | None = None) -> EventBase:
        """Turn a PDU into a Synapse event; check its id and (optionally) that it passes auth
        against its auth events, which the generator took from the state before it."""
        ev = make_event_from_dict(dict(pdu), self.room_version, rejected_reason=rejected_reason)
        if ev.event_id != event_id:
            raise AssertionError(f"event id mismatch: ours {event_id}, Synapse {ev.event_id}")
        if not self.room_id:
            self.room_id = ev.room_id
        if self.check_auth:
            run_sync(event_auth.check_state_independent_auth_rules(self.store, ev, batched_auth_events=self.events))
            event_auth.check_state_dependent_auth_rules(ev, [self.events[a] for a in ev.auth_event_ids()])
        self.events[event_id] = ev
        self.store.note(ev)
        return ev

    def resolve(self, state_sets: Sequence[Mapping[StateKey, str]]) -> dict[StateKey, str]:
        result = run_sync(
            resolve_events_with_store(
                self.clock,
                self.room_id,
                self.room_version,
                [dict(s) for s in state_sets],
                None,  # no unpersisted events: everything comes from the store, as in a live server
                self.store,
            )
        )
        return dict(result)


def resolve_foreign(
    room_version: str,
    events: Mapping[str, Mapping[str, Any]],
    state_sets: Sequence[Mapping[StateKey, str]],
    rejected: Iterable[str] = (),
) -> dict[StateKey, str]:
    """Synapse's resolution of state sets over events whose ids are labels, not reference hashes.

    Tests build stories with readable ids (`$003-join-bob`); Synapse derives every id from the
    event's reference hash. So the events are rewritten in auth/prev order with real ids (and content
    hashes), resolved by Synapse, and the answer is mapped back to the labels. Rooms v3+ only (v1–v2
    carry their ids in the event and need no rewriting). `rejected` events get Synapse's
    `rejected_reason`, as if this server had rejected them on receipt.
    """
    from homeserver.protocol import unpadded_base64
    from homeserver.protocol.event_ids import event_id as compute_event_id
    from homeserver.protocol.hashes import content_hash
    from homeserver.protocol.room_versions import get_room_version

    rv = get_room_version(room_version)
    order: list[str] = []
    placed: set[str] = set()

    def place(eid: str) -> None:  # depth-first: references before the events citing them
        stack = [(eid, False)]
        while stack:
            current, done = stack.pop()
            if current in placed:
                continue
            if done:
                placed.add(current)
                order.append(current)
                continue
            stack.append((current, True))
            ev = events[current]
            for ref in [*ev.get("auth_events", ()), *ev.get("prev_events", ())]:
                if ref in events and ref not in placed:
                    stack.append((ref, False))

    for eid in events:
        place(eid)
    new_id: dict[str, str] = {}
    new_room_id = ""
    room = SynapseRoom(room_version, check_auth=False)
    rejected_set = set(rejected)
    for old in order:
        pdu = {k: v for k, v in events[old].items() if k not in ("event_id", "hashes", "signatures", "unsigned")}
        pdu["auth_events"] = [new_id[a] for a in pdu.get("auth_events", ()) if a in new_id]
        pdu["prev_events"] = [new_id[p] for p in pdu.get("prev_events", ()) if p in new_id]
        if "room_id" in pdu and new_room_id:
            pdu["room_id"] = new_room_id
        pdu["hashes"] = {"sha256": unpadded_base64.encode(content_hash(pdu, rv))}
        eid = compute_event_id(pdu, rv)
        new_id[old] = eid
        if pdu["type"] == "m.room.create" and rv.room_id_from_create_event:
            new_room_id = "!" + eid[1:]
        room.add(eid, pdu, rejected_reason="auth_error" if old in rejected_set else None)
    back = {v: k for k, v in new_id.items()}
    resolved = room.resolve([{k: new_id[v] for k, v in s.items()} for s in state_sets])
    return {k: back[v] for k, v in resolved.items()}
