"""GET /v1/rooms/{roomId}/relations/... and GET /v1/rooms/{roomId}/threads for a user: the relations
index (relations.py) read through the history visibility rules and rendered in the client format.

spec: client-server-api "Relationships API"; modules "Threading" — "Querying threads in a room".
"""

from __future__ import annotations

from typing import Any

from homeserver.errors import not_found
from homeserver.rooms.client_format import EventSerializer, Viewer
from homeserver.rooms.messages import RoomReader
from homeserver.rooms.relations import RECURSION_DEPTH, Relations
from homeserver.rooms.tokens import before_token, parse_position, position_token
from homeserver.rooms.visibility import Visibility
from storage.database import Database


class RelationsReader:
    def __init__(self, db: Database, relations: Relations, serializer: EventSerializer, reader: RoomReader) -> None:
        self.db = db
        self.relations = relations
        self.serializer = serializer
        self.reader = reader

    def relations_page(
        self,
        viewer: Viewer,
        room_id: str,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_token: str | None,
        to_token: str | None,
        forwards: bool,
        limit: int,
        recurse: bool | None,
    ) -> dict[str, Any]:
        """`recurse` is None when the client did not give it (then `recursion_depth` is left out)."""
        room = self.reader.room(room_id)
        vis = Visibility(self.db, viewer.user_id, room)
        parent = self.db.ids.event(parent_id) if parent_id.startswith("$") else None
        if parent is None or not vis.allows(parent):
            raise not_found("Event not found, or you may not see it")
        page = self.relations.page(
            room,
            parent_id,
            rel_type=rel_type,
            event_type=event_type,
            from_order=parse_position(from_token, "from") if from_token else None,
            to_order=parse_position(to_token, "to") if to_token else None,
            forwards=forwards,
            limit=limit,
            recurse=bool(recurse),
            vis=vis,
        )
        body: dict[str, Any] = {"chunk": self.serializer.serialize_many(page.events, viewer, vis=vis)}
        if page.next_order is not None:
            body["next_batch"] = position_token(page.next_order) if forwards else before_token(page.next_order)
        if from_token is not None:
            body["prev_batch"] = from_token
        if recurse is not None:
            # spec: present whenever `recurse` was given — how deep the server looked
            body["recursion_depth"] = RECURSION_DEPTH if recurse else 1
        return body

    def threads_page(
        self, viewer: Viewer, room_id: str, *, participated_only: bool, from_token: str | None, limit: int
    ) -> dict[str, Any]:
        room, access = self.reader.readable(viewer.user_id, room_id)
        vis = Visibility(self.db, viewer.user_id, room, access)
        roots, last = self.relations.thread_roots(
            room,
            viewer.user_id,
            participated_only=participated_only,
            from_order=parse_position(from_token, "from") if from_token else None,
            limit=limit,
            vis=vis,
        )
        body: dict[str, Any] = {"chunk": self.serializer.serialize_many(roots, viewer, vis=vis)}
        if last is not None:
            body["next_batch"] = before_token(last)
        return body
