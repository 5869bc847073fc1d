"""Who may see which events of a room: history visibility and membership at each event.

spec: client-server-api "Room History Visibility" — "Server behaviour". For an event E and a user U,
with the history visibility and U's membership taken from the state of the room at E (the state
before E):

1. `world_readable` at E: allow (anyone, guests and non-members included).
2. U's membership at E was `join`: allow.
3. `shared` at E and U joined the room at any point after E was sent: allow.
4. U's membership at E was `invite` and the visibility was `invited`: allow.
5. Otherwise deny.

A missing or unknown visibility counts as `shared`. For `m.room.history_visibility` events the
visibility before *or* after the event may allow; for U's own `m.room.member` events the membership
before *or* after may. A user who forgot the room (POST /forget) sees only `world_readable` events.

The public API, used by every endpoint that serves events and by sync:

- `filter_events_for_user(source, user_id, room_short, events)`: the events U may see, in order.
  `source` is the `HomeServer` or its `Database`; `events` are short event ids, or objects with a
  `.short` attribute (e.g. `PersistedEvent`), or anything with `key=` giving the short id.
- `can_see_room(source, user_id, room_short)`: whether U may read the room at all now (joined, was
  a member and did not forget it, is invited or knocking, or the room is `world_readable`).
- `room_access(db, user_id, room_short)`: U's current standing in the room (membership, forgotten,
  world_readable) and which state U may see (`state_snapshot`): the current state when joined or
  when the room is world-readable, the state when U left for past members, else none.
- `Visibility(db, user_id, room_short)`: the rule for many events, memoised per state snapshot;
  `.membership_at(short)` gives `unsigned.membership` (spec: ClientEvent unsigned "membership").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from homeserver.protocol.events import content_of
from homeserver.rooms.tokens import order_of
from storage.database import Database

T = TypeVar("T")

HISTORY_VISIBILITY = "m.room.history_visibility"
MEMBER = "m.room.member"
_KNOWN_VISIBILITIES = ("world_readable", "shared", "invited", "joined")
_MEMBER_CHAIN_LIMIT = 200


def _db(source: Any) -> Database:
    db = getattr(source, "db", source)
    if not isinstance(db, Database):
        raise TypeError("expected a HomeServer or a Database")
    return db


def _visibility_of(event: dict[str, Any] | None) -> str:
    value = content_of(event).get("history_visibility")
    # spec: "if no history_visibility is set, or if the value is not understood, ... shared"
    return value if value in _KNOWN_VISIBILITIES else "shared"


def _membership_of(event: dict[str, Any] | None) -> str | None:
    value = content_of(event).get("membership")
    return value if isinstance(value, str) else None


class RoomAccess:
    """A user's current standing in a room."""

    __slots__ = ("forgotten", "member_event", "membership", "room", "user_id", "world_readable")

    room: int
    user_id: str
    membership: str | None  # current membership, None if the user never had one
    member_event: int | None
    forgotten: bool
    world_readable: bool  # the current history visibility

    def __init__(
        self,
        room: int,
        user_id: str,
        membership: str | None,
        member_event: int | None,
        forgotten: bool,
        world_readable: bool,
    ) -> None:
        self.room = room
        self.user_id = user_id
        self.membership = membership
        self.member_event = member_event
        self.forgotten = forgotten
        self.world_readable = world_readable

    @property
    def joined(self) -> bool:
        return self.membership == "join"

    @property
    def can_read(self) -> bool:
        """Whether the user may read anything of the room (events are still filtered one by one)."""
        if self.joined or self.world_readable:
            return True
        return not self.forgotten and self.membership in ("leave", "ban", "invite", "knock")

    def state_snapshot(self, db: Database) -> int | None:
        """The state the user may see: current (joined, world-readable), when they left (past members)."""
        info = db.rooms.info(self.room)
        if info is None:
            return None
        if self.joined or self.world_readable:
            return int(info["state"])
        if self.forgotten or self.membership not in ("leave", "ban") or self.member_event is None:
            return None
        meta = db.events.get_meta(self.member_event)
        return meta.state_after if meta is not None else None

    def position_limit(self, db: Database) -> int | None:
        """For past members of a room that is not world-readable: the timeline order of their leave."""
        if self.joined or self.world_readable or self.member_event is None:
            return None
        if self.membership not in ("leave", "ban"):
            return None
        meta = db.events.get_meta(self.member_event)
        return order_of(meta) if meta is not None and meta.stream else None


def room_access(db: Database, user_id: str, room: int) -> RoomAccess:
    ur = db.rooms.user_room(user_id, room)
    hv_sk = db.ids.state_key(HISTORY_VISIBILITY, "")
    hv_short = db.rooms.state_event(room, hv_sk) if hv_sk is not None else None
    hv = _visibility_of(db.events.get_json(hv_short)) if hv_short is not None else "shared"
    return RoomAccess(
        room=room,
        user_id=user_id,
        membership=ur.membership if ur is not None else None,
        member_event=ur.event if ur is not None else None,
        forgotten=db.room_extras.is_forgotten(user_id, room),
        world_readable=hv == "world_readable",
    )


