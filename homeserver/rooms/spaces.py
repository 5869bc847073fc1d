"""Room summaries and the space hierarchy (spec: client-server-api GET /v1/room_summary/{roomIdOrAlias},
modules "Spaces" — GET /v1/rooms/{roomId}/hierarchy).

A room is shown to a user who is joined or invited, or who could join or knock (public, knock or
a restricted room whose conditions they meet), or when it is world-readable. Child rooms this
server does not know are asked of a server in the child's `via` (spec: server-server-api "Spaces",
GET /_matrix/federation/v1/hierarchy/{roomId}), and the same rule applied to the answer; other
servers asking us get the rooms they could peek or join (`server_hierarchy`).
"""

from __future__ import annotations

from typing import Any, Protocol

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.protocol.events import content_of
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.stripped_state import stripped_state
from homeserver.rooms.tokens import parse_counter
from storage.rooms import RoomStore
from storage.shortids import ShortIds
from storage.state_snapshots import StateSnapshots

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
DEFAULT_MAX_DEPTH = 10
MAX_ROOMS = 1000  # rooms visited per request at most


MAX_REMOTE_ASKS = 20  # /hierarchy requests to other servers per client request at most
JOINABLE = ("public", "knock", "knock_restricted")


class RemoteHierarchy(Protocol):
    """spec: server-server-api GET /hierarchy/{roomId}: {room, children, inaccessible_children}
    from the first of `servers` that answers, None when none does."""

    async def hierarchy(self, servers: list[str], room_id: str, *, suggested_only: bool) -> dict[str, Any] | None: ...


