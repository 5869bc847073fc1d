"""Read-only access to the events that a state resolution needs.

spec: server-server-api "Room State Resolution" — a room state maps `(event_type, state_key)` to an
event id; the algorithms read events' `type`, `state_key`, `sender`, `content`, `origin_server_ts`,
`depth` and `auth_events`. `EventSource` fetches each event from the caller's mapping at most once and
memoises what is parsed from it, so a lazy, storage-backed mapping is touched only for events that
the algorithm actually visits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.protocol.room_versions import EventFormat, RoomVersion

StateKey = tuple[str, str]
StateMap = Mapping[StateKey, str]
Event = Mapping[str, Any]
EventMap = Mapping[str, Mapping[str, Any]]

CREATE_KEY: StateKey = ("m.room.create", "")
POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")
JOIN_RULES_KEY: StateKey = ("m.room.join_rules", "")


class StateResolutionError(Exception):
    """State resolution cannot run on the input it was given."""


class MissingEventError(StateResolutionError, KeyError):
    """An event the algorithm must read is not in the event map.

    The caller promised an `event_map` holding every conflicted event and its auth chain; it should
    fetch `event_id` (e.g. with /event_auth) and resolve again.
    """

    def __init__(self, event_id: str) -> None:
        super().__init__(f"event {event_id} is needed for state resolution but was not provided")
        self.event_id = event_id


def reference_ids(references: object, event_format: EventFormat) -> tuple[str, ...]:
    """The event ids in a `prev_events` / `auth_events` list, in order, without duplicates.

    spec: rooms/v1 event format — references are `[event_id, {hashes}]` pairs; rooms/v3 and later —
    plain event ids. Plain ids are also taken in v1-format rooms, since some tools write them so.
    """
    if not isinstance(references, list):
        return ()
    found: dict[str, None] = {}
    pairs = event_format is EventFormat.V1
    for ref in references:
        if isinstance(ref, str):
            found[ref] = None
        elif pairs and isinstance(ref, list | tuple) and ref and isinstance(ref[0], str):
            found[ref[0]] = None
    return tuple(found)


class EventSource:
    """Memoising view over the caller's event map for one room version.

    Event ids are the map's keys, taken as given and never recomputed.
    """

    __slots__ = ("_auth_by_key", "_auth_ids", "_event_map", "_events", "_format", "_keys", "room_version")

    def __init__(self, event_map: EventMap, room_version: RoomVersion) -> None:
        self._event_map = event_map
        self.room_version = room_version
        self._format = room_version.event_format
        # A plain dict is its own memo; any other mapping (perhaps backed by storage) is read once a key.
        self._events: dict[str, Event] = event_map if type(event_map) is dict else {}
        self._auth_ids: dict[str, tuple[str, ...]] = {}
        self._auth_by_key: dict[str, dict[StateKey, str]] = {}
        self._keys: dict[str, StateKey | None] = {}

    def event(self, event_id: str) -> Event:
        """The event with this id; `MissingEventError` if the map does not have it."""
        found = self._events.get(event_id)
        if found is None:
            try:
                found = self._event_map[event_id]
            except KeyError:
                raise MissingEventError(event_id) from None
            self._events[event_id] = found
        return found

    def get(self, event_id: str) -> Event | None:
        """The event with this id, or `None` if the map does not have it."""
        try:
            return self.event(event_id)
        except MissingEventError:
            return None

    def auth_event_ids(self, event_id: str) -> tuple[str, ...]:
        """The ids the event cites as auth events (parsed once): its `auth_events`, and in rooms v12
        also the create event its `room_id` names, when the map has it.

        spec: rooms/v12 — the create event MUST NOT be listed in `auth_events`: "The `room_id` (being
        the `m.room.create` event's ID) implies this instead." Synapse takes the implication
        literally: its `auth_event_ids()` appends the create event, so its auth chains, auth
        difference, conflicted subgraph and power-event graph all contain that edge. We walk the same
        graph so that the answers agree even when state sets disagree about the create event.
        """
        ids = self._auth_ids.get(event_id)
        if ids is None:
            event = self.event(event_id)
            ids = reference_ids(event.get("auth_events"), self._format)
            if self.room_version.room_id_from_create_event:
                create_id = self.create_event_id_from_room_id(event)
                if create_id is not None and create_id != event_id and create_id not in ids:
                    ids = (*ids, create_id)
            self._auth_ids[event_id] = ids
        return ids

    def key_of(self, event_id: str) -> StateKey | None:
        """`(type, state_key)` of the event, `None` for a message event (memoised)."""
        try:
            return self._keys[event_id]
        except KeyError:
            key = self._keys[event_id] = state_key_of(self.event(event_id))
            return key

    def create_event_id_from_room_id(self, event: Event) -> str | None:
        """The id of the create event that the event's `room_id` names, if the map has it.

        spec: rooms/v12 — the room id is the create event's id with `!` for `$`; the create event is
        never an auth event. Earlier room versions have no such link (`None`).
        """
        if not self.room_version.room_id_from_create_event:
            return None
        room_id = event.get("room_id")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            return None
        create_id = "$" + room_id[1:]
        return create_id if self.get(create_id) is not None else None

    def auth_events_by_key(self, event_id: str) -> dict[StateKey, str]:
        """The event's auth events keyed by `(type, state_key)` (the first one wins on duplicates)."""
        by_key = self._auth_by_key.get(event_id)
        if by_key is None:
            by_key = {}
            for auth_id in self.auth_event_ids(event_id):
                key = self.key_of(auth_id)
                if key is not None and key not in by_key:
                    by_key[key] = auth_id
            self._auth_by_key[event_id] = by_key
        return by_key


def state_key_of(event: Event) -> StateKey | None:
    """`(type, state_key)` of a state event, `None` for a message event."""
    state_key = event.get("state_key")
    event_type = event.get("type")
    if isinstance(state_key, str) and isinstance(event_type, str):
        return (event_type, state_key)
    return None


def origin_server_ts(event: Event) -> int:
    """`origin_server_ts` as an int (0 when absent or malformed, so sorting never fails)."""
    ts = event.get("origin_server_ts")
    return ts if isinstance(ts, int) and not isinstance(ts, bool) else 0
