"""Room routes that change things: createRoom, membership, send, state, redact, report.

spec: client-server-api POST /createRoom, "Room membership" (join, knock, invite, leave, forget,
kick, ban, unban), PUT /rooms/{roomId}/send, PUT /rooms/{roomId}/state, PUT /rooms/{roomId}/redact,
"Reporting content".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from homeserver.api.http import Router, json_object, json_response, parse_body
from homeserver.errors import MatrixError
from homeserver.rooms.creation import RoomCreation
from homeserver.schema import Schema, field

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class InitialStateEvent(Schema):
    type: str
    state_key: str = ""
    content: dict[str, Any]


class CreateRoomBody(Schema):
    visibility: Literal["public", "private"] = "private"
    room_alias_name: str | None = None
    name: str | None = None
    topic: str | None = None
    invite: list[str] = field(default_factory=list)
    invite_3pid: list[dict[str, Any]] = field(default_factory=list)
    room_version: str | None = None
    creation_content: dict[str, Any] = field(default_factory=dict)
    initial_state: list[InitialStateEvent] = field(default_factory=list)
    preset: Literal["private_chat", "public_chat", "trusted_private_chat"] | None = None
    is_direct: bool = False
    power_level_content_override: dict[str, Any] | None = None


def optional_string(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be a string")
    return value


def register(router: Router, hs: HomeServer) -> None:
    rooms = hs.rooms
    membership = rooms.membership
    sender = rooms.sender

    async def create_room(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await parse_body(request, CreateRoomBody, allow_empty=True)
        if body.invite_3pid:
            raise MatrixError(400, "M_UNKNOWN", "invite_3pid is not supported: this server has no identity server")
        room_id = await rooms.create_room(
            RoomCreation(
                creator=requester.user_id,
                room_version=body.room_version or rooms.default_room_version,
                preset=body.preset,
                visibility=body.visibility,
                creation_content=body.creation_content,
                power_level_content_override=body.power_level_content_override,
                initial_state=[s.dump() for s in body.initial_state],
                name=body.name,
                topic=body.topic,
                invite=body.invite,
                is_direct=body.is_direct,
            ),
            room_alias_name=body.room_alias_name,
        )
        return json_response({"room_id": room_id})

    # -- membership ------------------------------------------------------------------------------

    async def join_by_id(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request, allow_empty=True)
        room_id = await membership.join(
            requester.user_id,
            request.match_info["roomId"],
            reason=optional_string(body, "reason"),
            is_guest=requester.is_guest,
        )
        return json_response({"room_id": room_id})

    async def join(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request, allow_empty=True)
        # `via` / `server_name` name servers to join through: only local rooms are joined for now
        room_id = await membership.join(
            requester.user_id,
            request.match_info["roomIdOrAlias"],
            reason=optional_string(body, "reason"),
            is_guest=requester.is_guest,
        )
        return json_response({"room_id": room_id})

    async def knock(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request, allow_empty=True)
        room_id = await membership.knock(
            requester.user_id, request.match_info["roomIdOrAlias"], reason=optional_string(body, "reason")
        )
        return json_response({"room_id": room_id})

    async def leave(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request, allow_empty=True)
        await membership.leave(requester.user_id, request.match_info["roomId"], reason=optional_string(body, "reason"))
        return json_response({})

    async def forget(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        await membership.forget(requester.user_id, request.match_info["roomId"])
        return json_response({})

    def target_action(action: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            requester = hs.auth.requester(request)
            body = await json_object(request)
            if "user_id" not in body:
                raise MatrixError(400, "M_MISSING_PARAM", "user_id is required")
            if action == "invite" and not isinstance(body.get("user_id"), str) and "medium" in body:
                raise MatrixError(400, "M_UNKNOWN", "third-party invites are not supported")
            method = getattr(membership, action)
            await method(
                requester.user_id, request.match_info["roomId"], body["user_id"], reason=optional_string(body, "reason")
            )
            return json_response({})

        return handler

    # -- sending ---------------------------------------------------------------------------------

    async def send(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        hs.ratelimiter.check("send", requester.user_id)
        content = await json_object(request)
        event_id = await sender.send_message(
            requester.user_id,
            requester.device_id,
            request.match_info["roomId"],
            request.match_info["eventType"],
            content,
            request.match_info["txnId"],
        )
        return json_response({"event_id": event_id})

    async def put_state(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        hs.ratelimiter.check("send", requester.user_id)
        content = await json_object(request)
        event_id = await sender.send_state(
            requester.user_id,
            request.match_info["roomId"],
            request.match_info["eventType"],
            request.match_info.get("stateKey", ""),
            content,
            is_guest=requester.is_guest,
        )
        return json_response({"event_id": event_id})

    async def redact(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        hs.ratelimiter.check("send", requester.user_id)
        body = await json_object(request, allow_empty=True)
        event_id = await sender.redact(
            requester.user_id,
            requester.device_id,
            request.match_info["roomId"],
            request.match_info["eventId"],
            body.get("reason"),
            request.match_info["txnId"],
            is_admin=requester.is_admin,
        )
        return json_response({"event_id": event_id})

    async def upgrade(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request)
        new_room = await rooms.upgrades.upgrade(
            requester.user_id,
            request.match_info["roomId"],
            body.get("new_version"),
            body.get("additional_creators"),
        )
        return json_response({"replacement_room": new_room})

    # -- reports ---------------------------------------------------------------------------------

    async def report_event(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request, allow_empty=True)
        reason = optional_string(body, "reason")
        score = body.get("score")
        if score is not None and (not isinstance(score, int) or isinstance(score, bool) or not -100 <= score <= 0):
            raise MatrixError(400, "M_BAD_JSON", "score must be an integer between -100 and 0")
        await rooms.report_event(
            requester.user_id, request.match_info["roomId"], request.match_info["eventId"], reason, score
        )
        return json_response({})

    async def report_room(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request)
        reason = body.get("reason")
        if not isinstance(reason, str):
            raise MatrixError(400, "M_BAD_JSON", "reason is required and must be a string (it may be empty)")
        await rooms.report_room(requester.user_id, request.match_info["roomId"], reason)
        return json_response({})

    async def report_user(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await json_object(request)
        reason = body.get("reason")
        if not isinstance(reason, str):
            raise MatrixError(400, "M_BAD_JSON", "reason is required and must be a string (it may be empty)")
        await rooms.report_user(requester.user_id, request.match_info["userId"], reason)
        return json_response({})

    router.client("POST", "/createRoom", create_room)
    # spec: guest access — guests may join (rooms whose guest_access is can_join) and leave by room id,
    # send events and state; everything else here is refused to them by `Tokens.requester`
    router.client("POST", "/rooms/{roomId}/join", join_by_id, guests=True)
    router.client("POST", "/join/{roomIdOrAlias}", join)
    router.client("POST", "/knock/{roomIdOrAlias}", knock)
    router.client("POST", "/rooms/{roomId}/leave", leave, guests=True)
    router.client("POST", "/rooms/{roomId}/forget", forget)
    for action in ("invite", "kick", "ban", "unban"):
        router.client("POST", f"/rooms/{{roomId}}/{action}", target_action(action))
    router.client("PUT", "/rooms/{roomId}/send/{eventType}/{txnId}", send, guests=True)
    # spec: an empty state key may be given with or without the trailing slash
    router.client("PUT", "/rooms/{roomId}/state/{eventType}", put_state, guests=True)
    router.client("PUT", "/rooms/{roomId}/state/{eventType}/", put_state, guests=True)
    router.client("PUT", "/rooms/{roomId}/state/{eventType}/{stateKey:.+}", put_state, guests=True)
    router.client("PUT", "/rooms/{roomId}/redact/{eventId}/{txnId}", redact)
    router.client("POST", "/rooms/{roomId}/report/{eventId}", report_event)
    router.client("POST", "/rooms/{roomId}/report", report_room)
    router.client("POST", "/rooms/{roomId}/upgrade", upgrade)
    router.client("POST", "/users/{userId}/report", report_user)
