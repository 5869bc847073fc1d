"""Filters (spec: client-server-api "Filtering": POST /user/{userId}/filter, GET
/user/{userId}/filter/{filterId})."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_response, read_json
from homeserver.errors import MatrixError
from homeserver.sync.filters import parse_filter

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    filters = hs.filters

    def own_user(request: web.Request) -> str:
        requester = hs.auth.requester(request)
        if request.match_info["userId"] != requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "Cannot use filters of other users")
        return requester.user_id

    async def upload(request: web.Request) -> web.Response:
        user_id = own_user(request)
        filter_id = await filters.upload(user_id, parse_filter(await read_json(request)))
        return json_response({"filter_id": filter_id})

    async def get(request: web.Request) -> web.Response:
        user_id = own_user(request)
        definition = filters.get(user_id, request.match_info["filterId"])
        if definition is None:
            raise MatrixError(404, "M_NOT_FOUND", "No such filter")
        return json_response(definition)

    router.client("POST", "/user/{userId}/filter", upload)
    router.client("GET", "/user/{userId}/filter/{filterId}", get)
