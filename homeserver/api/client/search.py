"""POST /search (spec: client-server-api modules "Server Side Search": the room_events category)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.api.bodies import Body, read
from homeserver.api.http import Router, json_response
from homeserver.rooms.client_format import Viewer

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class Categories(Body):
    room_events: dict[str, Any] | None = None  # its criteria are checked by the search service


class SearchBody(Body):
    search_categories: Categories


def register(router: Router, hs: HomeServer) -> None:
    search = hs.rooms.search

    async def post_search(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        room_events = (await read(request, SearchBody)).search_categories.room_events
        out: dict[str, Any] = {}
        if room_events is not None:
            viewer = Viewer(requester.user_id, requester.device_id)
            out["room_events"] = search.search(viewer, room_events, request.query.get("next_batch") or None)
        return json_response({"search_categories": out})

    router.client("POST", "/search", post_search)
