"""Receipts and read markers (spec: modules/receipts.md, read_markers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_object, json_response
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def register(router: Router, hs: HomeServer) -> None:
    receipts = hs.receipts

    async def receipt(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request, allow_empty=True)
        thread_id = body.get("thread_id")
        if "thread_id" in body and (not isinstance(thread_id, str) or not thread_id):
            # spec: POST receipt — 400 when thread_id is not a non-empty string
            raise MatrixError(400, "M_INVALID_PARAM", "thread_id field must be a non-empty string")
        await receipts.send(
            requester.user_id,
            request.match_info["roomId"],
            request.match_info["receiptType"],
            request.match_info["eventId"],
            thread_id,
        )
        return json_response({})

    async def read_markers(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request)
        await receipts.read_markers(requester.user_id, request.match_info["roomId"], body)
        return json_response({})

    router.client("POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}", receipt)
    router.client("POST", "/rooms/{roomId}/read_markers", read_markers)
