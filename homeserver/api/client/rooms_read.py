"""Room routes that read: state, messages, context, event, members, joined members, joined rooms,
timestamp_to_event.

spec: client-server-api "Getting events for a room", GET /rooms/{roomId}/state,
GET /rooms/{roomId}/members, GET /joined_rooms, GET /v1/rooms/{roomId}/timestamp_to_event.
Guests may use all of them (spec: guest access), through the same visibility rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_response, query_int
from homeserver.errors import MatrixError
from homeserver.protocol.errors import InvalidIdentifier
from homeserver.protocol.identifiers import UserID
from homeserver.rooms.client_format import Viewer
from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.messages import MEMBERSHIPS

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def direction(request: web.Request, *, default: str | None = None) -> bool:
    """True for `dir=f`, False for `dir=b`; 400 if missing (when required) or anything else."""
    raw = request.query.get("dir", default)
    if raw is None:
        raise MatrixError(400, "M_MISSING_PARAM", "dir is required (b or f)")
    if raw not in ("b", "f"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be b or f")
    return raw == "f"


def membership_param(request: web.Request, name: str) -> str | None:
    value = request.query.get(name)
    if value is not None and value not in MEMBERSHIPS:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be one of {', '.join(MEMBERSHIPS)}")
    return value


def register(router: Router, hs: HomeServer) -> None:
    reader = hs.rooms.reader

    def viewer(request: web.Request) -> Viewer:
        requester = hs.auth.requester(request)
        return Viewer(requester.user_id, requester.device_id)

    async def get_state(request: web.Request) -> web.Response:
        return json_response(reader.state(viewer(request), request.match_info["roomId"]))

    async def get_state_event(request: web.Request) -> web.Response:
        fmt = request.query.get("format", "content")
        if fmt not in ("content", "event"):
            raise MatrixError(400, "M_INVALID_PARAM", "format must be content or event")
        event = reader.state_event(
            viewer(request),
            request.match_info["roomId"],
            request.match_info["eventType"],
            request.match_info.get("stateKey", ""),
        )
        return json_response(event if fmt == "event" else event["content"])

    async def messages(request: web.Request) -> web.Response:
        who = viewer(request)
        forwards = direction(request)
        body = await reader.messages(
            who,
            request.match_info["roomId"],
            from_token=request.query.get("from") or None,
            to_token=request.query.get("to") or None,
            forwards=forwards,
            limit=query_int(request, "limit", 10) or 0,
            event_filter=RoomEventFilter.from_query(request.query.get("filter")),
        )
        return json_response(body)

    async def context(request: web.Request) -> web.Response:
        body = reader.context(
            viewer(request),
            request.match_info["roomId"],
            request.match_info["eventId"],
            limit=query_int(request, "limit", 10) or 0,
            event_filter=RoomEventFilter.from_query(request.query.get("filter")),
        )
        return json_response(body)

    async def event(request: web.Request) -> web.Response:
        return json_response(reader.event(viewer(request), request.match_info["roomId"], request.match_info["eventId"]))

    async def members(request: web.Request) -> web.Response:
        chunk = reader.members(
            viewer(request),
            request.match_info["roomId"],
            at=request.query.get("at") or None,
            membership=membership_param(request, "membership"),
            not_membership=membership_param(request, "not_membership"),
        )
        return json_response({"chunk": chunk})

    async def joined_members(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        return json_response({"joined": reader.joined_members(requester.user_id, request.match_info["roomId"])})

    async def joined_rooms(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        return json_response({"joined_rooms": reader.joined_rooms(requester.user_id)})

    async def timestamp_to_event(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        if "ts" not in request.query:
            raise MatrixError(400, "M_MISSING_PARAM", "ts is required")
        ts = query_int(request, "ts", 0) or 0
        forwards = direction(request)
        body = reader.timestamp_to_event(requester.user_id, request.match_info["roomId"], ts, forwards=forwards)
        return json_response(body)

    async def initial_sync(request: web.Request) -> web.Response:
        who = viewer(request)
        room_id = request.match_info["roomId"]
        published = hs.rooms.directory.visibility(room_id) == "public" if room_id.startswith("!") else False
        return json_response(reader.initial_sync(who, room_id, published=published))

    async def mutual_rooms(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        other = request.query.get("user_id")
        if not other:
            raise MatrixError(400, "M_MISSING_PARAM", "user_id is required")
        if other == requester.user_id:
            raise MatrixError(400, "M_INVALID_PARAM", "user_id may not be your own user id")
        try:
            UserID.parse(other, historical=True)
        except InvalidIdentifier as e:
            raise MatrixError(400, "M_INVALID_PARAM", f"user_id: {e}") from None
        return json_response(reader.mutual_rooms(requester.user_id, other, request.query.get("from") or None))

    # spec: guest access — guests may read state, messages, context, events, members and initialSync
    router.client("GET", "/rooms/{roomId}/state", get_state, guests=True)
    router.client("GET", "/rooms/{roomId}/state/{eventType}", get_state_event, guests=True)
    router.client("GET", "/rooms/{roomId}/state/{eventType}/", get_state_event, guests=True)
    router.client("GET", "/rooms/{roomId}/state/{eventType}/{stateKey:.+}", get_state_event, guests=True)
    router.client("GET", "/rooms/{roomId}/messages", messages, guests=True)
    router.client("GET", "/rooms/{roomId}/context/{eventId}", context, guests=True)
    router.client("GET", "/rooms/{roomId}/event/{eventId}", event, guests=True)
    router.client("GET", "/rooms/{roomId}/members", members, guests=True)
    router.client("GET", "/rooms/{roomId}/joined_members", joined_members)
    router.client("GET", "/joined_rooms", joined_rooms)
    router.add("GET", "/_matrix/client/v1/rooms/{roomId}/timestamp_to_event", timestamp_to_event)
    router.client("GET", "/rooms/{roomId}/initialSync", initial_sync, guests=True)
    router.add("GET", "/_matrix/client/v1/mutual_rooms", mutual_rooms)
