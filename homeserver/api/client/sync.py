"""GET /sync (spec: client-server-api "Syncing"). The MSC4222 parameter
`org.matrix.msc4222.use_state_after` is accepted beside the stable `use_state_after` (v1.16)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_response, query_bool, query_int
from homeserver.errors import MatrixError
from homeserver.rooms.client_format import Viewer
from homeserver.sync.handler import SyncRequest

if TYPE_CHECKING:
    from homeserver.server import HomeServer

PRESENCE_STATES = ("online", "offline", "unavailable")


def register(router: Router, hs: HomeServer) -> None:
    async def sync(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        set_presence = request.query.get("set_presence")
        if set_presence is not None and set_presence not in PRESENCE_STATES:
            raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline or unavailable")
        use_state_after = query_bool(request, "use_state_after") or query_bool(
            request, "org.matrix.msc4222.use_state_after"
        )
        req = SyncRequest(
            user_id=requester.user_id,
            device_id=requester.device_id,
            since=request.query.get("since") or None,
            filter=hs.filters.for_sync(requester.user_id, request.query.get("filter")),
            timeout_ms=query_int(request, "timeout", 0) or 0,
            full_state=query_bool(request, "full_state"),
            use_state_after=use_state_after,
            set_presence=set_presence,
        )
        return json_response(await hs.sync.sync(req))

    async def events(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        viewer = Viewer(requester.user_id, requester.device_id)
        timeout = query_int(request, "timeout", 0) or 0
        body = await hs.legacy_sync.events(viewer, request.query.get("from"), timeout, request.query.get("room_id"))
        return json_response(body)

    # spec: guest access — guests may sync, and use /events for room previews
    router.client("GET", "/sync", sync, guests=True)
    router.client("GET", "/events", events, guests=True)
