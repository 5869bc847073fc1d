"""Room aliases and the published room directory.

spec: client-server-api "Room aliases" (PUT/GET/DELETE /directory/room/{roomAlias},
GET /rooms/{roomId}/aliases) and "Published room directory" (GET/PUT /directory/list/room/{roomId},
GET/POST /publicRooms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_object, json_response, query_int
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    directory = hs.rooms.directory

    async def get_alias(request: web.Request) -> web.Response:
        alias = request.match_info["roomAlias"]
        directory.parse_alias(alias)
        return json_response(directory.resolve(alias))

    async def put_alias(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        alias = request.match_info["roomAlias"]
        directory.parse_alias(alias)
        body = await json_object(request)
        room_id = body.get("room_id")
        if not isinstance(room_id, str):
            raise MatrixError(400, "M_BAD_JSON", "room_id is required and must be a string")
        await directory.create_alias(requester.user_id, alias, room_id, is_admin=requester.is_admin)
        return json_response({})

    async def delete_alias(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        alias = request.match_info["roomAlias"]
        directory.parse_alias(alias)
        await hs.rooms.delete_alias(requester.user_id, alias, is_admin=requester.is_admin)
        return json_response({})

    async def room_aliases(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        return json_response({"aliases": directory.local_aliases(requester.user_id, request.match_info["roomId"])})

    async def get_visibility(request: web.Request) -> web.Response:
        return json_response({"visibility": directory.visibility(request.match_info["roomId"])})

    async def put_visibility(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request, allow_empty=True)
        visibility = body.get("visibility", "public")
        if visibility not in ("public", "private"):
            raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
        await directory.set_visibility(
            requester.user_id, request.match_info["roomId"], visibility, is_admin=requester.is_admin
        )
        return json_response({})

    async def get_public_rooms(request: web.Request) -> web.Response:
        body = directory.public_rooms(
            limit=query_int(request, "limit", None, minimum=1),
            since=request.query.get("since") or None,
            server=request.query.get("server") or None,
        )
        return json_response(body)

    async def post_public_rooms(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        body = await json_object(request, allow_empty=True)
        limit = body.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
            raise MatrixError(400, "M_BAD_JSON", "limit must be a positive integer")
        since = body.get("since")
        if since is not None and not isinstance(since, str):
            raise MatrixError(400, "M_BAD_JSON", "since must be a string")
        search_filter = body.get("filter")
        if search_filter is None:
            search_filter = {}
        if not isinstance(search_filter, dict):
            raise MatrixError(400, "M_BAD_JSON", "filter must be an object")
        term = search_filter.get("generic_search_term")
        if term is not None and not isinstance(term, str):
            raise MatrixError(400, "M_BAD_JSON", "filter.generic_search_term must be a string")
        room_types = search_filter.get("room_types")
        if room_types is not None and (
            not isinstance(room_types, list) or not all(t is None or isinstance(t, str) for t in room_types)
        ):
            raise MatrixError(400, "M_BAD_JSON", "filter.room_types must be a list of strings and nulls")
        # include_all_networks / third_party_instance_id: no application services here, one network
        result = directory.public_rooms(
            limit=limit,
            since=since or None,
            server=request.query.get("server") or None,
            search_term=term or None,
            room_types=room_types,
        )
        return json_response(result)

    router.client("GET", "/directory/room/{roomAlias}", get_alias)
    router.client("PUT", "/directory/room/{roomAlias}", put_alias)
    router.client("DELETE", "/directory/room/{roomAlias}", delete_alias)
    router.client("GET", "/rooms/{roomId}/aliases", room_aliases)
    router.client("GET", "/directory/list/room/{roomId}", get_visibility)
    router.client("PUT", "/directory/list/room/{roomId}", put_visibility)
    router.client("GET", "/publicRooms", get_public_rooms)
    router.client("POST", "/publicRooms", post_public_rooms)
