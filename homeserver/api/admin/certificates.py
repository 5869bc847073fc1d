"""The TLS certificate of `public.domain`: GET /_homeserver/admin/v1/certificates (server admins only).

What it is (serial, validity), when it renews, and, when renewal keeps failing, the last error and
the next attempt: the old certificate is still served meanwhile. 404 without `public.domain`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_response
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

PATH = "/_homeserver/admin/v1/certificates"


def register(router: Router, hs: HomeServer) -> None:
    async def certificates(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        if not requester.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        if hs.certificates is None:
            raise MatrixError(404, "M_NOT_FOUND", "no certificates are managed here (public.domain is not set)")
        return json_response({"certificates": [hs.certificates.status()]})

    router.add("GET", PATH, certificates)
