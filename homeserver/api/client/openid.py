"""OpenID tokens.

spec: client-server-api "OpenID" (POST /user/{userId}/openid/request_token). Single sign-on's
entry points are in homeserver/api/client/login.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_object, json_response
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    async def request_token(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        if request.match_info["userId"] != requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "you can only request OpenID tokens for yourself")
        await json_object(request, allow_empty=True)
        token = await hs.openid.issue(requester.user_id)
        return json_response(
            {
                "access_token": token.access_token,
                "token_type": "Bearer",
                "matrix_server_name": token.matrix_server_name,
                "expires_in": token.expires_in,
            }
        )

    router.client("POST", "/user/{userId}/openid/request_token", request_token)
