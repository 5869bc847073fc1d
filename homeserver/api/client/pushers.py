"""Pushers (spec: modules/push.md "Client behaviour": GET /pushers, POST /pushers/set). Pushers are
stored; delivering notifications to push gateways comes later."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_object, json_response

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    push = hs.push.pushers

    async def get_pushers(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        return json_response({"pushers": push.pushers(requester.user_id)})

    async def set_pusher(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        await push.set_pusher(requester.user_id, requester.device_id, await json_object(request))
        return json_response({})

    router.client("GET", "/pushers", get_pushers)
    router.client("POST", "/pushers/set", set_pusher)
