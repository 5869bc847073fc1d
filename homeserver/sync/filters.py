"""Filters (spec: client-server-api "Filtering", POST /user/{userId}/filter): a whole Filter is
validated when uploaded or given inline to /sync, then compiled once (`SyncFilter`, cached) into
the EventFilter / RoomEventFilter matchers of `homeserver.rooms.event_filter` that /sync applies to
every event.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel

from homeserver.errors import MatrixError
from homeserver.protocol.property_paths import split_path
from homeserver.rooms.event_filter import (
    EventFilter,
    EventFilterModel,
    RoomEventFilter,
    RoomEventFilterModel,
    query_filter,
)
from homeserver.rooms.tokens import parse_counter
from homeserver.validation import STRICT, validate
from storage.cache import CacheRegistry, LruCache, function_cache_stats
from storage.filters import FilterStore

DEFAULT_TIMELINE_LIMIT = 10
MAX_LIMIT = 1000
FILTER_BYTES = 2_000  # a compiled RoomEventFilter with a glob of its own (tracemalloc: ~1.8 KiB; less without)
# spec: ClientEventWithoutRoomID — kept by `event_fields` projections
_REQUIRED_FIELDS = ("event_id", "origin_server_ts", "sender", "type", "state_key")


class RoomFilterModel(BaseModel):
    """spec: Filter.room (RoomFilter)."""

    model_config = STRICT
    rooms: list[str] | None = None
    not_rooms: list[str] | None = None
    include_leave: bool | None = None
    timeline: RoomEventFilterModel | None = None
    state: RoomEventFilterModel | None = None
    ephemeral: RoomEventFilterModel | None = None
    account_data: RoomEventFilterModel | None = None


class FilterModel(BaseModel):
    """spec: Filter, the body of POST /user/{userId}/filter (unknown keys are allowed and kept)."""

    model_config = STRICT
    event_fields: list[str] | None = None
    event_format: Literal["client", "federation"] | None = None
    presence: EventFilterModel | None = None
    account_data: EventFilterModel | None = None
    room: RoomFilterModel | None = None


def parse_filter(definition: Any) -> FilterModel:
    """A filter definition validated (400 M_BAD_JSON naming the location of the first problem)."""
    return validate(FilterModel, definition, what="filter")


class SyncFilter:
    """A whole Filter compiled (no model: the default filter)."""

    __slots__ = (
        "account_data", "ephemeral", "event_fields", "event_format", "include_leave", "not_rooms", "presence",
        "room_account_data", "rooms", "state", "timeline",
    )  # fmt: skip

    def __init__(self, model: FilterModel | None = None) -> None:
        if model is None:
            model = FilterModel()
        room = model.room if model.room is not None else RoomFilterModel()
        self.event_fields = [split_path(p) for p in model.event_fields] if model.event_fields is not None else None
        self.event_format = model.event_format or "client"
        self.presence = EventFilter(model.presence)
        self.account_data = EventFilter(model.account_data)
        # spec: RoomFilter.rooms / not_rooms — "applied before the filters in ephemeral, state,
        # timeline or account_data"
        self.rooms = frozenset(room.rooms) if room.rooms is not None else None
        self.not_rooms = frozenset(room.not_rooms or ())
        self.include_leave = bool(room.include_leave)
        self.timeline = RoomEventFilter(room.timeline)
        self.state = RoomEventFilter(room.state)
        self.ephemeral = RoomEventFilter(room.ephemeral)
        self.room_account_data = RoomEventFilter(room.account_data)

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    @property
    def timeline_limit(self) -> int:
        return min(self.timeline.limit or DEFAULT_TIMELINE_LIMIT, MAX_LIMIT)

    @property
    def lazy_load_members(self) -> bool:
        # spec: GET /sync — lazy-loading is only supported on the `state` part of the RoomFilter
        return self.state.lazy_load_members

    @property
    def include_redundant_members(self) -> bool:
        return self.state.include_redundant_members

    @property
    def unread_thread_notifications(self) -> bool:
        return self.timeline.unread_thread_notifications or self.state.unread_thread_notifications

    def project(self, event: dict[str, Any]) -> dict[str, Any]:
        """Apply `event_fields` (spec: Filter.event_fields; dot-separated property paths). "A server
        may include more fields than were requested": the fields a client event requires stay."""
        if self.event_fields is None:
            return event
        out: dict[str, Any] = {k: event[k] for k in _REQUIRED_FIELDS if k in event}
        if "content" in event:
            out["content"] = {}
        for path in self.event_fields:
            src: Any = event
            for part in path:
                if not isinstance(src, dict) or part not in src:
                    break
                src = src[part]
            else:
                dst = out
                for part in path[:-1]:
                    dst = dst.setdefault(part, {})
                dst[path[-1]] = src
        return out


DEFAULT_FILTER = SyncFilter()


class Filters:
    """Uploaded filters (per user, numbered) and the compiled filters `/sync` uses, cached."""

    def __init__(self, store: FilterStore, caches: CacheRegistry) -> None:
        self.store = store
        self._compiled: LruCache[tuple[str, str], SyncFilter] = caches.lru("sync.filters", "sync", part=0.25)
        caches.add_reporter(function_cache_stats("messages.filters", query_filter, FILTER_BYTES))

    async def upload(self, user_id: str, definition: FilterModel) -> str:
        """The id of the filter (a new one unless the user uploaded the same definition before)."""
        # the definition as the client gave it (unknown keys kept), for GET /user/{userId}/filter/{filterId}
        raw = definition.model_dump(exclude_unset=True)
        existing = self.store.find(user_id, raw)
        if existing is not None:
            return str(existing)
        batch = self.store.store.batch()
        with batch:
            filter_id = self.store.next_id(user_id)
            self.store.put(user_id, filter_id, raw, batch)
            await batch.commit()
        return str(filter_id)

    def get(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        number = parse_counter(filter_id)
        return self.store.get(user_id, number) if number is not None else None

    def for_sync(self, user_id: str, param: str | None) -> SyncFilter:
        """The compiled filter for `/sync?filter=` (an id or inline JSON); 400 if unusable."""
        if not param:
            return DEFAULT_FILTER
        # spec: GET /sync filter — inline JSON "by whether the first character is a `{`"
        inline = param.startswith("{")
        key = ("" if inline else user_id, param)
        cached = self._compiled.get(key)
        if cached is not None:
            return cached
        if inline:
            try:
                definition = orjson.loads(param)
            except orjson.JSONDecodeError:
                raise MatrixError(400, "M_NOT_JSON", "the filter parameter is not valid JSON") from None
        else:
            definition = self.get(user_id, param)
            if definition is None:
                raise MatrixError(400, "M_INVALID_PARAM", f"no filter {param!r} for this user")
        compiled = SyncFilter(parse_filter(definition))
        self._compiled.put(key, compiled)
        return compiled
