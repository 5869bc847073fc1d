"""Server administration of users: lock, suspend, whois.

spec: client-server-api "Server administration": GET/PUT /_matrix/client/v1/admin/lock/{userId},
GET/PUT /_matrix/client/v1/admin/suspend/{userId}, GET /_matrix/client/v3/admin/whois/{userId}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.bodies import Body, read
from homeserver.api.http import Router, json_response

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class LockBody(Body):
    locked: bool


class SuspendBody(Body):
    suspended: bool


def register(router: Router, hs: HomeServer) -> None:
    def flag_routes(flag: str, field: str, model: type[LockBody | SuspendBody]) -> None:
        async def get(request: web.Request) -> web.Response:
            requester = hs.auth.requester(request)
            value = hs.moderation.get_flag(requester, request.match_info["userId"], flag)
            return json_response({field: value})

        async def put(request: web.Request) -> web.Response:
            requester = hs.auth.requester(request)
            value: bool = getattr(await read(request, model), field)
            await hs.moderation.set_flag(requester, request.match_info["userId"], flag, value)
            return json_response({field: value})

        router.add("GET", f"/_matrix/client/v1/admin/{field.removesuffix('ed')}/{{userId}}", get)
        router.add("PUT", f"/_matrix/client/v1/admin/{field.removesuffix('ed')}/{{userId}}", put)

    flag_routes("locked", "locked", LockBody)
    flag_routes("suspended", "suspended", SuspendBody)

    async def whois(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        return json_response(hs.moderation.whois(requester, request.match_info["userId"]))

    router.client("GET", "/admin/whois/{userId}", whois)
