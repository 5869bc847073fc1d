"""Auth chains: the graph queries state resolution v2 and v2.1 make over `auth_events` links.

spec: rooms/fragments/v2-state-res "Auth chain", "Auth difference"; rooms/v12 "Conflicted state
subgraph". The queries sit behind `AuthChainProvider` so that storage can answer them from precomputed
auth chains; `EventMapAuthChains`, the default, walks `auth_events` through the event map. Storage may
subclass it and override only the queries it can answer faster.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from typing import Protocol, runtime_checkable

from homeserver.state.event_source import EventSource


@runtime_checkable
class AuthChainProvider(Protocol):
    """The auth-chain queries of state resolution, over event ids."""

    def auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        """The union of the auth chains of `event_ids`.

        spec: v2-state-res "Auth chain" — every event reachable through `auth_events` links; an event
        is in the result only if it is reachable from one of the others (or from itself via a cycle).
        In rooms v12 the create event named by the room id counts as an auth event of every other
        event (see `EventSource.auth_event_ids`). Not used by the resolver itself; kept for callers.
        """
        ...

    def auth_chain_difference(self, state_sets: Sequence[Collection[str]]) -> set[str]:
        """∪ Cᵢ − ∩ Cᵢ, where Cᵢ is `state_sets[i]` itself together with the auth chains of its events.

        spec: v2-state-res "Auth difference" calls Cᵢ "the union of the auth chains for each event in
        Sᵢ". Synapse (its chain-cover index marks each state event as reachable from its own set) and
        ruma (whose callers pass each set's events with their chains) count Sᵢ's own events as part
        of Cᵢ, so an event that every state set holds is never in the difference, even when only some
        sets' chains cite it. We follow them: every server must compute the same full conflicted set.
        """
        ...

    def conflicted_subgraph(self, conflicted: Collection[str]) -> set[str]:
        """Every event on an `auth_events` path between two events of `conflicted`, endpoints included.

        spec: rooms/v12 "Conflicted state subgraph". The result may hold every event of `conflicted`,
        on a path or not: it only ever joins the full conflicted set, which holds them all anyway.
        """
        ...


class EventMapAuthChains:
    """`AuthChainProvider` that walks `auth_events` through an `EventSource`.

    Each event's `auth_events` is parsed once (memoised in the source); every query is a single walk
    with one shared visited set, so it costs O(events and edges reached), never a set per event.
    """

    __slots__ = ("source",)

    def __init__(self, source: EventSource) -> None:
        self.source = source

    def auth_chain(self, event_ids: Iterable[str]) -> set[str]:
        auth_ids = self.source.auth_event_ids
        seen: set[str] = set()
        stack: list[str] = []
        for event_id in event_ids:
            stack.extend(auth_ids(event_id))
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(auth_ids(current))
        return seen

    def auth_chain_difference(self, state_sets: Sequence[Collection[str]]) -> set[str]:
        count = len(state_sets)
        if count < 2:
            return set()
        sets = [s if isinstance(s, set | frozenset) else set(s) for s in state_sets]
        # Events in every set are in every Cᵢ, and so is everything below them: never in the
        # difference, so the per-set walks stop there.
        in_every = self._closure(set(sets[0]).intersection(*sets[1:]))
        auth_ids = self.source.auth_event_ids
        reached_by: dict[str, int] = {}
        for state_set in sets:
            # Cᵢ starts with Sᵢ itself (see the protocol's docstring: Synapse's and ruma's reading).
            seen = {event_id for event_id in state_set if event_id not in in_every}
            stack = list(seen)
            while stack:
                for auth_id in auth_ids(stack.pop()):
                    if auth_id not in seen and auth_id not in in_every:
                        seen.add(auth_id)
                        stack.append(auth_id)
            for event_id in seen:
                reached_by[event_id] = reached_by.get(event_id, 0) + 1
        return {event_id for event_id, n in reached_by.items() if n < count}

    def _closure(self, event_ids: set[str]) -> set[str]:
        """`event_ids` and their auth chains."""
        auth_ids = self.source.auth_event_ids
        seen = set(event_ids)
        stack = list(seen)
        while stack:
            for auth_id in auth_ids(stack.pop()):
                if auth_id not in seen:
                    seen.add(auth_id)
                    stack.append(auth_id)
        return seen

    def conflicted_subgraph(self, conflicted: Collection[str]) -> set[str]:
        targets = conflicted if isinstance(conflicted, set | frozenset) else set(conflicted)
        auth_ids = self.source.auth_event_ids
        # leads_to[x]: some conflicted event is reachable from x through at least one auth link.
        # Every x visited below is itself reachable from a conflicted event, so x lies on a path
        # between two conflicted events exactly when leads_to[x] holds.
        leads_to: dict[str, bool] = {}
        for root in targets:
            if root in leads_to:
                continue
            leads_to[root] = False
            stack = [(root, iter(auth_ids(root)))]
            while stack:
                node, pending = stack[-1]
                descended = False
                for auth_id in pending:
                    if auth_id in targets:
                        leads_to[node] = True
                    elif auth_id in leads_to:
                        # Finished already (or, in a malformed cyclic graph, still open: counts as no).
                        if leads_to[auth_id]:
                            leads_to[node] = True
                    else:
                        leads_to[auth_id] = False
                        stack.append((auth_id, iter(auth_ids(auth_id))))
                        descended = True
                        break
                if not descended:
                    stack.pop()
                    if stack and leads_to[node]:
                        leads_to[stack[-1][0]] = True
        subgraph = set(targets)
        subgraph.update(event_id for event_id, leads in leads_to.items() if leads)
        return subgraph
