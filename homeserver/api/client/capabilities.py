"""Capabilities. spec: client-server-api "Capabilities negotiation" (GET /capabilities)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.api.http import Router, json_response
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def capabilities(default_room_version: str, *, is_admin: bool = False) -> dict[str, Any]:
    caps: dict[str, Any] = {
        "m.change_password": {"enabled": True},
        "m.room_versions": {
            "default": default_room_version,
            "available": {v: "stable" for v in KNOWN_ROOM_VERSIONS},  # spec: rooms 1-12 are all stable
        },
        # every profile field may be changed; the deprecated flags MUST agree (spec: m.profile_fields)
        "m.profile_fields": {"enabled": True},
        "m.set_displayname": {"enabled": True},
        "m.set_avatar_url": {"enabled": True},
        "m.3pid_changes": {"enabled": False},
        "m.get_login_token": {"enabled": True},
        "m.forget_forced_upon_leave": {"enabled": False},
    }
    if is_admin:
        # spec: m.account_moderation — present only for users who may lock or suspend
        caps["m.account_moderation"] = {"lock": True, "suspend": True}
    return caps


def register(router: Router, hs: HomeServer) -> None:
    async def get_capabilities(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        caps = capabilities(hs.config.default_room_version, is_admin=requester.is_admin)
        return json_response({"capabilities": caps})

    router.client("GET", "/capabilities", get_capabilities)
