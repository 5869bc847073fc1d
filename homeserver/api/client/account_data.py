"""Account data and room tags (spec: modules/account_data.md, tags.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.bodies import Body
from homeserver.api.http import Router, json_object, json_response
from homeserver.errors import MatrixError
from homeserver.protocol.identifiers import is_valid_room_id
from homeserver.validation import validate

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class TagBody(Body):
    """spec: tags.md — `order` is a number; other keys are kept with the tag."""

    order: float | None = None


def register(router: Router, hs: HomeServer) -> None:
    data = hs.account_data

    def own_user(request: web.Request) -> str:
        requester = hs.auth.requester(request)
        if request.match_info["userId"] != requester.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "Cannot access account data of other users")
        return requester.user_id

    def room_id(request: web.Request) -> str:
        value = request.match_info["roomId"]
        if not is_valid_room_id(value):
            raise MatrixError(400, "M_INVALID_PARAM", f"{value} is not a valid room ID")
        return value

    async def get_global(request: web.Request) -> web.Response:
        user_id = own_user(request)
        content = data.get(user_id, request.match_info["type"])
        if content is None:
            raise MatrixError(404, "M_NOT_FOUND", "Account data not found")
        return json_response(content)

    async def put_global(request: web.Request) -> web.Response:
        user_id = own_user(request)
        data_type = request.match_info["type"]
        data.check_client_writable(data_type)
        await data.set(user_id, data_type, await json_object(request))
        return json_response({})

    async def get_room(request: web.Request) -> web.Response:
        user_id = own_user(request)
        content = data.get(user_id, request.match_info["type"], room_id(request))
        if content is None:
            raise MatrixError(404, "M_NOT_FOUND", "Room account data not found")
        return json_response(content)

    async def put_room(request: web.Request) -> web.Response:
        user_id = own_user(request)
        room = room_id(request)
        data_type = request.match_info["type"]
        data.check_client_writable(data_type, room)
        await data.set(user_id, data_type, await json_object(request), room)
        return json_response({})

    async def get_tags(request: web.Request) -> web.Response:
        user_id = own_user(request)
        return json_response({"tags": data.tags(user_id, room_id(request))})

    async def put_tag(request: web.Request) -> web.Response:
        user_id = own_user(request)
        room = room_id(request)
        raw = await json_object(request)
        validate(TagBody, raw, bad="M_INVALID_PARAM")  # the tag is stored as sent (1 stays 1, not 1.0)
        await data.set_tag(user_id, room, request.match_info["tag"], raw)
        return json_response({})

    async def delete_tag(request: web.Request) -> web.Response:
        user_id = own_user(request)
        await data.remove_tag(user_id, room_id(request), request.match_info["tag"])
        return json_response({})

    router.client("GET", "/user/{userId}/account_data/{type}", get_global)
    router.client("PUT", "/user/{userId}/account_data/{type}", put_global)
    router.client("GET", "/user/{userId}/rooms/{roomId}/account_data/{type}", get_room)
    router.client("PUT", "/user/{userId}/rooms/{roomId}/account_data/{type}", put_room)
    router.client("GET", "/user/{userId}/rooms/{roomId}/tags", get_tags)
    router.client("PUT", "/user/{userId}/rooms/{roomId}/tags/{tag}", put_tag)
    router.client("DELETE", "/user/{userId}/rooms/{roomId}/tags/{tag}", delete_tag)
