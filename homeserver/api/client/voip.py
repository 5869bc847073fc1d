"""TURN credentials. spec: client-server-api "Voice over IP" (GET /voip/turnServer).

With `turn_uris` and `turn_shared_secret` configured, credentials follow the TURN REST API
convention that coturn's `use-auth-secret` checks: username "<expiry unix seconds>:<user id>",
password base64(HMAC-SHA1(secret, username)).

Without them the answer is 200 `{}`, as Synapse answers. The v1.19 spec defines only 200 and 429
for this endpoint (MSC4166's 404 is not in it). matrix-js-sdk (Element) reads `uris` only when
present, so `{}` means "no TURN" to it and calls go without a relay; a 404 is logged as an error and
reported as a TURN failure on every check. `{}` lacks the fields the 200 schema lists as required:
an empty `uris` list instead would hand WebRTC an ICE server without URLs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.api.http import Router, json_response

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def turn_credentials(uris: list[str], secret: str, user_id: str, lifetime_s: int, now_s: float) -> dict[str, Any]:
    username = f"{int(now_s) + lifetime_s}:{user_id}"
    mac = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return {"username": username, "password": base64.b64encode(mac).decode(), "uris": list(uris), "ttl": lifetime_s}


def register(router: Router, hs: HomeServer) -> None:
    async def turn_server(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        config = hs.config
        if not config.turn_uris or not config.turn_shared_secret:
            return json_response({})  # no TURN server: see the module docstring
        return json_response(
            turn_credentials(
                config.turn_uris, config.turn_shared_secret, requester.user_id, config.turn_user_lifetime_s, hs.clock()
            )
        )

    router.client("GET", "/voip/turnServer", turn_server)
