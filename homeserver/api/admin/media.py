"""Emptying the cache of other servers' media: POST /_synapse/admin/v1/purge_media_cache (admins only).

The path and its `before_ts` (ms) are Synapse's, so admin tools made for Synapse work here. Media
other servers hold are fetched over federation and kept (`homeserver/media/remote.py`, bounded by
`remote_media_cache_size`); this forgets those fetched before `before_ts` (their files go unless a
local upload has the same bytes); a client asking for one again fetches it again. Our own users'
uploads are never touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_response, query_int
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

PATH = "/_synapse/admin/v1/purge_media_cache"


def register(router: Router, hs: HomeServer) -> None:
    async def purge_media_cache(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        if not requester.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        before_ts = query_int(request, "before_ts")
        if before_ts is None:
            raise MatrixError(400, "M_MISSING_PARAM", "before_ts (ms since the epoch) is required")
        _ = hs.media  # the cache is made with the media repository
        if hs.remote_media is None:
            return json_response({"deleted": 0})  # federation is off: no remote media
        deleted, _bytes = await hs.remote_media.evict(before_ms=before_ts)
        return json_response({"deleted": deleted})

    router.add("POST", PATH, purge_media_cache)
