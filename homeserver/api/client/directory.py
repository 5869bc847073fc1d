"""Room aliases and the published room directory.

spec: client-server-api "Room aliases" (PUT/GET/DELETE /directory/room/{roomAlias},
GET /rooms/{roomId}/aliases) and "Published room directory" (GET/PUT /directory/list/room/{roomId},
GET/POST /publicRooms).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from aiohttp import web
from pydantic import Field

from homeserver.api.bodies import Body, read
from homeserver.api.http import Router, json_response, query_int

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class AliasBody(Body):
    room_id: str


class VisibilityBody(Body):
    visibility: Literal["public", "private"] = "public"


class PublicRoomsFilter(Body):
    generic_search_term: str | None = None
    room_types: list[str | None] | None = None


class PublicRoomsBody(Body):
    """include_all_networks / third_party_instance_id are accepted and change nothing: no
    application services here, one network."""

    limit: int | None = Field(default=None, ge=1)
    since: str | None = None
    filter: PublicRoomsFilter | None = None


def register(router: Router, hs: HomeServer) -> None:
    directory = hs.rooms.directory

    async def get_alias(request: web.Request) -> web.Response:
        alias = request.match_info["roomAlias"]
        directory.parse_alias(alias)
        return json_response(await directory.lookup(alias))

    async def put_alias(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        alias = request.match_info["roomAlias"]
        directory.parse_alias(alias)
        body = await read(request, AliasBody)
        await directory.create_alias(requester.user_id, alias, body.room_id, is_admin=requester.is_admin)
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
        body = await read(request, VisibilityBody, allow_empty=True, bad="M_INVALID_PARAM")
        await directory.set_visibility(
            requester.user_id, request.match_info["roomId"], body.visibility, is_admin=requester.is_admin
        )
        return json_response({})

    async def get_public_rooms(request: web.Request) -> web.Response:
        server = request.query.get("server") or None
        body = await directory.any_public_rooms(
            limit=query_int(request, "limit", None, minimum=1),
            since=request.query.get("since") or None,
            server=server,
            anonymous=hs.auth.optional_requester(request) is None,
        )
        return json_response(body)

    async def post_public_rooms(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        body = await read(request, PublicRoomsBody, allow_empty=True)
        search_filter = body.filter or PublicRoomsFilter()
        result = await directory.any_public_rooms(
            limit=body.limit,
            since=body.since or None,
            server=request.query.get("server") or None,
            search_term=search_filter.generic_search_term or None,
            room_types=search_filter.room_types,
        )
        return json_response(result)

    router.client("GET", "/directory/room/{roomAlias}", get_alias)
    router.client("PUT", "/directory/room/{roomAlias}", put_alias)
    router.client("DELETE", "/directory/room/{roomAlias}", delete_alias)
    router.client("GET", "/rooms/{roomId}/aliases", room_aliases)
    router.client("GET", "/directory/list/room/{roomId}", get_visibility)
    router.client("PUT", "/directory/list/room/{roomId}", put_visibility)
    # a guest may read it as anyone may (spec: no access token needed), and as Synapse allows
    router.client("GET", "/publicRooms", get_public_rooms, guests=True)
    router.client("POST", "/publicRooms", post_public_rooms)
