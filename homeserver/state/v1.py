"""State resolution v1 (room version 1).

spec: rooms/v1 "State resolution". Known to reset state in some forks (the spec's own warning); kept
for room version 1 only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

from homeserver.state.event_source import CREATE_KEY, Event, EventSource, StateKey
from homeserver.state.iterative_auth_checks import AuthChecker

# spec: rooms/v1 — conflicts of these types are resolved first, in this order, because they affect
# the authorisation rules; all other conflicts come after.
_AUTH_TYPES_IN_ORDER = ("m.room.power_levels", "m.room.join_rules", "m.room.member")


def _depth(event: Event) -> int:
    depth = event.get("depth")
    return depth if isinstance(depth, int) and not isinstance(depth, bool) else 0


def _sha1(event_id: str) -> bytes:
    return hashlib.sha1(event_id.encode("utf-8")).digest()


def split_state_sets_v1(
    state_sets: Sequence[Mapping[StateKey, str]],
) -> tuple[dict[StateKey, str], dict[StateKey, list[str]]]:
    """The union of the states without conflicting events, and the conflicting events by key.

    spec: rooms/v1 — "A conflict occurs between states where those states have different event_ids
    for the same (event_type, state_key)". A key that only some states have is not a conflict: the
    union takes it as it is.
    """
    values: dict[StateKey, dict[str, None]] = {}
    for state in state_sets:
        for key, event_id in state.items():
            found = values.get(key)
            if found is None:
                values[key] = {event_id: None}
            else:
                found[event_id] = None
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, list[str]] = {}
    for key, event_ids in values.items():
        if len(event_ids) == 1:
            unconflicted[key] = next(iter(event_ids))
        else:
            conflicted[key] = list(event_ids)
    return unconflicted, conflicted


def resolve_v1(
    source: EventSource,
    state_sets: Sequence[Mapping[StateKey, str]],
    is_rejected: Callable[[str], bool] | None,
) -> dict[StateKey, str]:
    """spec: rooms/v1 "State resolution" — R starts as the unconflicted union and grows pass by pass."""
    resolved, conflicted = split_state_sets_v1(state_sets)
    if not conflicted:
        return resolved
    checker = AuthChecker(source, is_rejected, resolved.get(CREATE_KEY))

    # Power levels, then join rules, then members: sort by ascending depth then descending
    # sha1(event_id); the first event is taken, each later one only while it is allowed in R.
    # Members conflict per user, so each (type, state_key) is its own list (keys in sorted order).
    for event_type in _AUTH_TYPES_IN_ORDER:
        for key in sorted(k for k in conflicted if k[0] == event_type):
            candidates = sorted(conflicted[key], key=_sha1, reverse=True)
            candidates.sort(key=lambda event_id: _depth(source.event(event_id)))
            resolved[key] = candidates[0]
            for event_id in candidates[1:]:
                if not checker.is_allowed(event_id, resolved, use_auth_events=False):
                    break
                resolved[key] = event_id

    # Every other conflict: the highest depth, then lowest sha1(event_id), that passes auth in R.
    for key in sorted(k for k in conflicted if k[0] not in _AUTH_TYPES_IN_ORDER):
        candidates = sorted(conflicted[key], key=_sha1)
        candidates.sort(key=lambda event_id: _depth(source.event(event_id)), reverse=True)
        for event_id in candidates:
            if checker.is_allowed(event_id, resolved, use_auth_events=False):
                resolved[key] = event_id
                break
    return resolved
