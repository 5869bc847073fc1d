"""Filters (spec: client-server-api "Filtering", POST /user/{userId}/filter): validated once when
uploaded or parsed, then compiled into matchers that `/sync` applies to every event.

Type patterns may use `*` as a wildcard (spec: EventFilter.types).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import orjson

from homeserver.errors import MatrixError
from homeserver.protocol.property_paths import split_path
from homeserver.rooms.event_filter import RoomEventFilter, type_pattern
from homeserver.rooms.tokens import parse_counter
from homeserver.schema import Schema, SchemaError, field
from storage.cache import LruCache, function_cache_stats
from storage.database import Database

DEFAULT_TIMELINE_LIMIT = 10
# spec: ClientEventWithoutRoomID — kept by `event_fields` projections
_REQUIRED_FIELDS = ("event_id", "origin_server_ts", "sender", "type", "state_key")
MAX_LIMIT = 1000


class _Model(Schema, extra="allow"):
    pass


class EventFilterModel(_Model):
    limit: int | None = field(default=None, gt=0)
    types: list[str] | None = None
    not_types: list[str] | None = None
    senders: list[str] | None = None
    not_senders: list[str] | None = None


class RoomEventFilterModel(EventFilterModel):
    rooms: list[str] | None = None
    not_rooms: list[str] | None = None
    contains_url: bool | None = None
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    unread_thread_notifications: bool = False


class RoomFilterModel(_Model):
    rooms: list[str] | None = None
    not_rooms: list[str] | None = None
    include_leave: bool = False
    timeline: RoomEventFilterModel | None = None
    state: RoomEventFilterModel | None = None
    ephemeral: RoomEventFilterModel | None = None
    account_data: RoomEventFilterModel | None = None


class FilterModel(_Model):
    event_fields: list[str] | None = None
    event_format: Literal["client", "federation"] = "client"
    presence: EventFilterModel | None = None
    account_data: EventFilterModel | None = None
    room: RoomFilterModel | None = None


def validate_filter(definition: Any, errcode: str = "M_BAD_JSON") -> FilterModel:
    if not isinstance(definition, dict):
        raise MatrixError(400, errcode, "a filter must be a JSON object")
    try:
        return FilterModel.validate(definition)
    except SchemaError as e:
        problem = e.problems[0]
        raise MatrixError(400, errcode, f"invalid filter: {problem.where or 'filter'}: {problem.message}") from None


# a compiled type or sender pattern list: the exact names, and one regex for the `*` wildcards
Matcher = tuple[frozenset[str], re.Pattern[str] | None]


def _pattern_matcher(patterns: list[str] | None) -> Matcher | None:
    if patterns is None:
        return None
    exact = frozenset(p for p in patterns if "*" not in p)
    globs = [p for p in patterns if "*" in p]
    regex = re.compile("|".join(".*".join(map(re.escape, g.split("*"))) for g in globs)) if globs else None
    return exact, regex


def _matches(matcher: Matcher, value: str) -> bool:
    exact, regex = matcher
    return value in exact or (regex is not None and regex.fullmatch(value) is not None)


class EventFilter:
    """An EventFilter / RoomEventFilter compiled for matching."""

    __slots__ = (
        "contains_url", "include_redundant_members", "lazy_load_members", "limit", "not_rooms", "not_senders",
        "not_types", "rooms", "senders", "types", "unread_thread_notifications",
    )  # fmt: skip

    def __init__(
        self,
        limit: int | None = None,
        types: Matcher | None = None,
        not_types: Matcher | None = None,
        senders: frozenset[str] | None = None,
        not_senders: frozenset[str] = frozenset(),
    ) -> None:
        self.limit = limit
        self.types = types
        self.not_types = not_types
        self.senders = senders
        self.not_senders = not_senders
        # RoomEventFilter's parts (set by `compile`)
        self.rooms: frozenset[str] | None = None
        self.not_rooms: frozenset[str] = frozenset()
        self.contains_url: bool | None = None
        self.lazy_load_members = False
        self.include_redundant_members = False
        self.unread_thread_notifications = False

    @classmethod
    def compile(cls, model: EventFilterModel | None) -> EventFilter:
        if model is None:
            return cls()
        out = cls(
            limit=model.limit,
            types=_pattern_matcher(model.types),
            not_types=_pattern_matcher(model.not_types),
            senders=frozenset(model.senders) if model.senders is not None else None,
            not_senders=frozenset(model.not_senders or ()),
        )
        if isinstance(model, RoomEventFilterModel):
            out.rooms = frozenset(model.rooms) if model.rooms is not None else None
            out.not_rooms = frozenset(model.not_rooms or ())
            out.contains_url = model.contains_url
            out.lazy_load_members = model.lazy_load_members
            out.include_redundant_members = model.include_redundant_members
            out.unread_thread_notifications = model.unread_thread_notifications
        return out

    @property
    def unfiltered(self) -> bool:
        return (
            self.types is None
            and self.not_types is None
            and self.senders is None
            and not self.not_senders
            and self.contains_url is None
        )

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def allows_type(self, event_type: str) -> bool:
        if self.not_types is not None and _matches(self.not_types, event_type):
            return False
        return self.types is None or _matches(self.types, event_type)

    def allows(self, event: Mapping[str, Any]) -> bool:
        """Does the event pass (type, sender, contains_url)? Rooms are checked separately.
        An empty `types` or `senders` list lets nothing through."""
        event_type = event.get("type")
        if not isinstance(event_type, str) or not self.allows_type(event_type):
            return False
        sender = event.get("sender")
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True


class SyncFilter:
    """A whole filter, compiled."""

    __slots__ = (
        "account_data", "ephemeral", "event_fields", "event_format", "include_leave", "not_rooms", "presence",
        "room_account_data", "rooms", "state", "timeline", "timeline_walk",
    )  # fmt: skip

    def __init__(
        self,
        event_fields: list[list[str]] | None = None,
        event_format: str = "client",
        presence: EventFilter | None = None,
        account_data: EventFilter | None = None,
        rooms: frozenset[str] | None = None,
        not_rooms: frozenset[str] = frozenset(),
        include_leave: bool = False,
        timeline: EventFilter | None = None,
        state: EventFilter | None = None,
        ephemeral: EventFilter | None = None,
        room_account_data: EventFilter | None = None,
        timeline_walk: RoomEventFilter | None = None,
    ) -> None:
        self.event_fields = event_fields
        self.event_format = event_format
        self.presence = presence or EventFilter()
        self.account_data = account_data or EventFilter()
        self.rooms = rooms
        self.not_rooms = not_rooms
        self.include_leave = include_leave
        self.timeline = timeline or EventFilter()
        self.state = state or EventFilter()
        self.ephemeral = ephemeral or EventFilter()
        self.room_account_data = room_account_data or EventFilter()
        self.timeline_walk = timeline_walk  # the timeline filter as the rooms' walker takes it

    @classmethod
    def compile(cls, model: FilterModel) -> SyncFilter:
        room = model.room or RoomFilterModel()
        walk_filter = RoomEventFilter.parse(room.timeline.dump(exclude_none=True)) if room.timeline else None
        return cls(
            timeline_walk=walk_filter if walk_filter is not None and not walk_filter.is_empty else None,
            event_fields=[split_path(p) for p in model.event_fields] if model.event_fields is not None else None,
            event_format=model.event_format,
            presence=EventFilter.compile(model.presence),
            account_data=EventFilter.compile(model.account_data),
            rooms=frozenset(room.rooms) if room.rooms is not None else None,
            not_rooms=frozenset(room.not_rooms or ()),
            include_leave=room.include_leave,
            timeline=EventFilter.compile(room.timeline),
            state=EventFilter.compile(room.state),
            ephemeral=EventFilter.compile(room.ephemeral),
            room_account_data=EventFilter.compile(room.account_data),
        )

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

    def __init__(self, db: Database) -> None:
        self.db = db
        self._compiled: LruCache[tuple[str, str], SyncFilter] = db.caches.lru("sync.filters", "sync", part=0.25)
        db.caches.add_reporter(function_cache_stats("sync.type_patterns", type_pattern, 2_000))

    async def upload(self, user_id: str, definition: Any) -> str:
        validate_filter(definition)
        existing = self.db.filters.find(user_id, definition)
        if existing is not None:
            return str(existing)
        batch = self.db.store.batch()
        with batch:
            filter_id = self.db.filters.next_id(user_id)
            self.db.filters.put(user_id, filter_id, definition, batch)
            await batch.commit()
        return str(filter_id)

    def get(self, user_id: str, filter_id: str) -> dict[str, Any] | None:
        number = parse_counter(filter_id)
        return self.db.filters.get(user_id, number) if number is not None else None

    def for_sync(self, user_id: str, param: str | None) -> SyncFilter:
        """The compiled filter for `/sync?filter=` (an id or inline JSON); 400 if unusable."""
        if not param:
            return DEFAULT_FILTER
        key = (user_id if not param.startswith("{") else "", param)
        cached = self._compiled.get(key)
        if cached is not None:
            return cached
        if param.startswith("{"):
            try:
                definition = orjson.loads(param)
            except orjson.JSONDecodeError:
                raise MatrixError(400, "M_NOT_JSON", "the filter parameter is not valid JSON") from None
        else:
            definition = self.get(user_id, param)
            if definition is None:
                raise MatrixError(400, "M_INVALID_PARAM", f"no filter {param!r} for this user")
        compiled = SyncFilter.compile(validate_filter(definition))
        self._compiled.put(key, compiled)
        return compiled
