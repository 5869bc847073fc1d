"""The public room directory and space hierarchies across servers.

spec: server-server-api "Public Room Directory" (GET/POST /_matrix/federation/v1/publicRooms) and
"Spaces" (GET /_matrix/federation/v1/hierarchy/{roomId}).

Served here from the room services; asked of other servers by `RemoteDirectory`, whose answers
are the peer's input: checked for shape, and failures made Matrix errors for our client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from federation.client import FederationClient, FederationError, Unreachable, path_of
from homeserver.api.http import Router, json_response, query_bool, query_int
from homeserver.errors import MatrixError, not_found
from homeserver.validation import validate

if TYPE_CHECKING:
    from federation.service import Federation
    from homeserver.rooms.directory import RoomDirectory
    from homeserver.rooms.spaces import Spaces

DIRECTORY_TIMEOUT_S = 15.0
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class _Filter(BaseModel):
    model_config = ConfigDict(extra="allow")
    generic_search_term: str | None = None
    room_types: list[str | None] | None = None


class PublicRoomsBody(BaseModel):
    """spec: POST /publicRooms over federation; third-party networks change nothing here."""

    model_config = ConfigDict(extra="allow")
    limit: int | None = Field(default=None, ge=1)
    since: str | None = None
    filter: _Filter | None = None
    include_all_networks: bool = False
    third_party_instance_id: str | None = None


# -- serving ---------------------------------------------------------------------------------------


def register(router: Router, fed: Federation, directory: RoomDirectory, spaces: Spaces) -> None:
    from federation.api import authenticate

    async def public_rooms_get(request: web.Request) -> web.Response:
        await authenticate(fed, request, 0)
        limit = query_int(request, "limit", None, minimum=1)
        return json_response(directory.public_rooms(limit=limit, since=request.query.get("since") or None, server=None))

    async def public_rooms_post(request: web.Request) -> web.Response:
        _, content = await authenticate(fed, request, 64 * 1024)
        body = validate(PublicRoomsBody, content if content is not None else {})
        search = body.filter or _Filter()
        answer = directory.public_rooms(
            limit=body.limit,
            since=body.since or None,
            server=None,
            search_term=search.generic_search_term or None,
            room_types=search.room_types,
        )
        return json_response(answer)

    async def hierarchy(request: web.Request) -> web.Response:
        origin, _ = await authenticate(fed, request, 0)
        room_id = request.match_info["roomId"]
        if not fed.acl_allows(room_id, origin):
            raise MatrixError(403, "M_FORBIDDEN", f"{origin} is denied by the server ACL of {room_id}")
        suggested_only = query_bool(request, "suggested_only", False)
        return json_response(spaces.server_hierarchy(origin, room_id, suggested_only=suggested_only))

    router.add("GET", "/_matrix/federation/v1/publicRooms", public_rooms_get)
    router.add("POST", "/_matrix/federation/v1/publicRooms", public_rooms_post)
    router.add("GET", "/_matrix/federation/v1/hierarchy/{roomId}", hierarchy)


# -- asking ----------------------------------------------------------------------------------------


def _room(entry: dict[str, Any]) -> dict[str, Any]:
    """A room entry with the fields the spec requires ("PublishedRoomsChunk") of the right types:
    a peer's missing or wrong ones are given their neutral value."""
    out = dict(entry)
    members = out.get("num_joined_members")
    out["num_joined_members"] = members if isinstance(members, int) and not isinstance(members, bool) else 0
    for flag in ("world_readable", "guest_can_join"):
        out[flag] = out.get(flag) is True
    return out


def _rooms(value: Any) -> list[dict[str, Any]]:
    """The room entries of an answer that are objects with a room id (others are dropped)."""
    if not isinstance(value, list):
        return []
    return [_room(r) for r in value if isinstance(r, dict) and isinstance(r.get("room_id"), str)]


class RemoteDirectory:
    def __init__(self, client: FederationClient) -> None:
        self.client = client

    async def public_rooms(
        self,
        server: str,
        *,
        limit: int | None,
        since: str | None,
        search_term: str | None = None,
        room_types: list[str | None] | None = None,
    ) -> dict[str, Any]:
        """Another server's published rooms (spec: client-server-api GET /publicRooms `server`)."""
        base = path_of("_matrix", "federation", "v1", "publicRooms")
        try:
            if search_term is None and room_types is None:
                query: dict[str, Any] = {}
                if limit is not None:
                    query["limit"] = str(limit)
                if since is not None:
                    query["since"] = since
                path = path_of("_matrix", "federation", "v1", "publicRooms", query=query)
                answer = await self.client.request(
                    server, "GET", path, timeout=DIRECTORY_TIMEOUT_S, max_bytes=MAX_ANSWER_BYTES
                )
            else:
                content: dict[str, Any] = {"filter": {}}
                if search_term is not None:
                    content["filter"]["generic_search_term"] = search_term
                if room_types is not None:
                    content["filter"]["room_types"] = room_types
                if limit is not None:
                    content["limit"] = limit
                if since is not None:
                    content["since"] = since
                answer = await self.client.request(
                    server, "POST", base, content=content, timeout=DIRECTORY_TIMEOUT_S, max_bytes=MAX_ANSWER_BYTES
                )
        except FederationError as e:
            raise MatrixError(
                502, "M_UNKNOWN", f"{server} answered {e.status} {e.errcode or ''}: {e.message}"
            ) from None
        except Unreachable as e:
            raise not_found(f"The room directory of {server} could not be reached: {e}") from None
        if not isinstance(answer, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered /publicRooms without an object")
        out: dict[str, Any] = {"chunk": _rooms(answer.get("chunk"))}
        for key in ("next_batch", "prev_batch"):
            if isinstance(answer.get(key), str):
                out[key] = answer[key]
        total = answer.get("total_room_count_estimate")
        if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
            out["total_room_count_estimate"] = total
        return out

    async def hierarchy(self, servers: list[str], room_id: str, *, suggested_only: bool) -> dict[str, Any] | None:
        """The first answer of `servers` to `/hierarchy/{room_id}` ({room, children,
        inaccessible_children}, shape-checked), None when none of them could give one."""
        path = path_of(
            "_matrix",
            "federation",
            "v1",
            "hierarchy",
            room_id,
            query={"suggested_only": "true" if suggested_only else "false"},
        )
        for server in servers:
            try:
                answer = await self.client.request(
                    server, "GET", path, timeout=DIRECTORY_TIMEOUT_S, max_bytes=MAX_ANSWER_BYTES
                )
            except (FederationError, Unreachable):
                continue
            if not isinstance(answer, dict):
                continue
            room = answer.get("room")
            if not isinstance(room, dict) or room.get("room_id") != room_id:
                continue
            room = _room(room)
            children_state = room.get("children_state")
            room["children_state"] = [
                c
                for c in (children_state if isinstance(children_state, list) else [])
                if isinstance(c, dict) and c.get("type") == "m.space.child" and isinstance(c.get("state_key"), str)
            ]
            inaccessible = answer.get("inaccessible_children")
            return {
                "room": room,
                "children": _rooms(answer.get("children")),
                "inaccessible_children": [r for r in inaccessible if isinstance(r, str)]
                if isinstance(inaccessible, list)
                else [],
            }
        return None
