"""Profile routes. spec: client-server-api "Profiles": GET /profile/{userId} and
GET/PUT/DELETE /profile/{userId}/{keyName} (displayname, avatar_url, m.tz and custom keys, v1.16).

Look-ups need no token (spec) and are allowed for every user: we do not use the spec's option
to answer 403 for users who share no room with the requester.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.http import Router, json_object, json_response
from homeserver.errors import MatrixError
from homeserver.profile import check_key

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def displayname_only(request: web.Request) -> bool:
    """spec: guest access — the one profile field a guest may change."""
    return request.match_info.get("keyName") == "displayname"


def register(router: Router, hs: HomeServer) -> None:
    profiles = hs.profiles

    async def get_profile(request: web.Request) -> web.Response:
        return json_response(await profiles.lookup(request.match_info["userId"]))

    async def get_field(request: web.Request) -> web.Response:
        key = request.match_info["keyName"]
        value = await profiles.lookup_field(request.match_info["userId"], key)
        return json_response({key: value})

    async def put_field(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        hs.moderation.check_requester(requester)  # spec: suspended accounts may not change their profile
        key = request.match_info["keyName"]
        check_key(key)
        body = await json_object(request)
        if key not in body:
            raise MatrixError(400, "M_MISSING_PARAM", f"the body must hold the {key!r} property")
        await profiles.set_field(requester, request.match_info["userId"], key, body[key])
        return json_response({})

    async def delete_field(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        hs.moderation.check_requester(requester)
        await profiles.delete_field(requester, request.match_info["userId"], request.match_info["keyName"])
        return json_response({})

    router.client("GET", "/profile/{userId}", get_profile)
    router.client("GET", "/profile/{userId}/{keyName}", get_field)
    # spec: guest access — "Guest users may only modify their display name; other profile fields may not be changed"
    router.client("PUT", "/profile/{userId}/{keyName}", put_field, guests=displayname_only)
    router.client("DELETE", "/profile/{userId}/{keyName}", delete_field, guests=displayname_only)
