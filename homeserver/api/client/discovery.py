"""Server discovery and basics: /.well-known/matrix/client, /versions.

spec: client-server-api "Server Discovery", "API Versions".
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_response
from homeserver.errors import MatrixError

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

    async def support(request: web.Request) -> web.Response:
        # spec: GET /.well-known/matrix/support — 404 when the server has no support information
        contacts = [c.dump(exclude_none=True) for c in hs.config.support_contacts]
        if not contacts and not hs.config.support_page:
            raise MatrixError(404, "M_NOT_FOUND", "no support information is configured for this server")
        body: dict[str, object] = {"contacts": contacts}
        if hs.config.support_page:
            body["support_page"] = hs.config.support_page
        return json_response(body)

    async def policy_server(request: web.Request) -> web.Response:
        # spec: GET /.well-known/matrix/policy_server — this server is not a policy server
        raise MatrixError(404, "M_NOT_FOUND", "this server is not a policy server")

    async def auth_metadata(request: web.Request) -> web.Response:
        # spec: GET /_matrix/client/v1/auth_metadata — 404 M_UNRECOGNIZED is the answer of a server
        # that does not offer the OAuth 2.0 API; clients then use the legacy login API
        raise MatrixError(404, "M_UNRECOGNIZED", "this server does not offer the OAuth 2.0 API")

    router.add("GET", "/_matrix/client/versions", versions)
    router.add("GET", "/.well-known/matrix/client", well_known)
    router.add("GET", "/.well-known/matrix/support", support)
    router.add("GET", "/.well-known/matrix/policy_server", policy_server)
    router.add("GET", "/_matrix/client/v1/auth_metadata", auth_metadata)
