"""Relationships between events: the parent -> children index, aggregations, /relations and /threads.

spec: client-server-api "Forming relationships between events", "Aggregations of child events",
"Relationships API"; modules "Event replacements" (m.replace), "Threading" (m.thread), "Reference
relations" (m.reference), "Event annotations" (m.annotation: not aggregated; duplicates refused).

Children are indexed when they are written (inside the pipeline's batch) and dropped when they are
redacted ("when a child event is redacted then the relationship is broken").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from homeserver.errors import MatrixError
from homeserver.protocol.events import content_of
from homeserver.rooms.indexing import BatchEvents, Written, relates_to
from homeserver.rooms.visibility import Visibility
from storage.batch_view import BatchView
from storage.database import Database
from storage.event_relations import Child

THREAD = "m.thread"
REPLACE = "m.replace"
REFERENCE = "m.reference"
ANNOTATION = "m.annotation"
# spec: GET /relations "recurse" — servers SHOULD traverse at least 3 levels
RECURSION_DEPTH = 3


class RelationsPage:
    __slots__ = ("events", "next_order")

    events: list[int]  # short ids, in the requested direction
    next_order: int | None  # order of the last event returned when more follow (None: no more)

    def __init__(self, events: list[int], next_order: int | None) -> None:
        self.events = events
        self.next_order = next_order


class Relations:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- indexing (inside the pipeline's batch) --------------------------------------------------

    def on_event(self, view: BatchView, events: BatchEvents, w: Written) -> None:
        rel = relates_to(w.event)
        if rel is None:
            return
        rel_type, parent_id = rel
        relation = w.content.get("m.relates_to") or {}
        key = relation.get("key") if rel_type == ANNOTATION else None
        child = Child(
            order=w.order,
            rel_type=rel_type,
            short=w.short,
            type=w.type,
            sender=w.sender,
            key=key if isinstance(key, str) else None,
            new_content=isinstance(w.content.get("m.new_content"), dict),
        )
        store = self.db.relations
        store.add_child(view, w.room, parent_id, child)
        summary = store.summary(w.room, parent_id, view) or {}
        if rel_type == THREAD:
            thread = summary.get(THREAD) or {"count": 0, "latest": 0}
            old_latest = thread["latest"]
            thread = {"count": thread["count"] + 1, "latest": max(old_latest, w.order)}
            summary[THREAD] = thread
            if thread["latest"] != old_latest:
                store.move_thread(view, w.room, parent_id, old_latest, thread["latest"])
            store.set_thread_users(view, w.room, parent_id, {w.sender}, set())
        else:
            summary[rel_type] = int(summary.get(rel_type, 0)) + 1
        store.put_summary(view, w.room, parent_id, summary)

    def on_redacted(self, view: BatchView, room: int, short: int, event: dict[str, Any], order: int) -> None:
        """A child lost its relationship (redacted): drop it from the index and the parent's summary."""
        rel = relates_to(event)
        if rel is None:
            return
        rel_type, parent_id = rel
        store = self.db.relations
        store.remove_child(view, room, parent_id, rel_type, order)
        summary = store.summary(room, parent_id, view) or {}
        if rel_type == THREAD:
            old = summary.get(THREAD) or {"count": 0, "latest": 0}
            remaining = list(store.children(room, parent_id, THREAD, reader=view))
            latest = max((c.order for c in remaining), default=0)
            if latest != old["latest"]:
                store.move_thread(view, room, parent_id, old["latest"], latest or None)
            users = {c.sender for c in remaining}
            store.set_thread_users(view, room, parent_id, users, store.thread_users(view, room, parent_id))
            if remaining:
                summary[THREAD] = {"count": len(remaining), "latest": latest}
            else:
                summary.pop(THREAD, None)
        else:
            count = int(summary.get(rel_type, 0)) - 1
            if count > 0:
                summary[rel_type] = count
            else:
                summary.pop(rel_type, None)
        store.put_summary(view, room, parent_id, summary)

    # -- checks before sending ---------------------------------------------------------------------

    def check_new_relation(self, room: int, sender: str, event_type: str, content: dict[str, Any]) -> None:
        """Refuse a local event whose relationship breaks its rel_type's rules (400)."""
        rel = relates_to({"content": content})
        if rel is None:
            return
        rel_type, parent_id = rel
        if rel_type == THREAD:
            # spec: threading "Validation of m.thread relationships" — not off an event with m.relates_to
            parent = self.db.ids.event(parent_id)
            parent_ev = self.db.events.get_json(parent) if parent is not None else None
            if "m.relates_to" in content_of(parent_ev):
                raise MatrixError(400, "M_UNKNOWN", "cannot start a thread from an event that has a relationship")
        elif rel_type == ANNOTATION:
            # spec: event annotations "Avoiding duplicate annotations"
            key = (content.get("m.relates_to") or {}).get("key")
            for child in self.db.relations.children(room, parent_id, ANNOTATION):
                if child.sender == sender and child.type == event_type and child.key == key:
                    raise MatrixError(400, "M_DUPLICATE_ANNOTATION", "you already sent this annotation to that event")

    # -- aggregations ----------------------------------------------------------------------------

    def summary(self, room: int, event_id: str) -> dict[str, Any] | None:
        return self.db.relations.summary(room, event_id)

    def latest_edit(self, room: int, event_id: str, original: dict[str, Any], vis: Visibility | None) -> int | None:
        """The most recent valid replacement of `original` (spec: event replacements "Validity of
        replacement events"; most recent by origin_server_ts, then the larger event id)."""
        if "state_key" in original:
            return None
        rel = relates_to(original)
        if rel is not None and rel[0] == REPLACE:
            return None  # an edit of an edit is not valid
        best: tuple[int, str, int] | None = None
        for child in self.db.relations.children(room, event_id, REPLACE):
            if child.sender != original.get("sender") or child.type != original.get("type"):
                continue
            if not child.new_content and child.type != "m.room.encrypted":
                continue
            if vis is not None and not vis.allows(child.short):
                continue
            edit = self.db.events.get_json(child.short) or {}
            ts = edit.get("origin_server_ts")
            candidate = (ts if isinstance(ts, int) else 0, self.db.ids.event_id(child.short), child.short)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        return best[2] if best is not None else None

    def references(self, room: int, event_id: str, vis: Visibility | None) -> list[str]:
        return [
            self.db.ids.event_id(c.short)
            for c in self.db.relations.children(room, event_id, REFERENCE)
            if vis is None or vis.allows(c.short)
        ]

    def latest_thread_event(self, room: int, root_id: str, vis: Visibility | None) -> int | None:
        for child in self.db.relations.children(room, root_id, THREAD, reverse=True):
            if vis is None or vis.allows(child.short):
                return child.short
        return None

    def participated(self, room: int, root_id: str, root: dict[str, Any], user_id: str) -> bool:
        # spec: threading — the sender of the root, or of an event with an m.thread relation to it
        return root.get("sender") == user_id or self.db.relations.thread_participant(room, root_id, user_id)

    # -- GET /relations --------------------------------------------------------------------------

    def page(
        self,
        room: int,
        parent_id: str,
        *,
        rel_type: str | None,
        event_type: str | None,
        from_order: int | None,
        to_order: int | None,
        forwards: bool,
        limit: int,
        recurse: bool,
        vis: Visibility,
    ) -> RelationsPage:
        found = self._collect(room, parent_id, rel_type, event_type, recurse)
        ordered = sorted(found, reverse=not forwards)
        events: list[int] = []
        next_order: int | None = None
        last_order = 0
        for order, short in ordered:
            if forwards:
                if (from_order is not None and order <= from_order) or (to_order is not None and order > to_order):
                    continue
            elif (from_order is not None and order > from_order) or (to_order is not None and order <= to_order):
                continue
            if not vis.allows(short):
                continue
            if len(events) == limit:
                next_order = last_order
                break
            events.append(short)
            last_order = order
        return RelationsPage(events, next_order)

    def _collect(
        self, room: int, parent_id: str, rel_type: str | None, event_type: str | None, recurse: bool
    ) -> set[tuple[int, int]]:
        found: set[tuple[int, int]] = set()
        frontier = [parent_id]
        seen = {parent_id}
        for _ in range(RECURSION_DEPTH if recurse else 1):
            nxt: list[str] = []
            for pid in frontier:
                for child in self._matching(room, pid, rel_type, event_type):
                    if (child.order, child.short) in found:
                        continue
                    found.add((child.order, child.short))
                    cid = self.db.ids.event_id(child.short)
                    if cid not in seen:
                        seen.add(cid)
                        nxt.append(cid)
            frontier = nxt
            if not frontier:
                break
        return found

    def _matching(self, room: int, parent_id: str, rel_type: str | None, event_type: str | None) -> Iterable[Child]:
        for child in self.db.relations.children(room, parent_id, rel_type):
            if event_type is None or child.type == event_type:
                yield child

    # -- GET /threads ----------------------------------------------------------------------------

    def thread_roots(
        self, room: int, user_id: str, *, participated_only: bool, from_order: int | None, limit: int, vis: Visibility
    ) -> tuple[list[int], int | None]:
        """Thread roots by latest reply, newest first; and the order to continue from (None: done)."""
        roots: list[int] = []
        before = from_order + 1 if from_order is not None else None
        last = 0
        for latest, root_id in self.db.relations.threads(room, before=before):
            short = self.db.ids.event(root_id)
            if short is None or not vis.allows(short):
                continue
            root = self.db.events.get_json(short) or {}
            if participated_only and not self.participated(room, root_id, root, user_id):
                continue
            if len(roots) == limit:
                return roots, last
            roots.append(short)
            last = latest
        return roots, None
