"""RoomEventFilter: which events an endpoint returns (spec: client-server-api "Filtering",
POST /user/{userId}/filter — RoomEventFilter and EventFilter).

Parsed once at the door from JSON (a query parameter or part of a body); matching is plain Python.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final

import orjson

from homeserver.errors import MatrixError


def _strings(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_BAD_JSON", f"{where}.{key} must be a list of strings")
    return tuple(value)


@lru_cache(maxsize=1024)
def type_pattern(pattern: str) -> re.Pattern[str]:
    # spec: EventFilter types — '*' matches any sequence of characters (nothing else is special)
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")) + r"\Z", re.DOTALL)


def _type_matches(event_type: str, patterns: tuple[str, ...]) -> bool:
    for p in patterns:
        if "*" not in p:
            if p == event_type:
                return True
        elif type_pattern(p).match(event_type):
            return True
    return False


class RoomEventFilter:
    __slots__ = (
        "contains_url",
        "include_redundant_members",
        "lazy_load_members",
        "limit",
        "not_rooms",
        "not_senders",
        "not_types",
        "rooms",
        "senders",
        "types",
    )

    types: Final[tuple[str, ...] | None]
    not_types: Final[tuple[str, ...]]
    senders: Final[tuple[str, ...] | None]
    not_senders: Final[tuple[str, ...]]
    rooms: Final[tuple[str, ...] | None]
    not_rooms: Final[tuple[str, ...]]
    contains_url: Final[bool | None]
    lazy_load_members: Final[bool]
    include_redundant_members: Final[bool]
    limit: Final[int | None]

    def __init__(
        self,
        types: tuple[str, ...] | None = None,
        not_types: tuple[str, ...] = (),
        senders: tuple[str, ...] | None = None,
        not_senders: tuple[str, ...] = (),
        rooms: tuple[str, ...] | None = None,
        not_rooms: tuple[str, ...] = (),
        contains_url: bool | None = None,
        lazy_load_members: bool = False,
        include_redundant_members: bool = False,
        limit: int | None = None,
    ) -> None:
        self.types = types
        self.not_types = not_types
        self.senders = senders
        self.not_senders = not_senders
        self.rooms = rooms
        self.not_rooms = not_rooms
        self.contains_url = contains_url
        self.lazy_load_members = lazy_load_members
        self.include_redundant_members = include_redundant_members
        self.limit = limit

    @classmethod
    def parse(cls, raw: Any, where: str = "filter") -> RoomEventFilter:
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise MatrixError(400, "M_BAD_JSON", f"{where} must be a JSON object")
        flags: dict[str, bool | None] = {}
        for key in ("contains_url", "lazy_load_members", "include_redundant_members"):
            value = raw.get(key)
            if value is not None and not isinstance(value, bool):
                raise MatrixError(400, "M_BAD_JSON", f"{where}.{key} must be a boolean")
            flags[key] = value
        limit = raw.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise MatrixError(400, "M_BAD_JSON", f"{where}.limit must be a positive integer")
        return cls(
            types=_strings(raw, "types", where),
            not_types=_strings(raw, "not_types", where) or (),
            senders=_strings(raw, "senders", where),
            not_senders=_strings(raw, "not_senders", where) or (),
            rooms=_strings(raw, "rooms", where),
            not_rooms=_strings(raw, "not_rooms", where) or (),
            contains_url=flags["contains_url"],
            lazy_load_members=bool(flags["lazy_load_members"]),
            include_redundant_members=bool(flags["include_redundant_members"]),
            limit=limit,
        )

    @classmethod
    def from_query(cls, raw: str | None) -> RoomEventFilter:
        """The `filter` query parameter: JSON (spec: GET /messages "A JSON RoomEventFilter")."""
        if raw is None or raw == "":
            return cls()
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise MatrixError(400, "M_INVALID_PARAM", "filter must be a JSON RoomEventFilter") from None
        return cls.parse(value)

    @property
    def is_empty(self) -> bool:
        return (
            self.types is None
            and not self.not_types
            and self.senders is None
            and not self.not_senders
            and self.rooms is None
            and not self.not_rooms
            and self.contains_url is None
        )

    def room_allowed(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    def matches(self, event: Mapping[str, Any]) -> bool:
        """Whether an event (federation or client format) passes the filter (rooms aside)."""
        sender = event.get("sender")
        if sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        event_type = event.get("type")
        if not isinstance(event_type, str):
            return False
        if self.not_types and _type_matches(event_type, self.not_types):
            return False
        if self.types is not None and not _type_matches(event_type, self.types):
            return False
        if self.contains_url is not None:
            content = event.get("content")
            has_url = isinstance(content, Mapping) and isinstance(content.get("url"), str)
            if has_url != self.contains_url:
                return False
        return True
