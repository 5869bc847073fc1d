"""What a sliding sync connection has been sent, as of one of its positions (persisted as JSON).

Per room, as in Synapse: never sent (absent), sent and up to date as of the position ("live"), or
sent up to an earlier stream position with changes since then not sent ("previously", because the
room was outside every list range when they happened). With it, the config the room was last sent
with (timeline limit, required state), the membership then, and the members lazy-loaded so far.
The room-scoped extensions (receipts, account data) keep the same three statuses per room.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

import orjson

MEMBER = "m.room.member"
WILDCARD = "*"
LAZY = "$LAZY"
ME = "$ME"
LIVE = 0  # in the extension maps: sent up to the connection's position; else the stream position

Pair = tuple[str, str]


class RoomConfig:
    """The merged config of a room: the largest timeline limit and the union of required state of
    every list and subscription the room is in (MSC4186 "combining room configs")."""

    __slots__ = ("required", "timeline_limit")

    def __init__(self, timeline_limit: int, required: frozenset[Pair]) -> None:
        self.timeline_limit = timeline_limit
        self.required = required

    def merged(self, other: RoomConfig) -> RoomConfig:
        return RoomConfig(max(self.timeline_limit, other.timeline_limit), self.required | other.required)

    @property
    def lazy(self) -> bool:
        return (MEMBER, LAZY) in self.required


class StateSelector:
    """Which state events `required` asks for, for one user: `*` as a type or a state key, `$ME`
    for the user's own id, `$LAZY` for the members the timeline needs (decided by the caller)."""

    __slots__ = ("all", "keys", "types")

    def __init__(self, required: frozenset[Pair], user_id: str) -> None:
        self.all = any(t == WILDCARD for t, _ in required)
        self.types = frozenset(t for t, k in required if k == WILDCARD)
        self.keys = frozenset((t, user_id if k == ME else k) for t, k in required if k not in (WILDCARD, LAZY))

    @property
    def empty(self) -> bool:
        return not (self.all or self.types or self.keys)

    def wants(self, event_type: str, state_key: str) -> bool:
        return self.all or event_type in self.types or (event_type, state_key) in self.keys


@functools.lru_cache(maxsize=1024)
def config_id(required: frozenset[Pair]) -> str:
    """A short stable name for a required-state config, so each stored position lists every config
    once and its rooms name it."""
    return hashlib.blake2b(orjson.dumps(sorted(required)), digest_size=6).hexdigest()


class RoomSent:
    __slots__ = ("last", "membership", "required", "row", "status", "timeline_limit")

    NEVER, LIVE, PREVIOUSLY = 0, 1, 2

    def __init__(self, status: int, last: int, timeline_limit: int, required: frozenset[Pair], membership: str) -> None:
        self.status = status
        self.last = last  # PREVIOUSLY: the stream position up to which the room was sent
        self.timeline_limit = timeline_limit
        self.required = required
        self.membership = membership
        self.row = (status, last, timeline_limit, config_id(required), membership)  # as stored


class ConnState:
    __slots__ = ("account_data", "lazy", "receipts", "rooms", "stream")

    def __init__(self, stream: int) -> None:
        self.stream = stream
        self.rooms: dict[str, RoomSent] = {}
        self.lazy: dict[str, tuple[str, ...]] = {}  # sorted user ids
        self.receipts: dict[str, int] = {}
        self.account_data: dict[str, int] = {}

    def copy(self, stream: int) -> ConnState:
        new = ConnState(stream)
        new.rooms = dict(self.rooms)
        new.lazy = dict(self.lazy)
        new.receipts = dict(self.receipts)
        new.account_data = dict(self.account_data)
        return new

    def to_json(self) -> dict[str, Any]:
        rooms = {room_id: sent.row for room_id, sent in self.rooms.items()}
        configs: dict[str, frozenset[Pair]] = {}
        for sent in self.rooms.values():
            configs.setdefault(sent.row[3], sent.required)
        return {
            "stream": self.stream,
            "configs": {cid: sorted(required) for cid, required in configs.items()},
            "rooms": rooms,
            "lazy": {room: users for room, users in self.lazy.items() if users},
            "receipts": self.receipts,
            "account_data": self.account_data,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConnState:
        state = cls(int(data["stream"]))
        configs = {cid: frozenset((str(t), str(k)) for t, k in c) for cid, c in data.get("configs", {}).items()}
        for room_id, (status, last, limit, cid, membership) in data.get("rooms", {}).items():
            state.rooms[room_id] = RoomSent(status, last, limit, configs[cid], membership)
        state.lazy = {room: tuple(users) for room, users in data.get("lazy", {}).items()}
        state.receipts = dict(data.get("receipts", {}))
        state.account_data = dict(data.get("account_data", {}))
        return state
