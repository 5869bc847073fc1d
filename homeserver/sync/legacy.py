"""GET /events: the event stream `/sync` replaced (deprecated), and with `room_id` the way to peek
into a world-readable room (spec: client-server-api "Room Previews"). GET /rooms/{roomId}/initialSync
is served by the room service."""

from __future__ import annotations

import time
from typing import Any

from homeserver.errors import MatrixError
from homeserver.notifier import Notifier
from homeserver.rooms.client_format import EventSerializer, Viewer
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.timeline import Timeline
from homeserver.rooms.tokens import live_order, parse_stream_token, stream_of, stream_token
from homeserver.rooms.visibility import Visibility
from homeserver.sync.rooms import VisibilityFor

EVENTS_LIMIT = 100
MAX_TIMEOUT_MS = 5 * 60 * 1000


class LegacySync:
    def __init__(
        self,
        queries: RoomQueries,
        timeline: Timeline,
        visibility: VisibilityFor,
        notifier: Notifier,
        serializer: EventSerializer,
    ) -> None:
        self.queries = queries
        self.timeline = timeline
        self.visibility = visibility
        self.notifier = notifier
        self.serializer = serializer

    async def events(
        self, viewer: Viewer, from_token: str | None, timeout_ms: int, room_id: str | None
    ) -> dict[str, Any]:
        """Events after `from` in the user's joined rooms, or in one room they may read (peeking)."""
        rooms: list[int]
        if room_id is not None:
            room = self.queries.room(room_id)
            if room is None or not self.visibility(viewer.user_id, room).access.can_read:
                raise MatrixError(403, "M_FORBIDDEN", "You may not peek into this room")
            rooms = [room]
        else:
            rooms = self.queries.joined_rooms(viewer.user_id)
        since = parse_stream_token(from_token, "from") if from_token else self.notifier.token
        since = min(since, self.notifier.token)
        deadline = time.monotonic() + min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        with self.notifier.listen(viewer.user_id, rooms) as waiter:
            while True:
                waiter.reset()
                upto = self.notifier.token
                chunk, end = self._events_between(viewer, rooms, since, upto)
                remaining = deadline - time.monotonic()
                if chunk or remaining <= 0:
                    return {"chunk": chunk, "start": stream_token(since), "end": stream_token(end)}
                await waiter.wait(remaining)

    def _events_between(
        self, viewer: Viewer, rooms: list[int], since: int, upto: int
    ) -> tuple[list[dict[str, Any]], int]:
        """Up to `EVENTS_LIMIT` events in (since, upto], and the position the next request starts at."""
        found: list[tuple[int, int, Visibility]] = []
        for room in rooms:
            vis = self.visibility(viewer.user_id, room)
            result = self.timeline.walk(
                room, live_order(since), forwards=True, limit=EVENTS_LIMIT, vis=vis, stop=live_order(upto)
            )
            found.extend((order, short, vis) for order, short in result.events)
        found.sort(key=lambda item: item[0])
        end = upto
        if len(found) > EVENTS_LIMIT:
            found = found[:EVENTS_LIMIT]
            last = stream_of(found[-1][0])
            assert last is not None  # the walk stayed on the live part of the timeline: (since, upto]
            end = last
        out = []
        for _, short, vis in found:
            event = self.serializer.serialize(short, viewer, vis=vis)
            if event is not None:
                out.append(event)
        return out, end
