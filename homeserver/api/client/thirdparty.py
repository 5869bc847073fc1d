"""Third-party network look-ups. spec: client-server-api "Third-party Networks".

Protocols come from application services (bridges); this server has none yet, so the list is
empty and every look-up is 404 `M_NOT_FOUND`, as the spec says for unknown protocols and for
look-ups that find nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Handler, Router, json_response
from homeserver.errors import MatrixError, not_found

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def protocols(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        return json_response({})

    async def protocol(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        raise not_found(f"Unknown protocol {request.match_info['protocol']!r}")

    async def by_protocol(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        raise not_found(f"Unknown protocol {request.match_info['protocol']!r}")

    def reverse(param: str, what: str) -> Handler:
        async def handler(request: web.Request) -> web.Response:
            hs.auth.requester(request)
            if not request.query.get(param):
                raise MatrixError(400, "M_MISSING_PARAM", f"{param} is required")
            raise not_found(f"No third-party {what} found")

        return handler

    router.client("GET", "/thirdparty/protocols", protocols)
    router.client("GET", "/thirdparty/protocol/{protocol}", protocol)
    router.client("GET", "/thirdparty/location/{protocol}", by_protocol)
    router.client("GET", "/thirdparty/user/{protocol}", by_protocol)
    router.client("GET", "/thirdparty/location", reverse("alias", "locations"))
    router.client("GET", "/thirdparty/user", reverse("userid", "users"))
