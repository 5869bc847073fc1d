"""Presence (spec: modules/presence.md, GET/PUT /presence/{userId}/status)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_object, json_response
from homeserver.ephemeral.presence import STATES
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

# A status line, re-sent to every user who shares a room with its author at each change.
MAX_STATUS_MSG_BYTES = 1024


def register(router: Router, hs: HomeServer) -> None:
    presence = hs.presence

    async def get_status(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        user_id = request.match_info["userId"]
        if user_id != requester.user_id:
            ours = hs.queries.is_local(user_id) and hs.accounts.exists(user_id)
            if not ours and not presence.known(user_id):
                raise MatrixError(404, "M_NOT_FOUND", "No presence for this user")
            if not hs.queries.share_a_room(requester.user_id, user_id):
                raise MatrixError(403, "M_FORBIDDEN", "You are not allowed to see their presence")
        return json_response(presence.content(user_id))

    async def set_status(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        if request.match_info["userId"] != requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "You cannot set the presence of another user")
        body = await json_object(request)
        state = body.get("presence")
        if state not in STATES:
            raise MatrixError(400, "M_INVALID_PARAM", "presence must be online, unavailable or offline")
        status_msg = body.get("status_msg")  # PUT replaces the state: no status_msg clears it
        if status_msg is not None and not isinstance(status_msg, str):
            raise MatrixError(400, "M_INVALID_PARAM", "status_msg must be a string")
        if status_msg is not None and len(status_msg.encode()) > MAX_STATUS_MSG_BYTES:
            raise MatrixError(400, "M_INVALID_PARAM", f"status_msg is longer than {MAX_STATUS_MSG_BYTES} bytes")
        await presence.set(requester.user_id, state, status_msg)
        return json_response({})

    router.client("GET", "/presence/{userId}/status", get_status)
    router.client("PUT", "/presence/{userId}/status", set_status)
