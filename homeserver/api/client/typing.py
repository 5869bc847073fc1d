"""Typing notifications (spec: modules/typing_notifications.md, PUT /rooms/{roomId}/typing/{userId})."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_object, json_response
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    typing = hs.typing

    async def set_typing(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        if request.match_info["userId"] != requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "Cannot set the typing state of another user")
        body = await json_object(request)
        is_typing = body.get("typing")
        if not isinstance(is_typing, bool):
            raise MatrixError(400, "M_BAD_JSON", "typing must be a boolean")
        timeout = body.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)):
            raise MatrixError(400, "M_BAD_JSON", "timeout must be an integer (milliseconds)")
        room_id = request.match_info["roomId"]
        room = hs.queries.room(room_id)
        if room is None or not hs.queries.is_joined(requester.user_id, room):
            raise MatrixError(403, "M_FORBIDDEN", "You are not joined to this room")
        await typing.set_typing(room, requester.user_id, is_typing, timeout)
        return json_response({})

    router.client("PUT", "/rooms/{roomId}/typing/{userId}", set_typing)