class Visibility:
    """The history visibility rule for one user in one room, memoised per state snapshot."""

    def __init__(self, db: Database, user_id: str, room: int, access: RoomAccess | None = None) -> None:
        self.db = db
        self.user_id = user_id
        self.room = room
        self.access = access or room_access(db, user_id, room)
        self._hv_sk = db.ids.state_key(HISTORY_VISIBILITY, "")
        self._member_sk = db.ids.state_key(MEMBER, user_id)
        self._at: dict[int, tuple[str, str | None]] = {}
        self._latest_join: int | None = -1  # -1: not computed yet
        self._allowed: dict[int, bool] = {}

    def _state_at(self, snapshot: int) -> tuple[str, str | None]:
        """(history visibility, the user's membership) in a state snapshot."""
        found = self._at.get(snapshot)
        if found is None:
            hv = "shared"
            membership = None
            if snapshot:
                snaps, events = self.db.snapshots, self.db.events
                if self._hv_sk is not None:
                    hv_short = snaps.get(snapshot, self._hv_sk)
                    hv = _visibility_of(events.get_json(hv_short)) if hv_short is not None else "shared"
                if self._member_sk is not None:
                    m_short = snaps.get(snapshot, self._member_sk)
                    membership = _membership_of(events.get_json(m_short)) if m_short is not None else None
            found = self._at[snapshot] = (hv, membership)
        return found

    def latest_join_order(self) -> int | None:
        """Timeline order of the user's most recent join to the room (walking back their member events)."""
        if self._latest_join != -1:
            return self._latest_join
        result: int | None = None
        short = self.access.member_event
        for _ in range(_MEMBER_CHAIN_LIMIT):
            if short is None or self._member_sk is None:
                break
            meta = self.db.events.get_meta(short)
            if meta is None:
                break
            if _membership_of(self.db.events.get_json(short)) == "join" and meta.stream:
                result = order_of(meta)
                break
            short = self.db.snapshots.get(meta.state_before, self._member_sk) if meta.state_before else None
        self._latest_join = result
        return result

    def _rule(self, visibility: str, membership: str | None, order: int) -> bool:
        if visibility == "world_readable":
            return True
        if self.access.forgotten:
            return False
        if membership == "join":
            return True
        if visibility == "shared":
            joined = self.latest_join_order()
            if joined is not None and joined > order:
                return True
        return visibility == "invited" and membership == "invite"

    def allows(self, short: int) -> bool:
        found = self._allowed.get(short)
        if found is None:
            found = self._allowed[short] = self._allows(short)
        return found

    def _allows(self, short: int) -> bool:
        meta = self.db.events.get_meta(short)
        if meta is None or meta.room != self.room or meta.rejected or meta.soft_failed:
            return False
        event = self.db.events.get_json(short)
        if event is None:
            return False
        own_member = event.get("type") == MEMBER and event.get("state_key") == self.user_id
        if meta.outlier:
            return own_member  # an invite or knock seen before the room's history: only its subject
        visibility, membership = self._state_at(meta.state_before)
        order = order_of(meta)
        if self._rule(visibility, membership, order):
            return True
        if event.get("type") == HISTORY_VISIBILITY and event.get("state_key") == "":
            return self._rule(_visibility_of(event), membership, order)
        if own_member:
            return self._rule(visibility, _membership_of(event), order)
        return False

    def membership_at(self, short: int) -> str:
        """The user's membership at an event, including the event's own change (spec: unsigned.membership)."""
        meta = self.db.events.get_meta(short)
        event = self.db.events.get_json(short)
        if event is not None and event.get("type") == MEMBER and event.get("state_key") == self.user_id:
            own = _membership_of(event)
            if own is not None:
                return own
        membership = self._state_at(meta.state_before)[1] if meta is not None else None
        # spec: "If the user had yet to join the room at the time of the event ... set to leave"
        return membership or "leave"

    def filter(self, items: Iterable[T], key: Callable[[T], int]) -> list[T]:
        return [item for item in items if self.allows(key(item))]


def _short_of(item: Any) -> int:
    if isinstance(item, int):
        return item
    short = getattr(item, "short", None)
    if not isinstance(short, int):
        raise TypeError("events must be short ids or have a .short attribute; pass key=")
    return short


def filter_events_for_user(
    source: Any, user_id: str, room_short: int, events: Iterable[T], *, key: Callable[[T], int] | None = None
) -> list[T]:
    """The events of `events` that `user_id` may see, in their order (see the module docstring)."""
    db = _db(source)
    return Visibility(db, user_id, room_short).filter(events, key or _short_of)


def can_see_room(source: Any, user_id: str, room_short: int) -> bool:
    """Whether `user_id` may read the room at all now (see the module docstring)."""
    return room_access(_db(source), user_id, room_short).can_read
