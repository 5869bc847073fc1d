"""GET /notifications (spec: modules/push.md "Listing Notifications")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.api.http import Router, json_response, query_int
from homeserver.rooms.client_format import Viewer

if TYPE_CHECKING:
    from homeserver.server import HomeServer

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def register(router: Router, hs: HomeServer) -> None:
    push = hs.push.notifications
    serializer = hs.rooms.serializer

    async def notifications(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        limit = min(query_int(request, "limit", DEFAULT_LIMIT, minimum=1) or DEFAULT_LIMIT, MAX_LIMIT)
        only = request.query.get("only")
        found, next_token = push.notifications(
            requester.user_id, request.query.get("from"), limit, only_highlight=only == "highlight"
        )
        viewer = Viewer(requester.user_id, requester.device_id)
        out: list[dict[str, Any]] = []
        for _, record in found:
            event = serializer.serialize(int(record["event"]), viewer)
            if event is None:
                continue
            room = int(record["room"])
            out.append(
                {
                    "actions": record["actions"],
                    "event": event,
                    "read": push.is_read(requester.user_id, room, int(record["position"]), record.get("thread", "")),
                    "room_id": record["room_id"],
                    "ts": record["ts"],
                }
            )
        body: dict[str, Any] = {"notifications": out}
        if next_token is not None:
            body["next_token"] = next_token
        return json_response(body)

    router.client("GET", "/notifications", notifications)
