"""Redactions: deciding when an accepted `m.room.redaction` applies to its target, recording it, and
redacting served copies.

spec: client-server-api "Redactions"; rooms/v3 "Handling redactions": a redaction is applied once
both events are known, when the senders' servers match or the redaction's sender has the `redact`
power level (at the redaction). The stored event stays as it was; served copies are redacted with the
room version's algorithm and carry the redaction as `unsigned.redacted_because`. Relations and search
postings of a redacted event are dropped (listeners), so aggregations and search forget it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.protocol.auth_rules_common import server_of
from homeserver.protocol.power_levels import get_named_level, get_user_power_level
from homeserver.protocol.redaction import redact
from homeserver.protocol.room_versions import RoomVersion
from homeserver.rooms.indexing import BatchEvents, Written
from homeserver.rooms.tokens import order_of
from storage.batch_view import BatchView
from storage.database import Database

# (view, room, target short, the target as stored, its timeline order)
RedactedListener = Callable[[BatchView, int, int, dict[str, Any], int], None]


def redacts_of(event: dict[str, Any]) -> str | None:
    """The event id a redaction targets: `content.redacts` (rooms v11+) or the top-level `redacts`."""
    content = event.get("content")
    target = content.get("redacts") if isinstance(content, dict) else None
    if not isinstance(target, str):
        target = event.get("redacts")
    return target if isinstance(target, str) else None


def redaction_allowed_by_power(db: Database, rv: RoomVersion, state: int, sender: str) -> bool:
    """Whether `sender` has the `redact` level in the state snapshot `state`."""
    pl_sk = db.ids.state_key("m.room.power_levels", "")
    create_sk = db.ids.state_key("m.room.create", "")
    pl_short = db.snapshots.get(state, pl_sk) if pl_sk is not None and state else None
    create_short = db.snapshots.get(state, create_sk) if create_sk is not None and state else None
    pl = db.events.get_json(pl_short) if pl_short is not None else None
    create = db.events.get_json(create_short) if create_short is not None else None
    return get_user_power_level(sender, pl, create, rv) >= get_named_level(pl, "redact", rv)


class Redactions:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.listeners: list[RedactedListener] = []

    # -- indexing (inside the pipeline's batch) --------------------------------------------------

    def on_event(self, view: BatchView, events: BatchEvents, w: Written) -> bool:
        """Record redactions made possible by `w`; True if `w` itself is now redacted."""
        store = self.db.redactions
        if w.type == "m.room.redaction":
            target_id = redacts_of(w.event)
            if target_id is not None and target_id != w.event_id:
                target = events.short(target_id)
                if target is None:
                    store.add_pending(view, target_id, w.short)
                else:
                    self._try_apply(view, events, target, w.short, w.rv)
        if w.fresh:
            return False  # no redaction can name an event id nobody has seen yet
        redacted = store.redacted_by(w.short, view) is not None
        waiting = store.pending_for(w.event_id, view)
        if waiting:
            store.drop_pending(view, w.event_id)
            for redaction in waiting:
                if not redacted and self._try_apply(view, events, w.short, redaction, w.rv, notify=False):
                    redacted = True
        return redacted

    def _try_apply(
        self, view: BatchView, events: BatchEvents, target: int, redaction: int, rv: RoomVersion, *, notify: bool = True
    ) -> bool:
        store = self.db.redactions
        if store.redacted_by(target, view) is not None:
            return False  # the first valid redaction wins; the event is redacted once
        target_ev, target_meta = events.json(target), events.meta(target)
        red_ev, red_meta = events.json(redaction), events.meta(redaction)
        if target_ev is None or target_meta is None or red_ev is None or red_meta is None:
            return False
        if target_meta.room != red_meta.room or target_meta.rejected:
            return False
        sender = red_ev.get("sender")
        if not isinstance(sender, str):
            return False
        same_server = server_of(sender) == server_of(target_ev.get("sender"))
        if not same_server and not redaction_allowed_by_power(self.db, rv, red_meta.state_before, sender):
            return False
        store.set_redacted(view, target, redaction)
        if notify and target_meta.stream:
            for listener in self.listeners:
                listener(view, target_meta.room, target, target_ev, order_of(target_meta))
        return True

    # -- serving ---------------------------------------------------------------------------------

    def redaction_of(self, short: int) -> int | None:
        return self.db.redactions.redacted_by(short)

    @staticmethod
    def redacted_copy(event: dict[str, Any], rv: RoomVersion) -> dict[str, Any]:
        return redact(event, rv)
