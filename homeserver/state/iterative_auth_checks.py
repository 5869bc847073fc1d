"""Checking candidate state events against a room state being built, as state resolution does.

spec: rooms/fragments/v2-state-res "Iterative auth checks" (and rooms/v1 "State resolution", which
checks events "for a room in state R"); the rules themselves are `homeserver.protocol.auth_rules`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from homeserver.protocol.auth_rules import AuthMemo, auth_types_for_event, check_auth
from homeserver.protocol.errors import ProtocolError
from homeserver.state.event_source import CREATE_KEY, Event, EventSource, StateKey


class AuthChecker:
    """Builds the auth events for a check from a state map and runs the auth rules."""

    __slots__ = ("_create_fallback", "_is_rejected", "_memo", "_source", "room_version")

    def __init__(
        self,
        source: EventSource,
        is_rejected: Callable[[str], bool] | None,
        create_fallback: str | None,
    ) -> None:
        self._source = source
        self.room_version = source.room_version
        self._is_rejected = is_rejected  # None: nothing was rejected
        # The create event the resolved state sets agree on, for events whose room_id names none.
        self._create_fallback = create_fallback
        # The same few power levels and create events back thousands of checks: parse each once.
        self._memo = AuthMemo(source.room_version)

    def is_allowed(self, event_id: str, state: dict[StateKey, str], use_auth_events: bool) -> bool:
        """Whether the event passes the auth rules against `state`.

        With `use_auth_events` (state resolution v2), a key the rules need but `state` lacks is taken
        from the event's own `auth_events`, unless that auth event was rejected (spec: v2-state-res
        "Iterative auth checks" and "Rejected events"). A rejected event in `state` then counts as
        absent too: the spec only speaks of the fallback, but Synapse (`_iterative_auth_checks`) and
        ruma (`iterative_auth_checks`) both skip rejected state entries, and so do we. (v1, without
        `use_auth_events`, reads `state` as it is, as Synapse's v1 resolver does.)
        """
        source = self._source
        is_rejected = self._is_rejected if use_auth_events else None
        event = source.event(event_id)
        auth_events: dict[StateKey, Event] = {}
        own: dict[StateKey, str] | None = None
        create_id: str | None = None
        for key in auth_types_for_event(event, self.room_version):
            found = state.get(key)
            if found is not None and is_rejected is not None and is_rejected(found):
                found = None
            if found is None and use_auth_events:
                if own is None:
                    own = source.auth_events_by_key(event_id)
                found = own.get(key)
                if found is not None and is_rejected is not None and is_rejected(found):
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
            check_auth(event, auth_events, self.room_version, create_event_id=create_id, memo=self._memo)
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

        An event that was itself rejected on receipt is never applied. The spec ("Rejected events")
        says events rejected for the state at the event are "handled as usual" and may pass here;
        Synapse, which runs matrix.org, never admits a previously rejected event into the resolved
        state (`_iterative_auth_checks`, matrix-org/synapse#13797), and a server that did would
        disagree with it about the room whenever both rejected the event. We follow Synapse (ruma
        follows the text).
        """
        source = self._source
        is_rejected = self._is_rejected
        for event_id in event_ids:
            key = source.key_of(event_id)
            if key is None or (is_rejected is not None and is_rejected(event_id)):
                continue
            if self.is_allowed(event_id, state, use_auth_events=True):
                state[key] = event_id
