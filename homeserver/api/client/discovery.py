"""Server discovery and basics: /.well-known/matrix/client, /versions.

spec: client-server-api "Server Discovery", "API Versions".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_response

if TYPE_CHECKING:
    from homeserver.server import HomeServer

SPEC_VERSIONS = [
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
]


def register(router: Router, hs: HomeServer) -> None:
    async def versions(request: web.Request) -> web.Response:
        return json_response({"versions": SPEC_VERSIONS, "unstable_features": {}})

    async def well_known(request: web.Request) -> web.Response:
        base = hs.config.public_baseurl or f"http://{hs.config.listen}"
        return json_response({"m.homeserver": {"base_url": base.rstrip("/")}})

    router.add("GET", "/_matrix/client/versions", versions)
    router.add("GET", "/.well-known/matrix/client", well_known)
