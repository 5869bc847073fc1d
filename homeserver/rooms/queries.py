"""Room queries: the questions every service asks about rooms, answered in one place.

Services never re-derive these from the room tables: "rooms this user is joined to", "users who
share a room with this user", "servers in a room", "the current state event (type, state_key)",
"the state event at a snapshot" and "is this id ours". They read committed data only (what the
store holds after the last landed batch), the same view `/sync` and the HTTP API read.

Rooms are named by short ids (`int`, storage/shortids.py) inside the server; `room()` and
`room_id()` convert at the edges.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from homeserver.protocol.events import Event
from homeserver.protocol.room_versions import RoomVersion, get_room_version
from storage.events import EventMeta, EventStore
from storage.rooms import RoomStore, UserRoom
from storage.shortids import ShortIds
from storage.state_snapshots import StateSnapshots


class RoomQueries:
    def __init__(
        self, server_name: str, ids: ShortIds, rooms: RoomStore, events: EventStore, snapshots: StateSnapshots
    ) -> None:
        self.server_name = server_name
        self._suffix = ":" + server_name
        self._ids = ids
        self._rooms = rooms
        self._events = events
        self._snapshots = snapshots

    # -- ids ---------------------------------------------------------------------------------------

    def is_local(self, identifier: str) -> bool:
        """Whether a user id, room alias, or room/event id with a domain names this server.

        spec: appendices "Identifier grammar": the server name is everything after the first colon.
        Room ids of room version 12 and event ids of versions 3+ carry no server name: never local.
        """
        _, colon, domain = identifier.partition(":")
        return bool(colon) and domain == self.server_name

    def room(self, room_id: str) -> int | None:
        """The short id of a room this server knows, else None."""
        return self._ids.room(room_id)

    def room_id(self, room: int) -> str:
        return self._ids.room_id(room)

    # -- membership --------------------------------------------------------------------------------

    def memberships(self, user_id: str) -> Iterator[UserRoom]:
        """Every room the user has a membership in (any membership), with its stream position."""
        return self._rooms.user_rooms(user_id)

    def membership(self, user_id: str, room: int) -> UserRoom | None:
        return self._rooms.user_room(user_id, room)

    def joined_rooms(self, user_id: str) -> list[int]:
        return [ur.room for ur in self._rooms.user_rooms(user_id) if ur.membership == "join"]

    def joined_room_ids(self, user_id: str) -> list[str]:
        return [self._ids.room_id(room) for room in self.joined_rooms(user_id)]

    def is_joined(self, user_id: str, room: int) -> bool:
        ur = self._rooms.user_room(user_id, room)
        return ur is not None and ur.membership == "join"

    def members(self, room: int, membership: str = "join") -> Iterator[tuple[str, int]]:
        """(user id, short id of the member event) of everyone with that membership now."""
        return self._rooms.members(room, membership)

    def joined_members(self, room: int) -> list[str]:
        return [user for user, _ in self._rooms.members(room, "join")]

    def member_count(self, room: int, membership: str = "join") -> int:
        return self._rooms.member_count(room, membership)

    def local_joined_members(self, room: int) -> list[str]:
        return [user for user, _ in self._rooms.members(room, "join") if self.is_local(user)]

    def users_sharing_a_room(self, user_id: str) -> set[str]:
        """Everyone joined to a room the user is joined to, the user included (when joined anywhere)."""
        users: set[str] = set()
        for room in self.joined_rooms(user_id):
            users.update(user for user, _ in self._rooms.members(room, "join"))
        return users

    def shares_a_room_with_us(self, user_id: str) -> bool:
        """Whether the user is joined to a room one of our users is joined to (a key read per room
        of theirs, not a walk over the members)."""
        return any(self._rooms.has_server_member(room, self.server_name) for room in self.joined_rooms(user_id))

    def share_a_room(self, user_a: str, user_b: str) -> bool:
        """Whether two users are joined to at least one common room (a user shares with themself
        only when joined somewhere)."""
        mine = set(self.joined_rooms(user_a))
        return any(ur.membership == "join" and ur.room in mine for ur in self._rooms.user_rooms(user_b))

    def servers_in_room(self, room: int) -> list[str]:
        """Servers with at least one joined member, in storage order (sorted by name)."""
        return self._rooms.servers(room)

    def server_in_room(self, room: int, server: str) -> bool:
        """Whether a user of `server` is joined to `room` (one key read, whatever the room's size)."""
        return self._rooms.has_server_member(room, server)

    def server_members(self, room: int, server: str) -> Iterator[str]:
        """The users of `server` joined to `room` (lazily: stop early to read only a few)."""
        return self._rooms.server_members(room, server)

    # -- state -------------------------------------------------------------------------------------

    def current_state_event(self, room: int, event_type: str, state_key: str = "") -> Event | None:
        short = self.current_state_short(room, event_type, state_key)
        return self.event(short) if short is not None else None

    def current_state_short(self, room: int, event_type: str, state_key: str = "") -> int | None:
        sk = self._ids.state_key(event_type, state_key)
        return self._rooms.state_event(room, sk) if sk is not None else None

    def state_event_at(self, snapshot: int, event_type: str, state_key: str = "") -> Event | None:
        """The state event at a state snapshot (0 is the empty state)."""
        if not snapshot:
            return None
        sk = self._ids.state_key(event_type, state_key)
        short = self._snapshots.get(snapshot, sk) if sk is not None else None
        return self.event(short) if short is not None else None

    def event(self, short: int) -> Event | None:
        raw = self._events.get_json(short)
        return Event(raw, self._ids.event_id(short)) if raw is not None else None

    # -- added for sync ------------------------------------------------------------------------------

    def state_at_snapshot(self, snapshot: int) -> Mapping[int, int]:
        """A whole state snapshot as {short state key: short event id} (0 is the empty state); read-only."""
        return self._snapshots.load(snapshot) if snapshot else {}

    def state_key(self, event_type: str, state_key: str = "") -> int | None:
        """The short id of a (type, state_key) pair, None if no event ever used it."""
        return self._ids.state_key(event_type, state_key)

    def state_key_of(self, short_state_key: int) -> tuple[str, str]:
        return self._ids.state_key_of(short_state_key)

    def invite_state(self, user_id: str, room: int) -> list[dict[str, Any]] | None:
        """The stripped state stored with the user's invite or knock (rooms/stripped_state.py)."""
        return self._rooms.invite_state(user_id, room)

    def event_short(self, event_id: str) -> int | None:
        """The short id of an event this server holds, else None."""
        return self._ids.event(event_id)

    def event_meta(self, short: int) -> EventMeta | None:
        """An event's room, stream position, state snapshots and flags (outlier, rejected, ...)."""
        return self._events.get_meta(short)

    def rooms(self) -> Iterator[int]:
        """Every room this server knows (short ids)."""
        return self._rooms.rooms()

    # -- appended for the room service -------------------------------------------------------------

    def current_membership(self, user_id: str, room: int) -> str | None:
        """The user's membership in the room now (any), None if they never had one."""
        ur = self._rooms.user_room(user_id, room)
        return ur.membership if ur is not None else None

    def known_room(self, room_id: str) -> int | None:
        """The short id of a room this server holds the state of (not merely an id it has seen)."""
        room = self._ids.room(room_id)
        return room if room is not None and self._rooms.info(room) is not None else None

    def room_version(self, room: int) -> RoomVersion:
        info = self._rooms.info(room) or {}
        return get_room_version(info.get("version", "1"))

    def state_short_at(self, snapshot: int, event_type: str, state_key: str = "") -> int | None:
        """`state_event_at` as a short id (to serialize it)."""
        sk = self._ids.state_key(event_type, state_key) if snapshot else None
        return self._snapshots.get(snapshot, sk) if sk is not None else None
