"""Walking a room's timeline for a user: the events they may see that pass a filter, from a position
in either direction, with a bound on how much is read per request.

Positions are timeline orders (see tokens.py): walking backwards from position P visits orders <= P
going down; forwards visits orders > P going up.
"""

from __future__ import annotations

from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.visibility import Visibility
from storage.database import Database

# Events read per request at most, so a filter matching nothing cannot make one request read a room.
MAX_SCAN = 5000


class Walk:
    __slots__ = ("events", "exhausted", "position")

    events: list[tuple[int, int]]  # (order, short), in walking order
    position: int  # where the next walk in the same direction starts
    exhausted: bool  # True if the walk reached the end of the range (nothing more to read)

    def __init__(self, events: list[tuple[int, int]], position: int, exhausted: bool) -> None:
        self.events = events
        self.position = position
        self.exhausted = exhausted


def walk(
    db: Database,
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
    """Up to `limit` visible events that pass `event_filter`, starting at position `start` (None: the
    first or last event), not beyond position `stop`."""
    if forwards:
        it = db.rooms.timeline(room, after=start, before=stop + 1 if stop is not None else None)
    else:
        before = start + 1 if start is not None else None
        it = db.rooms.timeline(room, after=stop, before=before, reverse=True)
    found: list[tuple[int, int]] = []
    scanned = 0
    position = start
    events = db.events
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
