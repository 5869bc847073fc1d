"""POST /search (spec: client-server-api modules "Server Side Search": the room_events category)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.api.bodies import Body, read
from homeserver.api.http import Router, json_response
from homeserver.rooms.client_format import Viewer

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class RoomEventsCriteria(Body):
    """spec: POST /search `room_events`: `search_term` is required; the choices among the other keys
    (keys, order_by, groupings...) are checked by the search service, with M_INVALID_PARAM."""

    search_term: str


class Categories(Body):
    room_events: RoomEventsCriteria | None = None


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
            criteria = room_events.model_dump()
            out["room_events"] = search.search(viewer, criteria, request.query.get("next_batch") or None)
        return json_response({"search_categories": out})

    router.client("POST", "/search", post_search)
