"""POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync: simplified sliding sync
(MSC4186, the shape Synapse serves and Element X sends; homeserver/sliding_sync/service.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.bodies import read
from homeserver.api.http import Router, json_response, query_int
from homeserver.errors import MatrixError
from homeserver.sliding_sync.request import SlidingSyncBody
from homeserver.sliding_sync.service import SlidingSyncRequest

if TYPE_CHECKING:
    from homeserver.server import HomeServer

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
PRESENCE_STATES = ("online", "offline", "unavailable")


def register(router: Router, hs: HomeServer) -> None:
    async def sliding_sync(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        set_presence = request.query.get("set_presence")
        if set_presence is not None and set_presence not in PRESENCE_STATES:
            raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline or unavailable")
        body = await read(request, SlidingSyncBody, allow_empty=True)
        req = SlidingSyncRequest(
            requester.user_id,
            requester.device_id,
            body,
            request.query.get("pos") or None,
            timeout_ms=query_int(request, "timeout", 0) or 0,
            set_presence=set_presence,
        )
        return json_response(await hs.sliding_sync.sync(req))

    router.add("POST", PATH, sliding_sync, guests=True)
