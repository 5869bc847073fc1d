"""Events as clients see them (spec: client-server-api "Room event format", ClientEvent).

The stored event is the federation PDU; clients get `content`, `event_id`, `origin_server_ts`,
`room_id`, `sender`, `state_key`, `type` and an `unsigned` the server computes:

- `age`; `transaction_id` for the device that sent it (spec: "Transaction identifiers");
- for state events `replaces_state`, and `prev_content`/`prev_sender` when the viewer may see the
  previous event;
- `redacted_because` when a redaction applies (the copy served is redacted, spec: "Redactions");
- `membership`: the viewer's membership at the event (spec: ClientEvent unsigned);
- `invite_room_state`/`knock_room_state` on the viewer's own pending invite or knock;
- `m.relations`: bundled aggregations (m.replace, m.thread, m.reference), not on state events.

The sync developer uses `EventSerializer.serialize` with a `Viewer` and a `Visibility`. The dict it
returns shares nested values (`content`) with the event cache: copy them before changing them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from homeserver.protocol.redaction import redact
from homeserver.protocol.room_versions import RoomVersion, get_room_version
from homeserver.rooms.redactions import Redactions, redacts_of
from homeserver.rooms.relations import REFERENCE, REPLACE, THREAD, Relations
from homeserver.rooms.stripped_state import MEMBER, without_member
from homeserver.rooms.visibility import Visibility
from storage.database import Database

# the viewer's own pending membership -> where its stripped state goes in `unsigned`
PENDING_STATE_KEYS = {"invite": "invite_room_state", "knock": "knock_room_state"}


class Viewer:
    """Who an event is served to: their user id and, for transaction ids, their device."""

    __slots__ = ("device_id", "user_id")

    user_id: Final[str]
    device_id: Final[str | None]

    def __init__(self, user_id: str, device_id: str | None = None) -> None:
        self.user_id = user_id
        self.device_id = device_id


class EventSerializer:
    def __init__(
        self, db: Database, relations: Relations, redactions: Redactions, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.relations = relations
        self.redactions = redactions
        self.clock = clock
        self._versions: dict[int, RoomVersion] = {}

    def room_version(self, room: int) -> RoomVersion:
        rv = self._versions.get(room)
        if rv is None:
            info = self.db.rooms.info(room) or {}
            rv = self._versions[room] = get_room_version(info.get("version", "1"))
        return rv

    def stored_event(self, short: int, *, redacted: bool = True) -> dict[str, Any] | None:
        """The stored PDU, with the redaction algorithm applied if a redaction applies to it."""
        event = self.db.events.get_json(short)
        meta = self.db.events.get_meta(short)
        if event is None or meta is None:
            return None
        if redacted and self.redactions.redaction_of(short) is not None:
            return redact(event, self.room_version(meta.room))
        return event

    def serialize(
        self,
        short: int,
        viewer: Viewer | None = None,
        *,
        vis: Visibility | None = None,
        bundle: bool = True,
        depth: int = 0,
    ) -> dict[str, Any] | None:
        """The client format of a stored event, or None if it is not stored."""
        db = self.db
        event = db.events.get_json(short)
        meta = db.events.get_meta(short)
        if event is None or meta is None:
            return None
        rv = self.room_version(meta.room)
        redaction = self.redactions.redaction_of(short)
        if redaction is not None:
            event = redact(event, rv)
        room_id = event.get("room_id")
        out: dict[str, Any] = {
            "content": event.get("content") if isinstance(event.get("content"), dict) else {},
            "event_id": db.ids.event_id(short),
            "origin_server_ts": event.get("origin_server_ts", 0),
            "room_id": room_id if isinstance(room_id, str) else db.ids.room_id(meta.room),
            "sender": event.get("sender", ""),
            "type": event.get("type", ""),
        }
        if isinstance(event.get("state_key"), str):
            out["state_key"] = event["state_key"]
        if out["type"] == "m.room.redaction":
            target = redacts_of(event)
            if target is not None:
                out["redacts"] = target  # top level too: clients written for rooms v1-v10 read it there
        unsigned: dict[str, Any] = {}
        ts = out["origin_server_ts"]
        if isinstance(ts, int):
            unsigned["age"] = max(0, int(self.clock() * 1000) - ts)
        if redaction is not None and depth < 2:
            because = self.serialize(redaction, viewer, bundle=False, depth=depth + 1)
            if because is not None:
                unsigned["redacted_because"] = because
        if viewer is not None and viewer.device_id is not None and out["sender"] == viewer.user_id:
            txn = db.room_extras.event_txn(short)
            if txn is not None and txn[0] == viewer.device_id:
                unsigned["transaction_id"] = txn[1]
        if "state_key" in out and meta.state_key and meta.state_before:
            self._previous_state(meta.state_before, meta.state_key, short, unsigned, vis)
        if vis is not None:
            unsigned["membership"] = vis.membership_at(short)
        if viewer is not None and out["type"] == MEMBER and out.get("state_key") == viewer.user_id:
            self._pending_room_state(short, meta.room, viewer.user_id, out["content"], unsigned)
        if bundle and "state_key" not in out:
            relations = self._bundle(meta.room, out["event_id"], event, redaction is not None, viewer, vis, depth)
            if relations:
                unsigned["m.relations"] = relations
        out["unsigned"] = unsigned
        return out

    def serialize_many(
        self, shorts: Iterable[int], viewer: Viewer | None = None, *, vis: Visibility | None = None, bundle: bool = True
    ) -> list[dict[str, Any]]:
        out = []
        for short in shorts:
            ev = self.serialize(short, viewer, vis=vis, bundle=bundle)
            if ev is not None:
                out.append(ev)
        return out

    def _pending_room_state(
        self, short: int, room: int, user_id: str, content: dict[str, Any], unsigned: dict[str, Any]
    ) -> None:
        """spec: m.room.member `unsigned.invite_room_state` / `knock_room_state` — on the viewer's own
        invite or knock while it is pending, the room's stripped state (stripped_state.py) without
        that member event itself."""
        membership = content.get("membership")
        key = PENDING_STATE_KEYS.get(membership) if isinstance(membership, str) else None
        ur = self.db.rooms.user_room(user_id, room) if key is not None else None
        if key is None or ur is None or ur.event != short:
            return
        stored = self.db.rooms.invite_state(user_id, room)
        if stored:
            unsigned[key] = without_member(stored, user_id)

    def _previous_state(
        self, state_before: int, state_key: int, short: int, unsigned: dict[str, Any], vis: Visibility | None
    ) -> None:
        prev = self.db.snapshots.get(state_before, state_key)
        if prev is None or prev == short:
            return
        unsigned["replaces_state"] = self.db.ids.event_id(prev)
        # spec: prev_content only if the client has permission to see the previous event
        if vis is not None and not vis.allows(prev):
            return
        prev_event = self.stored_event(prev)
        if prev_event is None:
            return
        content = prev_event.get("content")
        unsigned["prev_content"] = content if isinstance(content, dict) else {}
        if isinstance(prev_event.get("sender"), str):
            unsigned["prev_sender"] = prev_event["sender"]

    def _bundle(
        self,
        room: int,
        event_id: str,
        event: dict[str, Any],
        redacted: bool,
        viewer: Viewer | None,
        vis: Visibility | None,
        depth: int,
    ) -> dict[str, Any]:
        summary = self.relations.summary(room, event_id)
        if not summary:
            return {}
        out: dict[str, Any] = {}
        if summary.get(REPLACE) and not redacted:
            # spec: event replacements — not bundled with a redacted original
            edit = self.relations.latest_edit(room, event_id, event, vis)
            if edit is not None:
                serialized = self.serialize(edit, viewer, bundle=False, depth=depth + 1)
                if serialized is not None:
                    out[REPLACE] = serialized
        thread = summary.get(THREAD)
        if thread and depth == 0:
            latest = self.relations.latest_thread_event(room, event_id, vis)
            if latest is not None:
                latest_event = self.serialize(latest, viewer, vis=vis, depth=depth + 1)
                if latest_event is not None:
                    out[THREAD] = {
                        "latest_event": latest_event,
                        "count": int(thread.get("count", 0)),
                        "current_user_participated": viewer is not None
                        and self.relations.participated(room, event_id, event, viewer.user_id),
                    }
        if summary.get(REFERENCE):
            refs = self.relations.references(room, event_id, vis)
            if refs:
                out[REFERENCE] = {"chunk": [{"event_id": r} for r in refs]}
        return out
