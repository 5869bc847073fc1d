"""Pure state resolution: v1 (room v1), v2 (rooms v2–v11) and v2.1 (room v12).

No I/O and no globals: callers pass the state sets and a (possibly lazy) map of the events needed.
"""

from __future__ import annotations

from homeserver.state.auth_chain import AuthChainProvider, EventMapAuthChains
from homeserver.state.event_source import EventSource, MissingEventError, StateResolutionError
from homeserver.state.resolve import resolve_state

__all__ = [
    "AuthChainProvider",
    "EventMapAuthChains",
    "EventSource",
    "MissingEventError",
    "StateResolutionError",
    "resolve_state",
]
