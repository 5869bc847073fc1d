"""What the room service's indexes see of an event being written: the event, its place in the
timeline, and lookups that include the other events of the same (uncommitted) batch.

The pipeline calls `write_hooks` inside `write_event`; the room service turns that call into a
`Written` and a `BatchEvents` and hands them to each index (relations, redactions, search...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from homeserver.protocol.events import content_of
from homeserver.protocol.room_versions import RoomVersion
from storage.batch_view import BatchView
from storage.database import Database
from storage.events import EventMeta

if TYPE_CHECKING:
    from homeserver.rooms.pipeline import RoomContext


class Written:
    """An accepted timeline event being written."""

    __slots__ = ("event", "event_id", "fresh", "meta", "order", "room", "room_id", "rv", "short")

    short: int
    event_id: str
    room: int
    room_id: str
    order: int
    event: dict[str, Any]
    meta: EventMeta
    rv: RoomVersion
    fresh: bool  # built here just now (PersistedEvent.fresh): nothing refers to it yet

    def __init__(
        self,
        short: int,
        event_id: str,
        room: int,
        room_id: str,
        order: int,
        event: dict[str, Any],
        meta: EventMeta,
        rv: RoomVersion,
        fresh: bool = False,
    ) -> None:
        self.short = short
        self.event_id = event_id
        self.room = room
        self.room_id = room_id
        self.order = order
        self.event = event
        self.meta = meta
        self.rv = rv
        self.fresh = fresh

    @property
    def type(self) -> str:
        t = self.event.get("type")
        return t if isinstance(t, str) else ""

    @property
    def content(self) -> Mapping[str, Any]:
        return content_of(self.event)

    @property
    def sender(self) -> str:
        s = self.event.get("sender")
        return s if isinstance(s, str) else ""


class BatchEvents:
    """Event lookups that see the events written earlier in the same batch."""

    def __init__(self, db: Database, ctx: RoomContext, view: BatchView) -> None:
        self.db = db
        self.ctx = ctx
        self.view = view

    def json(self, short: int) -> dict[str, Any] | None:
        ev = self.ctx.pending_events.get(short)
        return ev if ev is not None else self.db.events.get_json(short)

    def meta(self, short: int) -> EventMeta | None:
        meta = self.ctx.pending_meta.get(short)
        return meta if meta is not None else self.db.events.get_meta(short)

    def short(self, event_id: str) -> int | None:
        """The short id of a stored (or being stored) event, else None."""
        short = self.db.ids.event(event_id)
        if short is None or self.meta(short) is None:
            return None
        return short


def relates_to(event: dict[str, Any]) -> tuple[str, str] | None:
    """(rel_type, parent event id) of an event's `m.relates_to`, if well formed.

    spec: client-server-api "Forming relationships between events" — relationships that do not
    match the schema are ignored; replies (`m.in_reply_to` without `rel_type`) are not relations.
    """
    content = event.get("content")
    rel = content.get("m.relates_to") if isinstance(content, dict) else None
    if not isinstance(rel, dict):
        return None
    rel_type, parent = rel.get("rel_type"), rel.get("event_id")
    if isinstance(rel_type, str) and rel_type and isinstance(parent, str) and parent.startswith("$"):
        return rel_type, parent
    return None
