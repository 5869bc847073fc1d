"""Relations and threads: GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] and
GET /v1/rooms/{roomId}/threads.

spec: client-server-api "Relationships API", modules "Threading" — "Querying threads in a room".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.client.rooms_read import direction
from homeserver.api.http import Router, json_response, query_bool, query_int
from homeserver.errors import MatrixError
from homeserver.rooms.client_format import Viewer

if TYPE_CHECKING:
    from homeserver.server import HomeServer

DEFAULT_LIMIT = 50
MAX_LIMIT = 100


def register(router: Router, hs: HomeServer) -> None:
    reading = hs.rooms.relations_reader

    async def relations(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = reading.relations_page(
            Viewer(requester.user_id, requester.device_id),
            request.match_info["roomId"],
            request.match_info["eventId"],
            rel_type=request.match_info.get("relType"),
            event_type=request.match_info.get("eventType"),
            from_token=request.query.get("from") or None,
            to_token=request.query.get("to") or None,
            forwards=direction(request, default="b"),
            limit=min(query_int(request, "limit", DEFAULT_LIMIT, minimum=1) or DEFAULT_LIMIT, MAX_LIMIT),
            recurse=query_bool(request, "recurse", False) if "recurse" in request.query else None,
        )
        return json_response(body)

    async def threads(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        include = request.query.get("include", "all")
        if include not in ("all", "participated"):
            raise MatrixError(400, "M_INVALID_PARAM", "include must be all or participated")
        body = reading.threads_page(
            Viewer(requester.user_id, requester.device_id),
            request.match_info["roomId"],
            participated_only=include == "participated",
            from_token=request.query.get("from") or None,
            limit=min(query_int(request, "limit", DEFAULT_LIMIT, minimum=1) or DEFAULT_LIMIT, MAX_LIMIT),
        )
        return json_response(body)

    base = "/_matrix/client/v1/rooms/{roomId}"
    router.add("GET", base + "/relations/{eventId}", relations)
    router.add("GET", base + "/relations/{eventId}/{relType}", relations)
    router.add("GET", base + "/relations/{eventId}/{relType}/{eventType}", relations)
    router.add("GET", base + "/threads", threads)
