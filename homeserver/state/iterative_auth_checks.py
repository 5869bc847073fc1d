"""Checking candidate state events against a room state being built, as state resolution does.

spec: rooms/fragments/v2-state-res "Iterative auth checks" (and rooms/v1 "State resolution", which
checks events "for a room in state R"); the rules themselves are `homeserver.protocol.auth_rules`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from homeserver.protocol.auth_rules import auth_types_for_event, check_auth
from homeserver.protocol.errors import ProtocolError
from homeserver.state.event_source import CREATE_KEY, Event, EventSource, StateKey


class AuthChecker:
    """Builds the auth events for a check from a state map and runs the auth rules."""

    __slots__ = ("_create_fallback", "_is_rejected", "_source", "room_version")

    def __init__(
        self,
        source: EventSource,
        is_rejected: Callable[[str], bool],
        create_fallback: str | None,
    ) -> None:
        self._source = source
        self.room_version = source.room_version
        self._is_rejected = is_rejected
        # The create event the resolved state sets agree on, for events whose room_id names none.
        self._create_fallback = create_fallback

    def is_allowed(self, event_id: str, state: dict[StateKey, str], use_auth_events: bool) -> bool:
        """Whether the event passes the auth rules against `state`.

        With `use_auth_events`, a key the rules need but `state` lacks is taken from the event's own
        `auth_events`, unless that auth event was rejected (spec: v2-state-res "Iterative auth checks"
        and "Rejected events").
        """
        source = self._source
        event = source.event(event_id)
        auth_events: dict[StateKey, Event] = {}
        own: dict[StateKey, str] | None = None
        create_id: str | None = None
        for key in auth_types_for_event(event, self.room_version):
            found = state.get(key)
            if found is None and use_auth_events:
                if own is None:
                    own = source.auth_events_by_key(event_id)
                found = own.get(key)
                if found is not None and self._is_rejected(found):
                    found = None
            if found is not None:
                auth_events[key] = source.event(found)
                if key == CREATE_KEY:
                    create_id = found
        if create_id is None and event.get("type") != "m.room.create":
            # spec: rooms/v12 — the create event is never an auth event; the room_id names it.
            create_id = self._room_create_event_id(event, state)
            if create_id is not None:
                auth_events[CREATE_KEY] = source.event(create_id)
        try:
            # Event ids are the map's keys: hand the create event's id over rather than have the rules
            # recompute its reference hash on every check (rooms/v12 rule 2, the creator's first join).
            check_auth(event, auth_events, self.room_version, create_event_id=create_id)
        except ProtocolError:
            return False
        return True

    def _room_create_event_id(self, event: Event, state: dict[StateKey, str]) -> str | None:
        """spec: rooms/v12 auth rule 2 — the create event named by the room id (else the one the state
        sets agree on); `None` before v12, where the create event is an ordinary auth event."""
        if not self.room_version.room_id_from_create_event:
            return None
        named = self._source.create_event_id_from_room_id(event)
        if named is not None:
            return named
        fallback = state.get(CREATE_KEY, self._create_fallback)
        return fallback if fallback is not None and self._source.get(fallback) is not None else None

    def apply(self, event_ids: Iterable[str], state: dict[StateKey, str]) -> None:
        """The iterative auth checks: apply each allowed state event to `state`, in order, in place.

        spec: v2-state-res "Iterative auth checks" — a rejected check means the event is ignored.
        """
        source = self._source
        for event_id in event_ids:
            key = source.key_of(event_id)
            if key is not None and self.is_allowed(event_id, state, use_auth_events=True):
                state[key] = event_id
