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

# spec: GET /versions — every version whose client-server API this server implements (v1.19's
# endpoints outside the appservice ones; tests/api/test_endpoint_coverage.py). Clients decide by
# version: authenticated media from v1.11 (js-sdk, ruma), threads and private receipts from v1.4,
# jump-to-date from v1.6 (Element), room summary from v1.15, extended profiles and the stable
# `use_state_after` from v1.16. The OAuth 2.0 API (v1.15) is optional: with `oauth.enabled` off,
# `auth_metadata` says it is not offered, and clients then log in with the legacy API.
SPEC_VERSIONS = ["r0.6.1", *(f"v1.{minor}" for minor in range(1, 20))]  # r0.6.1, v1.1 … v1.19

# spec: GET /versions `unstable_features` — only features clients look up by flag (where no version
# listed above answers the same question for them) and that this server implements.
UNSTABLE_FEATURES: dict[str, bool] = {
    # MSC1756 cross-signing (keys/device_signing/upload, keys/signatures/upload). Element Web reads it
    # (DeviceListener, the post-login "set up encryption" step, the security settings): without it
    # Element never uploads cross-signing keys and marks every message as unverified.
    "org.matrix.e2e_cross_signing": True,
    # MSC3827 `filter.room_types` on POST /publicRooms. Element Web's room directory search sends
    # the filter only when this flag is set (it does not look at v1.4).
    "org.matrix.msc3827.stable": True,
    # MSC4186 simplified sliding sync (homeserver/sliding_sync/). Element X refuses a server
    # without it ("server not supported").
    "org.matrix.simplified_msc3575": True,
}
# Deliberately absent: `org.matrix.msc2965` (OAuth 2.0; not offered), `uk.half-shot.msc2666*` (js-sdk calls only the
# unstable mutual_rooms path; the stable v1 path is served and covered by v1.19), `org.matrix.msc4222`
# (state_after: js-sdk and matrix-rust-sdk send the parameter without probing; v1.16 covers it),
# and the flags of features not built: msc3881 (pusher toggles), msc4028, msc4108, msc4140, msc4306.


def register(router: Router, hs: HomeServer) -> None:
    async def versions(request: web.Request) -> web.Response:
        return json_response({"versions": SPEC_VERSIONS, "unstable_features": UNSTABLE_FEATURES})

    async def well_known(request: web.Request) -> web.Response:
        base = hs.config.public_baseurl or f"http://{hs.config.listen}"
        return json_response({"m.homeserver": {"base_url": base.rstrip("/")}})

    async def support(request: web.Request) -> web.Response:
        # spec: GET /.well-known/matrix/support — 404 when the server has no support information
        contacts = [c.model_dump(exclude_none=True) for c in hs.config.support_contacts]
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

    async def well_known_server(request: web.Request) -> web.Response:
        # spec: server-server "Resolving server names" — `m.server` delegates federation elsewhere
        delegated = hs.config.federation.well_known_server
        if delegated is None or not hs.config.federation.enabled:
            raise MatrixError(404, "M_NOT_FOUND", "this server does not delegate federation")
        return json_response({"m.server": delegated})

    router.add("GET", "/.well-known/matrix/client", well_known)
    router.add("GET", "/.well-known/matrix/server", well_known_server)
    router.add("GET", "/.well-known/matrix/support", support)
    router.add("GET", "/.well-known/matrix/policy_server", policy_server)
    if not hs.config.oauth.enabled:  # otherwise homeserver/api/oauth.py serves the metadata
        router.add("GET", "/_matrix/client/v1/auth_metadata", auth_metadata)
