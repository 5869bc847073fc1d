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

    __slots__ = ("is_empty", "limit", "not_senders", "not_types", "senders", "types")

    def __init__(self, model: EventFilterModel | None = None) -> None:
        if model is None:
            model = EventFilterModel()
        self.limit = model.limit
        self.types = _globs(model.types)
        self.not_types = _globs(model.not_types or None)
        self.senders = frozenset(model.senders) if model.senders is not None else None
        self.not_senders = frozenset(model.not_senders or ())
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
        if not self.allows_type(event_type):
            return False
        sender = event.get("sender")
        if sender in self.not_senders:
            return False
        return self.senders is None or sender in self.senders


class RoomEventFilter(EventFilter):
    """A RoomEventFilter compiled for matching (no model: every event passes)."""

    __slots__ = (
        "contains_url",
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

    @classmethod
    def from_query(cls, raw: str | None) -> RoomEventFilter:
        """The `filter` query parameter (spec: GET /messages "A JSON RoomEventFilter")."""
        if raw is None or raw == "":
            return cls()
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise MatrixError(400, "M_INVALID_PARAM", "filter must be a JSON RoomEventFilter") from None
        return cls.parse(value)

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def allows(self, event: Mapping[str, Any]) -> bool:
        if not super().allows(event):
            return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            return has_url is self.contains_url
        return True
