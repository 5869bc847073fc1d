"""Server-side search of room events (spec: client-server-api modules "Server Side Search").

An inverted index is written with each event (m.room.message `content.body`, m.room.name
`content.name`, m.room.topic `content.topic` and its text/plain `m.topic` body) and pruned when the
event is redacted. A query matches events holding every term (as a word prefix), in rooms the user
may search, through the history visibility rules; results are ranked by term occurrences (exact words
count double) or ordered by recency.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from homeserver.errors import MatrixError
from homeserver.rooms.client_format import EventSerializer, Viewer
from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.indexing import Written
from homeserver.rooms.messages import RoomReader
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.timeline import walk
from homeserver.rooms.tokens import from_relative, parse_counter, position_token, relative_order
from homeserver.rooms.visibility import Visibility, room_access
from storage.batch_view import BatchView
from storage.database import Database

FIELDS = {"content.body": 1, "content.name": 2, "content.topic": 3}
_WORD = re.compile(r"\w+")
MAX_TOKEN_CHARS = 64
MAX_TERMS = 16
MAX_POSTINGS_PER_TERM = 100_000
DEFAULT_LIMIT = 10
MAX_LIMIT = 100


def tokenize(text: str) -> list[str]:
    # ASCII is its own NFKC form, and casefold() is lower() on it: most messages skip both passes
    folded = text.lower() if text.isascii() else unicodedata.normalize("NFKC", text).casefold()
    return [w[:MAX_TOKEN_CHARS] for w in _WORD.findall(folded)]


def indexed_text(event: dict[str, Any]) -> tuple[int, str] | None:
    """(field, text) of the searchable part of an event, if any."""
    content = event.get("content")
    if not isinstance(content, dict) or ("state_key" in event and event.get("state_key") != ""):
        return None
    etype = event.get("type")
    if etype == "m.room.message" and "state_key" not in event:
        body = content.get("body")
        return (1, body) if isinstance(body, str) else None
    if etype == "m.room.name":
        name = content.get("name")
        return (2, name) if isinstance(name, str) else None
    if etype == "m.room.topic":
        parts = [content["topic"]] if isinstance(content.get("topic"), str) else []
        topics = content.get("m.topic")
        if isinstance(topics, list):
            for t in topics:
                if (
                    isinstance(t, dict)
                    and t.get("mimetype", "text/plain") == "text/plain"
                    and isinstance(t.get("body"), str)
                ):
                    parts.append(t["body"])
        return (3, " ".join(parts)) if parts else None
    return None


class _Hit:
    __slots__ = ("order", "rank", "room", "short")

    room: int
    order: int
    short: int
    rank: float

    def __init__(self, room: int, order: int, short: int, rank: float) -> None:
        self.room = room
        self.order = order
        self.short = short
        self.rank = rank


class Search:
    def __init__(self, db: Database, queries: RoomQueries, serializer: EventSerializer, reader: RoomReader) -> None:
        self.db = db
        self.queries = queries
        self.serializer = serializer
        self.reader = reader

    # -- indexing --------------------------------------------------------------------------------

    def on_event(self, view: BatchView, w: Written) -> None:
        found = indexed_text(w.event)
        if found is None:
            return
        field, text = found
        counts: dict[str, int] = {}
        for token in tokenize(text):
            counts[token] = counts.get(token, 0) + 1
        self.db.search_index.put_event(view.batch, counts, w.room, w.order, w.short, field)

    def on_redacted(self, view: BatchView, room: int, short: int, event: dict[str, Any], order: int) -> None:
        found = indexed_text(event)
        if found is not None:
            self.db.search_index.delete_event(view.batch, set(tokenize(found[1])), room, order)

    # -- POST /search ----------------------------------------------------------------------------

    def search(self, viewer: Viewer, criteria: dict[str, Any], next_batch: str | None) -> dict[str, Any]:
        term = str(criteria["search_term"])  # required and a string: the route's model checks it
        keys = criteria.get("keys", list(FIELDS))
        if not isinstance(keys, list) or not keys or any(not isinstance(k, str) or k not in FIELDS for k in keys):
            raise MatrixError(400, "M_INVALID_PARAM", f"keys must be a list drawn from {', '.join(FIELDS)}")
        order_by = criteria.get("order_by", "rank")
        if order_by not in ("rank", "recent"):
            raise MatrixError(400, "M_INVALID_PARAM", "order_by must be 'rank' or 'recent'")
        event_filter = RoomEventFilter.parse(criteria.get("filter"), "room_events.filter")
        limit = min(event_filter.limit or DEFAULT_LIMIT, MAX_LIMIT)
        context = criteria.get("event_context")
        if context is not None:
            if not isinstance(context, dict):
                raise MatrixError(400, "M_BAD_JSON", "room_events.event_context must be an object")
            context = {
                **context,
                "before_limit": _limit(context.get("before_limit"), "before_limit"),
                "after_limit": _limit(context.get("after_limit"), "after_limit"),
            }
        groupings = criteria.get("groupings") or {}
        if not isinstance(groupings, dict) or not isinstance(groupings.get("group_by", []), list):
            raise MatrixError(400, "M_BAD_JSON", "groupings.group_by must be a list")
        group_keys = [str(g.get("key")) for g in groupings.get("group_by", []) if isinstance(g, dict)]
        if any(k not in ("room_id", "sender") for k in group_keys):
            raise MatrixError(400, "M_INVALID_PARAM", "groupings may only use the keys room_id and sender")
        offset, before_order = _parse_batch(next_batch, order_by)

        terms = list(dict.fromkeys(tokenize(term)))[:MAX_TERMS]
        rooms = self._searchable_rooms(viewer.user_id, event_filter)
        hits = self._match(terms, rooms, {FIELDS[k] for k in keys}) if terms and rooms else []
        visible: list[_Hit] = []
        vis_by_room: dict[int, Visibility] = {}
        for hit in hits:
            vis = vis_by_room.get(hit.room)
            if vis is None:
                vis = vis_by_room[hit.room] = Visibility(self.db, viewer.user_id, hit.room)
            if not vis.allows(hit.short):
                continue
            if not event_filter.is_empty:
                event = self.db.events.get_json(hit.short)
                if event is None or not event_filter.allows(event):
                    continue
            visible.append(hit)
        if order_by == "recent":
            visible.sort(key=lambda h: -h.order)
            remaining = [h for h in visible if before_order is None or h.order < before_order]
            page = remaining[:limit]
            more = len(remaining) > limit
            token = f"recent_{relative_order(page[-1].order)}" if more and page else None
        else:
            visible.sort(key=lambda h: (-h.rank, -h.order))
            page = visible[offset : offset + limit]
            more = len(visible) > offset + limit
            token = f"rank_{offset + limit}" if more else None

        results = []
        for hit in page:
            vis = vis_by_room[hit.room]
            result: dict[str, Any] = {"rank": hit.rank, "result": self.serializer.serialize(hit.short, viewer, vis=vis)}
            if context is not None:
                result["context"] = self._context(viewer, hit, vis, context)
            results.append(result)
        out: dict[str, Any] = {"count": len(visible), "highlights": terms, "results": results}
        if token is not None:
            out["next_batch"] = token
        if group_keys:
            out["groups"] = self._groups(page, group_keys)
        if criteria.get("include_state"):
            out["state"] = self._state(viewer, {h.room for h in page})
        return out

    def _searchable_rooms(self, user_id: str, event_filter: RoomEventFilter) -> set[int]:
        # spec: search covers rooms the user is or has been in, except those they forgot
        rooms = set()
        for ur in self.queries.memberships(user_id):
            if ur.membership not in ("join", "leave", "ban"):
                continue
            if ur.membership != "join" and self.db.room_extras.is_forgotten(user_id, ur.room):
                continue
            if event_filter.allows_room(self.queries.room_id(ur.room)):
                rooms.add(ur.room)
        return rooms

    def _match(self, terms: list[str], rooms: set[int], fields: set[int]) -> list[_Hit]:
        combined: dict[int, _Hit] | None = None
        for term in terms:
            found: dict[int, _Hit] = {}
            for i, p in enumerate(self.db.search_index.scan(term)):
                if i >= MAX_POSTINGS_PER_TERM:
                    break
                if p.room not in rooms or p.field not in fields:
                    continue
                score = p.count * (2.0 if p.token == term else 1.0)
                hit = found.get(p.event)
                if hit is None:
                    found[p.event] = _Hit(p.room, p.order, p.event, score)
                else:
                    hit.rank += score
            if combined is None:
                combined = found
            else:
                combined = {
                    k: _Hit(h.room, h.order, h.short, h.rank + found[k].rank) for k, h in combined.items() if k in found
                }
            if not combined:
                return []
        return list((combined or {}).values())

    def _context(self, viewer: Viewer, hit: _Hit, vis: Visibility, options: dict[str, Any]) -> dict[str, Any]:
        n_before, n_after = options["before_limit"], options["after_limit"]
        before = walk(self.db.rooms, self.db.events, hit.room, hit.order - 1, forwards=False, limit=n_before, vis=vis)
        after = walk(self.db.rooms, self.db.events, hit.room, hit.order, forwards=True, limit=n_after, vis=vis)
        ctx: dict[str, Any] = {
            "events_before": self.serializer.serialize_many([s for _, s in before.events], viewer, vis=vis),
            "events_after": self.serializer.serialize_many([s for _, s in after.events], viewer, vis=vis),
            "start": position_token(before.position),
            "end": position_token(after.position),
        }
        if options.get("include_profile"):
            meta = self.db.events.get_meta(hit.short)
            senders = {e["sender"] for e in (*ctx["events_before"], *ctx["events_after"])}
            event = self.db.events.get_json(hit.short) or {}
            senders.add(event.get("sender", ""))
            profiles: dict[str, Any] = {}
            for member in self.reader.member_state(meta.state_after if meta else 0, sorted(senders), viewer, vis):
                content = member.get("content") or {}
                profiles[member["state_key"]] = {
                    k: content[k] for k in ("displayname", "avatar_url") if isinstance(content.get(k), str)
                }
            ctx["profile_info"] = profiles
        return ctx

    def _groups(self, page: list[_Hit], keys: list[str]) -> dict[str, Any]:
        groups: dict[str, Any] = {}
        for key in keys:
            by_value: dict[str, dict[str, Any]] = {}
            for hit in page:
                event = self.db.events.get_json(hit.short) or {}
                value = self.db.ids.room_id(hit.room) if key == "room_id" else str(event.get("sender", ""))
                group = by_value.setdefault(value, {"order": len(by_value) + 1, "results": []})
                group["results"].append(self.db.ids.event_id(hit.short))
            groups[key] = by_value
        return groups

    def _state(self, viewer: Viewer, rooms: set[int]) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for room in rooms:
            access = room_access(self.db, viewer.user_id, room)
            snapshot = access.state_snapshot(self.db)
            if snapshot:
                vis = Visibility(self.db, viewer.user_id, room, access)
                out[self.db.ids.room_id(room)] = self.reader.state_events(snapshot, viewer, vis)
        return out


def _limit(value: Any, name: str) -> int:
    if value is None:
        return 5  # spec: event_context before_limit / after_limit default to 5
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MatrixError(400, "M_BAD_JSON", f"event_context.{name} must be a non-negative integer")
    return min(value, 100)


def _parse_batch(token: str | None, order_by: str) -> tuple[int, int | None]:
    """(offset, order bound) from a next_batch token of the same ordering."""
    if token is None:
        return 0, None
    kind, _, value = token.partition("_")
    negative = kind == "recent" and value.startswith("-")  # `recent_` names a timeline order, maybe backfilled
    number = parse_counter(value[1:] if negative else value)
    if number is None or kind != order_by:
        raise MatrixError(400, "M_INVALID_PARAM", "next_batch is not a token from this search")
    if kind == "rank":
        return number, None
    return 0, from_relative(-number if negative else number)
