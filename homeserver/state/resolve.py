"""The entry point: resolve a room's state sets with its room version's algorithm.

spec: server-server-api "Room State Resolution" — the algorithm depends on the room version:
rooms/v1 (v1), rooms/fragments/v2-state-res (rooms v2–v11), rooms/v12 (v2.1).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from homeserver.protocol.room_versions import RoomVersion, StateResAlgorithm, get_room_version
from homeserver.state.auth_chain import AuthChainProvider, EventMapAuthChains
from homeserver.state.event_source import EventSource
from homeserver.state.v1 import resolve_v1
from homeserver.state.v2 import resolve_v2

RejectedEvents = Callable[[str], bool] | Collection[str]


def resolve_state(
    room_version: str | RoomVersion,
    state_sets: Sequence[Mapping[tuple[str, str], str]],
    event_map: Mapping[str, Mapping[str, Any]],
    *,
    auth_chain_provider: AuthChainProvider | None = None,
    rejected: RejectedEvents | None = None,
) -> dict[tuple[str, str], str]:
    """The resolved state of `state_sets`, each a map from `(type, state_key)` to an event id.

    `event_map` must hold every conflicted event and every event in their auth chains (v2: also the
    auth chains of all state events, unless `auth_chain_provider` answers those queries); it is only
    read by key, so it may be lazy. A missing event raises `MissingEventError`.

    `auth_chain_provider` answers the auth-chain queries (default: walk `auth_events` in
    `event_map`). `rejected` names events rejected on receipt; in v2 and v2.1 they are not used as
    fallback auth events during the iterative auth checks (spec: v2-state-res "Rejected events"); v1
    checks against the state being built only, so it has no use for them.
    """
    rv = get_room_version(room_version)
    if not state_sets:
        return {}
    first = state_sets[0]
    if all(other is first or other == first for other in state_sets[1:]):
        return dict(first)
    is_rejected: Callable[[str], bool] | None
    if rejected is None:
        is_rejected = None
    elif callable(rejected):
        is_rejected = rejected
    else:
        is_rejected = rejected.__contains__
    source = EventSource(event_map, rv)
    if rv.state_res is StateResAlgorithm.V1:
        return resolve_v1(source, state_sets, is_rejected)
    provider = auth_chain_provider if auth_chain_provider is not None else EventMapAuthChains(source)
    return resolve_v2(source, state_sets, provider, is_rejected)
