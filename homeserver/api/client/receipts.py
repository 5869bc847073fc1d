"""Receipts and read markers (spec: modules/receipts.md, read_markers.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import Field

from homeserver.api.bodies import Body, read
from homeserver.api.http import Router, json_object, json_response

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class ReceiptBody(Body):
    # spec: POST receipt — 400 M_INVALID_PARAM when thread_id is not a non-empty string (null
    # included); absent (the default, never validated) means an unthreaded receipt
    thread_id: str = Field(default="", min_length=1)


def register(router: Router, hs: HomeServer) -> None:
    receipts = hs.receipts

    async def receipt(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, ReceiptBody, allow_empty=True, bad="M_INVALID_PARAM")
        await receipts.send(
            requester.user_id,
            request.match_info["roomId"],
            request.match_info["receiptType"],
            request.match_info["eventId"],
            body.thread_id or None,
        )
        return json_response({})

    async def read_markers(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request)
        await receipts.read_markers(requester.user_id, request.match_info["roomId"], body)
        return json_response({})

    router.client("POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}", receipt)
    router.client("POST", "/rooms/{roomId}/read_markers", read_markers)