def _ordered(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """m.space.child events in the spec's order ("Ordering of children"): valid `order` first,
    then by origin_server_ts, then by room id."""
    keyed = []
    for child in found:
        order = content_of(child).get("order")
        ts = child.get("origin_server_ts")
        ts = ts if isinstance(ts, int) and not isinstance(ts, bool) else 0
        key = (0, order, ts, child["state_key"]) if _valid_order(order) else (1, "", ts, child["state_key"])
        keyed.append((key, child))
    keyed.sort(key=lambda item: item[0])
    return [child for _, child in keyed]


def _via(child: dict[str, Any]) -> list[str]:
    via = content_of(child).get("via")
    return [v for v in via if isinstance(v, str) and v][:10] if isinstance(via, list) else []


def _valid_order(value: Any) -> bool:
    # spec: m.space.child "order" — at most 50 characters of U+0020 to U+007E
    return isinstance(value, str) and len(value) <= 50 and all(" " <= c <= "~" for c in value)


class Spaces:
    def __init__(
        self, ids: ShortIds, rooms: RoomStore, snapshots: StateSnapshots, queries: RoomQueries, directory: RoomDirectory
    ) -> None:
        self.ids = ids
        self.rooms = rooms
        self.snapshots = snapshots
        self.queries = queries
        self.directory = directory
        self.remote: RemoteHierarchy | None = None  # federation's; set when it is on

    def accessible(self, user_id: str | None, room: int) -> bool:
        """The hierarchy's rule for showing a room (spec: GET /hierarchy "rooms")."""
        join_rules = content_of(self.directory.served_state(room, "m.room.join_rules"))
        rule = join_rules.get("join_rule")
        if rule in ("public", "knock", "knock_restricted"):
            return True
        hv = content_of(self.directory.served_state(room, "m.room.history_visibility")).get("history_visibility")
        if hv == "world_readable":
            return True
        if user_id is None:
            return False
        if self.queries.current_membership(user_id, room) in ("join", "invite"):
            return True
        if rule == "restricted":
            allow = join_rules.get("allow")
            for condition in allow if isinstance(allow, list) else []:
                other_id = condition.get("room_id") if isinstance(condition, dict) else None
                other = self.queries.room(other_id) if isinstance(other_id, str) else None
                if other is not None and self.queries.is_joined(user_id, other):
                    return True
        return False

    def summary(self, room: int) -> dict[str, Any]:
        out = self.directory.summary(room)
        out["room_version"] = self.queries.room_version(room).identifier
        algorithm = content_of(self.directory.served_state(room, "m.room.encryption")).get("algorithm")
        if isinstance(algorithm, str):
            out["encryption"] = algorithm
        join_rules = content_of(self.directory.served_state(room, "m.room.join_rules"))
        if join_rules.get("join_rule") in ("restricted", "knock_restricted"):
            allow = join_rules.get("allow")
            allowed = [
                c["room_id"]
                for c in (allow if isinstance(allow, list) else [])
                if isinstance(c, dict) and c.get("type") == "m.room_membership" and isinstance(c.get("room_id"), str)
            ]
            if allowed:
                out["allowed_room_ids"] = allowed
        return out

    # -- GET /v1/room_summary/{roomIdOrAlias} ----------------------------------------------------

    def room_summary(self, user_id: str | None, room_id_or_alias: str) -> dict[str, Any]:
        if room_id_or_alias.startswith("#"):
            room_id = self.directory.room_id_of(room_id_or_alias)
        elif room_id_or_alias.startswith("!"):
            room_id = room_id_or_alias
        else:
            raise MatrixError(400, "M_INVALID_PARAM", f"{room_id_or_alias!r} is neither a room id nor an alias")
        room = self.queries.known_room(room_id)
        if room is None or not self.accessible(user_id, room):
            raise not_found(f"Room {room_id_or_alias} not found, or you may not see it")
        out = self.summary(room)
        if user_id is not None:
            membership = self.queries.current_membership(user_id, room)
            if membership is not None:
                out["membership"] = membership
        return out

    # -- GET /v1/rooms/{roomId}/hierarchy --------------------------------------------------------

    async def hierarchy(
        self,
        user_id: str,
        room_id: str,
        *,
        suggested_only: bool,
        max_depth: int | None,
        limit: int | None,
        from_token: str | None,
    ) -> dict[str, Any]:
        depth_limit = DEFAULT_MAX_DEPTH if max_depth is None else min(max_depth, DEFAULT_MAX_DEPTH)
        offset = 0
        if from_token is not None:
            parts = from_token.split("_")
            numbers = [parse_counter(p) for p in parts[1:]]
            if len(parts) != 4 or parts[0] != "h" or None in numbers:
                raise MatrixError(400, "M_INVALID_PARAM", "from is not a token from /hierarchy")
            offset, token_depth, token_suggested = int(parts[1]), int(parts[2]), parts[3] == "1"
            if token_depth != depth_limit or token_suggested != suggested_only:
                raise MatrixError(400, "M_INVALID_PARAM", "suggested_only and max_depth cannot change while paginating")
        limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)
        root = self.queries.known_room(room_id) if room_id.startswith("!") else None
        if root is None or not self.accessible(user_id, root):
            raise forbidden("You cannot view this room's hierarchy (unknown room, or not visible to you)")
        rooms = await self._walk(user_id, root, suggested_only=suggested_only, max_depth=depth_limit)
        body: dict[str, Any] = {"rooms": rooms[offset : offset + limit]}
        if offset + limit < len(rooms):
            body["next_batch"] = f"h_{offset + limit}_{depth_limit}_{int(suggested_only)}"
        return body

    async def _walk(self, user_id: str, root: int, *, suggested_only: bool, max_depth: int) -> list[dict[str, Any]]:
        """Depth-first over m.space.child events (spec: "Paginates over the space tree in a depth-first
        manner"); a child this server does not know is asked of its `via` servers."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()
        given: dict[str, dict[str, Any]] = {}  # summaries of remote children a remote answer gave
        asks = [MAX_REMOTE_ASKS]
        stack: list[tuple[str, list[str], int]] = [(self.queries.room_id(root), [], 0)]
        while stack and len(out) < MAX_ROOMS:
            room_id, via, depth = stack.pop()
            if room_id in seen:
                continue
            seen.add(room_id)
            room = self.queries.room(room_id)
            if room is not None and self.rooms.info(room) is not None:
                entry = self.summary(room)
                children = [c for c, _ in self._children(room)] if entry.get("room_type") == "m.space" else []
                if room_id != self.queries.room_id(root) and not self.accessible(user_id, room):
                    continue
            else:
                found = await self._remote_room(room_id, via, given, asks, suggested_only, deep=depth < max_depth)
                if found is None or not self.remote_accessible(user_id, found[0]):
                    continue
                entry, children = found
            entry["children_state"] = children
            out.append(entry)
            if depth >= max_depth:
                continue
            next_rooms = []
            for child in children:
                if suggested_only and content_of(child).get("suggested") is not True:
                    continue
                if child["state_key"] not in seen:
                    next_rooms.append((child["state_key"], _via(child), depth + 1))
            stack.extend(reversed(next_rooms))
        return out

    async def _remote_room(
        self,
        room_id: str,
        via: list[str],
        given: dict[str, dict[str, Any]],
        asks: list[int],
        suggested_only: bool,
        *,
        deep: bool,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
        """A room we do not know: its summary and (for a space we go into) its children, from what a
        parent's answer gave or from a `via` server."""
        known = given.get(room_id)
        if known is not None and (known.get("room_type") != "m.space" or not deep):
            return dict(known), []
        if self.remote is None or not via or asks[0] <= 0:
            return (dict(known), []) if known is not None else None
        asks[0] -= 1
        answer = await self.remote.hierarchy(via, room_id, suggested_only=suggested_only)
        if answer is None:
            return (dict(known), []) if known is not None else None
        for child in answer["children"]:
            given.setdefault(child["room_id"], child)
        entry = {k: v for k, v in answer["room"].items() if k != "children_state"}
        children = [c for c in answer["room"]["children_state"] if _via(c)]  # spec: no via, not a child
        return entry, _ordered(children) if entry.get("room_type") == "m.space" else []

    def remote_accessible(self, user_id: str, entry: dict[str, Any]) -> bool:
        """`accessible` for a room known only by another server's summary of it."""
        if entry.get("join_rule") in JOINABLE or entry.get("world_readable") is True:
            return True
        room = self.queries.room(str(entry.get("room_id")))
        if room is not None and self.queries.current_membership(user_id, room) in ("join", "invite"):
            return True
        if entry.get("join_rule") == "restricted":
            allowed = entry.get("allowed_room_ids")
            for other_id in allowed if isinstance(allowed, list) else []:
                other = self.queries.room(other_id) if isinstance(other_id, str) else None
                if other is not None and self.queries.is_joined(user_id, other):
                    return True
        return False

    # -- GET /_matrix/federation/v1/hierarchy/{roomId} -------------------------------------------

    def server_may_see(self, server: str, room: int) -> bool:
        """Whether another server could peek or join a room (spec: server-server-api "Spaces"):
        joinable by anyone or by knocking, world-readable, restricted to a room the server is in,
        or a room the server is in already."""
        join_rules = content_of(self.directory.served_state(room, "m.room.join_rules"))
        rule = join_rules.get("join_rule")
        if rule in JOINABLE:
            return True
        hv = content_of(self.directory.served_state(room, "m.room.history_visibility")).get("history_visibility")
        if hv == "world_readable" or server in self.queries.servers_in_room(room):
            return True
        if rule == "restricted":
            allow = join_rules.get("allow")
            for condition in allow if isinstance(allow, list) else []:
                other_id = condition.get("room_id") if isinstance(condition, dict) else None
                other = self.queries.room(other_id) if isinstance(other_id, str) else None
                if other is not None and server in self.queries.servers_in_room(other):
                    return True
        return False

    def server_hierarchy(self, server: str, room_id: str, *, suggested_only: bool) -> dict[str, Any]:
        """The space and its children as `server` may see them; rooms we know nothing about are left
        out, those it may not see are listed in `inaccessible_children`."""
        room = self.queries.known_room(room_id) if room_id.startswith("!") else None
        if room is None or self.rooms.info(room) is None or not self.server_may_see(server, room):
            raise not_found(f"Room {room_id} is not known here, or {server} may not see it")
        entry = self.summary(room)
        children = self._children(room) if entry.get("room_type") == "m.space" else []
        entry["children_state"] = [child for child, _ in children]
        shown: list[dict[str, Any]] = []
        inaccessible: list[str] = []
        for child, child_room in children:
            if suggested_only and content_of(child).get("suggested") is not True:
                continue
            if child_room is None or self.rooms.info(child_room) is None:
                continue
            if self.server_may_see(server, child_room):
                shown.append(self.summary(child_room))
            else:
                inaccessible.append(child["state_key"])
        return {"room": entry, "children": shown, "inaccessible_children": inaccessible}

    def _children(self, room: int) -> list[tuple[dict[str, Any], int | None]]:
        """A space's m.space.child events (with `via`), in the spec's order ("Ordering of children")."""
        info = self.rooms.info(room) or {}
        state = self.snapshots.load(int(info.get("state", 0))) if info.get("state") else {}
        found = []
        for sk, short in state.items():
            etype, state_key = self.ids.state_key_of(sk)
            if etype != "m.space.child":
                continue
            event = self.directory.serializer.stored_event(short)
            via = content_of(event).get("via")
            if event is None or not isinstance(via, list) or not via:
                continue  # spec: a child without via is not a child
            child = stripped_state(event)
            child["origin_server_ts"] = event.get("origin_server_ts", 0)
            found.append((child, state_key))
        ordered = _ordered([child for child, _ in found])
        return [(child, self.queries.room(child["state_key"])) for child in ordered]
