"""A room's timeline: where each event sits in it, the state at a stream position, and walking it for
a user.

Every event in a room's timeline has an *order* (tokens.py turns orders into client tokens). Live
events, persisted as they happen, sit at the order of their position on the global stream
(`tokens.live_order`); backfilled events, older history fetched later, sort below every live one.
So the timeline reads oldest to newest by order, while questions about stream positions ("what came
after `since`", "the state at `upto`") are about live events only: a backfilled event has no stream
position and never moves what a sync token stands for.

`Timeline` is the one place that answers those questions; nothing else reads the timeline table or
computes orders. `walk` visits the events a user may see that pass a filter, from a position in
either direction, with a bound on how much is read per request: walking backwards from position P
visits orders <= P going down; forwards visits orders > P going up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.tokens import live_order, order_of
from homeserver.rooms.visibility import Visibility
from storage.events import EventStore
from storage.rooms import RoomStore
from storage.shortids import ShortIds

# Events read per request at most, so a filter matching nothing cannot make one request read a room.
MAX_SCAN = 5000
MEMBER = "m.room.member"


class Walk:
    __slots__ = ("events", "exhausted", "position")

    events: list[tuple[int, int]]  # (order, short), in walking order
    position: int  # where the next walk in the same direction starts
    exhausted: bool  # True if the walk reached the end of the range (nothing more to read)

    def __init__(self, events: list[tuple[int, int]], position: int, exhausted: bool) -> None:
        self.events = events
        self.position = position
        self.exhausted = exhausted


class Place(NamedTuple):
    """Where a stored event sits: its timeline order and the state snapshots around it."""

    order: int | None  # None: not in the timeline (an outlier, or rejected or soft-failed)
    state_before: int  # 0 when unknown (outliers)
    state_after: int


class MembershipChange(NamedTuple):
    """An accepted member event of a room's live timeline."""

    stream: int
    user_id: str  # the member (the event's state key)
    membership: str
    state_before: int  # the state snapshot before the event: the membership it replaced is there


class Timeline:
    def __init__(self, rooms: RoomStore, events: EventStore, ids: ShortIds) -> None:
        self._rooms = rooms
        self._events = events
        self._ids = ids

    def place(self, short: int) -> Place | None:
        """Where an event sits (None for an event this server does not hold)."""
        meta = self._events.get_meta(short)
        if meta is None:
            return None
        # events outside the timeline (outliers, rejected, soft-failed) get no stream position
        return Place(order_of(meta) if meta.stream else None, meta.state_before, meta.state_after)

    def changed_since(self, room: int, stream: int) -> bool:
        """Whether a live event landed in the room after stream position `stream` (False for a room
        with no events); the room's info records the position of its newest one."""
        info = self._rooms.info(room)
        newest = info.get("stream") if info else None
        return isinstance(newest, int) and newest > stream

    def last_event(self, room: int, stream: int) -> int | None:
        """The newest live event at or before stream position `stream`. Backfilled events are never
        the answer: they were not in the room's timeline at any stream position."""
        last = next(
            self._rooms.timeline(room, after=live_order(0) - 1, before=live_order(stream) + 1, reverse=True), None
        )
        return last[1] if last is not None else None

    def state_at(self, room: int, stream: int) -> int:
        """The state snapshot after the newest live event at or before stream position `stream`
        (0, the empty state, before the room's first event)."""
        last = self.last_event(room, stream)
        meta = self._events.get_meta(last) if last is not None else None
        return meta.state_after if meta is not None else 0

    def current_state(self, room: int, upto: int) -> int:
        """The room's state as of stream position `upto`: its resolved current state when nothing
        newer has landed, else the state after the newest live event up to `upto`."""
        info = self._rooms.info(room) or {}
        if int(info.get("stream", 0)) <= upto and info.get("state"):
            return int(info["state"])
        return self.state_at(room, upto)

    def membership_changes(self, room: int, after: int) -> Iterator[MembershipChange]:
        """The accepted member events of the room's live timeline after stream position `after`, in
        stream order."""
        member_keys: dict[int, str | None] = {}  # short state key -> member's user id (None: not a member event)
        for _, short in self._rooms.timeline(room, after=live_order(after)):
            meta = self._events.get_meta(short)
            if meta is None or not meta.state_key or meta.rejected or meta.soft_failed:
                continue
            if meta.state_key not in member_keys:
                event_type, state_key = self._ids.state_key_of(meta.state_key)
                member_keys[meta.state_key] = state_key if event_type == MEMBER else None
            user = member_keys[meta.state_key]
            if user is None:
                continue
            content = (self._events.get_json(short) or {}).get("content")
            membership = content.get("membership") if isinstance(content, dict) else None
            if isinstance(membership, str):
                yield MembershipChange(meta.stream, user, membership, meta.state_before)

    def walk(
        self,
        room: int,
        start: int | None,
        *,
        forwards: bool,
        limit: int,
        vis: Visibility | None,
        event_filter: RoomEventFilter | None = None,
        stop: int | None = None,
        max_scan: int = MAX_SCAN,
    ) -> Walk:
        """Up to `limit` visible events that pass `event_filter`, starting at position `start` (None:
        the first or last event), not beyond position `stop`."""
        return walk(
            self._rooms,
            self._events,
            room,
            start,
            forwards=forwards,
            limit=limit,
            vis=vis,
            event_filter=event_filter,
            stop=stop,
            max_scan=max_scan,
        )


def walk(
    rooms: RoomStore,
    events: EventStore,
    room: int,
    start: int | None,
    *,
    forwards: bool,
    limit: int,
    vis: Visibility | None,
    event_filter: RoomEventFilter | None = None,
    stop: int | None = None,
    max_scan: int = MAX_SCAN,
) -> Walk:
    """`Timeline.walk` over the room and event tables."""
    if forwards:
        it = rooms.timeline(room, after=start, before=stop + 1 if stop is not None else None)
    else:
        before = start + 1 if start is not None else None
        it = rooms.timeline(room, after=stop, before=before, reverse=True)
    found: list[tuple[int, int]] = []
    scanned = 0
    position = start
    for order, short in it:
        if len(found) >= limit or scanned >= max_scan:
            return Walk(found, _position(position, forwards, start), False)
        scanned += 1
        position = order
        if vis is not None and not vis.allows(short):
            continue
        if event_filter is not None and not event_filter.is_empty:
            event = events.get_json(short)
            if event is None or not event_filter.allows(event):
                continue
        found.append((order, short))
    return Walk(found, _position(position, forwards, start), True)


def _position(last_visited: int | None, forwards: bool, start: int | None) -> int:
    """The position after the last event visited, in the walking direction."""
    if last_visited is None:
        return start if start is not None else 0
    return last_visited if forwards else last_visited - 1
