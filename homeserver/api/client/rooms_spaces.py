"""Room summaries and space hierarchies: GET /v1/room_summary/{roomIdOrAlias} and
GET /v1/rooms/{roomId}/hierarchy (spec: client-server-api "Room Summaries", modules "Spaces")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_response, query_bool, query_int

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    spaces = hs.rooms.spaces

    async def room_summary(request: web.Request) -> web.Response:
        # spec: servers MAY answer without a token for public, knockable or world-readable rooms
        requester = hs.auth.optional_requester(request)
        user_id = requester.user_id if requester is not None else None
        return json_response(spaces.room_summary(user_id, request.match_info["roomIdOrAlias"]))

    async def hierarchy(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await spaces.hierarchy(
            requester.user_id,
            request.match_info["roomId"],
            suggested_only=query_bool(request, "suggested_only", False),
            max_depth=query_int(request, "max_depth", None, minimum=0),
            limit=query_int(request, "limit", None, minimum=1),
            from_token=request.query.get("from") or None,
        )
        return json_response(body)

    router.add("GET", "/_matrix/client/v1/room_summary/{roomIdOrAlias}", room_summary)
    router.add("GET", "/_matrix/client/v1/rooms/{roomId}/hierarchy", hierarchy)
