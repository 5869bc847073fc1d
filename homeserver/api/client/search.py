"""POST /search (spec: client-server-api modules "Server Side Search": the room_events category)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.api.http import Router, json_object, json_response
from homeserver.errors import MatrixError
from homeserver.rooms.client_format import Viewer

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    search = hs.rooms.search

    async def post_search(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request)
        categories = body.get("search_categories")
        if not isinstance(categories, dict):
            raise MatrixError(400, "M_BAD_JSON", "search_categories is required and must be an object")
        out: dict[str, Any] = {}
        room_events = categories.get("room_events")
        if room_events is not None:
            if not isinstance(room_events, dict):
                raise MatrixError(400, "M_BAD_JSON", "search_categories.room_events must be an object")
            viewer = Viewer(requester.user_id, requester.device_id)
            out["room_events"] = search.search(viewer, room_events, request.query.get("next_batch") or None)
        return json_response({"search_categories": out})

    router.client("POST", "/search", post_search)
