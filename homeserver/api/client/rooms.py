"""Room routes that change things: createRoom, membership, send, state, redact, report.

spec: client-server-api POST /createRoom, "Room membership" (join, knock, invite, leave, forget,
kick, ban, unban), PUT /rooms/{roomId}/send, PUT /rooms/{roomId}/state, PUT /rooms/{roomId}/redact,
"Reporting content".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import Field

from homeserver.api.bodies import Body, read
from homeserver.api.http import Router, json_object, json_response
from homeserver.errors import MatrixError
from homeserver.rooms.creation import RoomCreation
from homeserver.validation import validate

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class InitialStateEvent(Body):
    type: str
    state_key: str = ""
    content: dict[str, Any]


STATE_EVENT_KEYS = {"type", "state_key", "content"}  # what of an initial_state entry is used


class CreateRoomBody(Body):
    visibility: Literal["public", "private"] = "private"
    room_alias_name: str | None = None
    name: str | None = None
    topic: str | None = None
    invite: list[str] = Field(default_factory=list)
    invite_3pid: list[dict[str, Any]] = Field(default_factory=list)
    room_version: str | None = None
    creation_content: dict[str, Any] = Field(default_factory=dict)
    initial_state: list[InitialStateEvent] = Field(default_factory=list)
    preset: Literal["private_chat", "public_chat", "trusted_private_chat"] | None = None
    is_direct: bool = False
    power_level_content_override: dict[str, Any] | None = None


class ReasonBody(Body):
    """join, knock, leave and redact: an optional reason."""

    reason: str | None = None


class TargetBody(Body):
    """invite, kick, ban, unban."""

    user_id: str
    reason: str | None = None


class UpgradeBody(Body):
    new_version: str
    additional_creators: list[str] | None = None


class ReportEventBody(Body):
    reason: str | None = None
    score: int | None = Field(default=None, ge=-100, le=0)


class ReportBody(Body):
    reason: str  # spec: required, may be empty


def servers_to_join_through(request: web.Request) -> list[str]:
    """spec: POST /join/{roomIdOrAlias} — `via` (v1.12), and `server_name` (deprecated) as before it."""
    return [*request.query.getall("via", []), *request.query.getall("server_name", [])]


def register(router: Router, hs: HomeServer) -> None:
    rooms = hs.rooms
    membership = rooms.membership
    sender = rooms.sender

    async def create_room(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, CreateRoomBody, allow_empty=True)
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
                initial_state=[s.model_dump(include=STATE_EVENT_KEYS) for s in body.initial_state],
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
        body = await read(request, ReasonBody, allow_empty=True)
        room_id = await membership.join(
            requester.user_id,
            request.match_info["roomId"],
            reason=body.reason,
            is_guest=requester.is_guest,
        )
        return json_response({"room_id": room_id})

    async def join(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, ReasonBody, allow_empty=True)
        room_id = await membership.join(
            requester.user_id,
            request.match_info["roomIdOrAlias"],
            reason=body.reason,
            is_guest=requester.is_guest,
            via=servers_to_join_through(request),
        )
        return json_response({"room_id": room_id})

    async def knock(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, ReasonBody, allow_empty=True)
        room_id = await membership.knock(
            requester.user_id,
            request.match_info["roomIdOrAlias"],
            reason=body.reason,
            via=servers_to_join_through(request),
        )
        return json_response({"room_id": room_id})

    async def leave(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, ReasonBody, allow_empty=True)
        await membership.leave(requester.user_id, request.match_info["roomId"], reason=body.reason)
        return json_response({})

    async def forget(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        await membership.forget(requester.user_id, request.match_info["roomId"])
        return json_response({})

    def target_action(action: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            requester = hs.auth.requester(request)
            raw = await json_object(request)
            if action == "invite" and "user_id" not in raw and "medium" in raw:
                # spec: POST /invite with id_server, medium and address invites by third-party id
                raise MatrixError(400, "M_UNKNOWN", "third-party invites are not supported")
            body = validate(TargetBody, raw)
            method = getattr(membership, action)
            await method(requester.user_id, request.match_info["roomId"], body.user_id, reason=body.reason)
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
        body = await read(request, ReasonBody, allow_empty=True)
        event_id = await sender.redact(
            requester.user_id,
            requester.device_id,
            request.match_info["roomId"],
            request.match_info["eventId"],
            body.reason,
            request.match_info["txnId"],
            is_admin=requester.is_admin,
        )
        return json_response({"event_id": event_id})

    async def upgrade(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, UpgradeBody)
        new_room = await rooms.upgrades.upgrade(
            requester.user_id, request.match_info["roomId"], body.new_version, body.additional_creators
        )
        return json_response({"replacement_room": new_room})

    # -- reports ---------------------------------------------------------------------------------

    async def report_event(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, ReportEventBody, allow_empty=True)
        await rooms.report_event(
            requester.user_id, request.match_info["roomId"], request.match_info["eventId"], body.reason, body.score
        )
        return json_response({})

    async def report_room(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, ReportBody)
        await rooms.report_room(requester.user_id, request.match_info["roomId"], body.reason)
        return json_response({})

    async def report_user(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, ReportBody)
        await rooms.report_user(requester.user_id, request.match_info["userId"], body.reason)
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
