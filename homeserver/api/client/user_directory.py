"""User directory search. spec: client-server-api "User Directory" (POST /user_directory/search).
Who can be found is documented in `homeserver.user_directory`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import Field

from homeserver.api.bodies import Body, read
from homeserver.api.http import Router, json_response
from homeserver.user_directory import DEFAULT_LIMIT

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class SearchRequest(Body):
    search_term: str = Field(max_length=1000)
    limit: int = Field(default=DEFAULT_LIMIT, ge=0)


def register(router: Router, hs: HomeServer) -> None:
    async def search(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, SearchRequest)
        results, limited = hs.user_directory.search(requester.user_id, body.search_term, body.limit)
        return json_response({"results": results, "limited": limited})

    router.client("POST", "/user_directory/search", search)
