"""GET /events: the event stream `/sync` replaced (deprecated), and with `room_id` the way to peek
into a world-readable room (spec: client-server-api "Room Previews"). GET /rooms/{roomId}/initialSync
is served by the room service."""

from __future__ import annotations

import time
from typing import Any

from homeserver.errors import MatrixError
from homeserver.notifier import Notifier
from homeserver.rooms.client_format import EventSerializer, Viewer
from homeserver.rooms.timeline import walk
from homeserver.rooms.tokens import parse_stream_token, stream_token
from homeserver.rooms.visibility import Visibility, room_access
from storage.database import Database
from storage.rooms import LIVE_BASE

EVENTS_LIMIT = 100
MAX_TIMEOUT_MS = 5 * 60 * 1000


class LegacySync:
    def __init__(self, db: Database, notifier: Notifier, serializer: EventSerializer) -> None:
        self.db = db
        self.notifier = notifier
        self.serializer = serializer

    async def events(
        self, viewer: Viewer, from_token: str | None, timeout_ms: int, room_id: str | None
    ) -> dict[str, Any]:
        """Events after `from` in the user's joined rooms, or in one room they may read (peeking)."""
        rooms: list[int]
        if room_id is not None:
            room = self.db.ids.room(room_id)
            if room is None or not room_access(self.db, viewer.user_id, room).can_read:
                raise MatrixError(403, "M_FORBIDDEN", "You may not peek into this room")
            rooms = [room]
        else:
            rooms = [ur.room for ur in self.db.rooms.user_rooms(viewer.user_id) if ur.membership == "join"]
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
            vis = Visibility(self.db, viewer.user_id, room)
            result = walk(
                self.db, room, LIVE_BASE + since, forwards=True, limit=EVENTS_LIMIT, vis=vis, stop=LIVE_BASE + upto
            )
            found.extend((order, short, vis) for order, short in result.events)
        found.sort(key=lambda item: item[0])
        end = upto
        if len(found) > EVENTS_LIMIT:
            found = found[:EVENTS_LIMIT]
            end = found[-1][0] - LIVE_BASE
        out = []
        for _, short, vis in found:
            event = self.serializer.serialize(short, viewer, vis=vis)
            if event is not None:
                out.append(event)
        return out, end
