"""EventFilter and RoomEventFilter (spec: client-server-api "Filtering", POST /user/{userId}/filter):
which events /sync, /messages, /context and /search return.

The spec's rules, as applied here:
- `types` / `not_types`: event types, where `*` matches any sequence of characters (the filter glob
  dialect, `homeserver.protocol.glob.FILTER`). `senders` / `not_senders`, `rooms` / `not_rooms`:
  exact ids. An absent list includes everything; an empty one includes nothing. A `not_` list wins
  over its inclusive twin ("A matching type will be excluded even if it is listed in the `types`
  filter").
- `contains_url`: true keeps only events with a `url` in their content, false drops them.
- `limit` "must be an integer greater than 0"; the endpoint applies its default and maximum.
- RoomEventFilter's `lazy_load_members`, `include_redundant_members` and
  `unread_thread_notifications` are options read by the endpoints, not event tests.

A definition is validated once at the door (pydantic, `homeserver.validation`: a wrong type is
M_BAD_JSON) and compiled once into the matchers below; a JSON `null` counts as an absent key.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import orjson
from pydantic import BaseModel, Field

from homeserver.errors import MatrixError
from homeserver.protocol.glob import FILTER, GlobSet
from homeserver.validation import STRICT, validate


class EventFilterModel(BaseModel):
    """spec: EventFilter (unknown keys are allowed and ignored)."""

    model_config = STRICT
    limit: int | None = Field(default=None, gt=0)
    types: list[str] | None = None
    not_types: list[str] | None = None
    senders: list[str] | None = None
    not_senders: list[str] | None = None


class RoomEventFilterModel(EventFilterModel):
    """spec: RoomEventFilter (an EventFilter and these)."""

    rooms: list[str] | None = None
    not_rooms: list[str] | None = None
    contains_url: bool | None = None
    lazy_load_members: bool | None = None
    include_redundant_members: bool | None = None
    unread_thread_notifications: bool | None = None


def _globs(patterns: list[str] | None) -> GlobSet | None:
    return GlobSet(patterns, FILTER) if patterns is not None else None


class EventFilter:
    """An EventFilter compiled for matching (no model: every event passes)."""

    # `contains_url` belongs to RoomEventFilter; here it is always None, so that one `allows` serves
    # both (it runs for every event a filtered /sync or /messages looks at)
    __slots__ = ("contains_url", "is_empty", "limit", "not_senders", "not_types", "senders", "types")

    def __init__(self, model: EventFilterModel | None = None) -> None:
        if model is None:
            model = EventFilterModel()
        self.limit = model.limit
        self.types = _globs(model.types)
        self.not_types = _globs(model.not_types or None)
        self.senders = frozenset(model.senders) if model.senders is not None else None
        self.not_senders = frozenset(model.not_senders or ())
        self.contains_url: bool | None = None
        # nothing to test: `allows` passes every event (callers skip loading events for it)
        self.is_empty = self.types is None and self.not_types is None and self.senders is None and not self.not_senders

    def allows_type(self, event_type: str) -> bool:
        not_types = self.not_types
        if not_types is not None and not_types.matches(event_type):
            return False
        types = self.types
        return types is None or types.matches(event_type)

    def allows(self, event: Mapping[str, Any]) -> bool:
        """Does the event (client or federation format) pass? Rooms are `RoomEventFilter.allows_room`."""
        event_type = event.get("type")
        if not isinstance(event_type, str):
            return False
        if self.is_empty:
            return True
        not_types, types = self.not_types, self.types  # `allows_type`, inline on this hot path
        if (not_types is not None and not_types.matches(event_type)) or (
            types is not None and not types.matches(event_type)
        ):
            return False
        sender = event.get("sender")
        if sender in self.not_senders or (self.senders is not None and sender not in self.senders):
            return False
        contains_url = self.contains_url
        if contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            return has_url is contains_url
        return True


class RoomEventFilter(EventFilter):
    """A RoomEventFilter compiled for matching (no model: every event passes)."""

    __slots__ = (
        "include_redundant_members",
        "lazy_load_members",
        "not_rooms",
        "rooms",
        "unread_thread_notifications",
    )

    def __init__(self, model: RoomEventFilterModel | None = None) -> None:
        if model is None:
            model = RoomEventFilterModel()
        super().__init__(model)
        self.rooms = frozenset(model.rooms) if model.rooms is not None else None
        self.not_rooms = frozenset(model.not_rooms or ())
        self.contains_url = model.contains_url
        self.lazy_load_members = bool(model.lazy_load_members)
        self.include_redundant_members = bool(model.include_redundant_members)
        self.unread_thread_notifications = bool(model.unread_thread_notifications)
        self.is_empty = self.is_empty and self.contains_url is None

    @classmethod
    def parse(cls, raw: Any, where: str = "filter") -> RoomEventFilter:
        """A RoomEventFilter given as JSON inside a request (None: no filter)."""
        if raw is None:
            return cls()
        return cls(validate(RoomEventFilterModel, raw, what=where))

    @staticmethod
    def from_query(raw: str | None) -> RoomEventFilter:
        """The `filter` query parameter (spec: GET /messages "A JSON RoomEventFilter")."""
        if raw is None or raw == "":
            return NO_FILTER
        return query_filter(raw)

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


NO_FILTER = RoomEventFilter()


@functools.lru_cache(maxsize=256)
def query_filter(raw: str) -> RoomEventFilter:
    """A `filter` query parameter compiled, once per distinct text: a client pages through /messages
    with the same filter (a compiled filter is never changed, so it can be shared)."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MatrixError(400, "M_INVALID_PARAM", "filter must be a JSON RoomEventFilter") from None
    return RoomEventFilter.parse(value)
