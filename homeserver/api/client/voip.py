"""TURN credentials. spec: client-server-api "Voice over IP" (GET /voip/turnServer).

With `turn_uris` and `turn_shared_secret` configured, credentials follow the TURN REST API
convention that coturn's `use-auth-secret` checks: username "<expiry unix seconds>:<user id>",
password base64(HMAC-SHA1(secret, username)).

Without them the answer is 404 `M_NOT_FOUND`, as MSC4166 specifies for "no TURN servers". Not
Synapse's `{}`: the v1.19 schema makes username, password, uris and ttl required, so `{}` does
not conform, and an empty `uris` list would hand WebRTC an ICE server without URLs. Element and
matrix-js-sdk treat the error as "no TURN" and place calls without a relay.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.api.http import Router, json_response
from homeserver.errors import not_found

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def turn_credentials(uris: list[str], secret: str, user_id: str, lifetime_s: int, now_s: float) -> dict[str, Any]:
    username = f"{int(now_s) + lifetime_s}:{user_id}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"username": username, "password": base64.b64encode(mac).decode(), "uris": list(uris), "ttl": lifetime_s}


def register(router: Router, hs: HomeServer) -> None:
    async def turn_server(request: web.Request) -> web.Response:
        requester = hs.tokens.requester(request)
        config = hs.config
        if not config.turn_uris or not config.turn_shared_secret:
            raise not_found("No TURN servers are configured on this server")  # MSC4166
        return json_response(
            turn_credentials(
                config.turn_uris, config.turn_shared_secret, requester.user_id, config.turn_user_lifetime_s, hs.clock()
            )
        )

    router.client("GET", "/voip/turnServer", turn_server)
