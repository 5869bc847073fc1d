"""Admin registration APIs in Synapse's documented shapes, which admin tools and test suites use.

- Shared-secret registration: GET/POST /_synapse/admin/v1/register (nonce, then an HMAC-SHA1 mac).
- Registration tokens: /_synapse/admin/v1/registration_tokens (list with `valid`, get, new,
  update, delete); server admins only. Tokens are invites (homeserver/auth/invites.py): `new` also
  takes a `note` and `rooms` to join on sign-up; answers keep exactly Synapse's fields (admin tools
  compare them). Invites with all their fields: the invites API in homeserver/api/client/register.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web
from pydantic import Field

from homeserver.api.bodies import Body, read
from homeserver.api.client.login import session_json
from homeserver.api.http import Router, json_response, query_bool
from homeserver.auth.tokens import Requester
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

ADMIN_PREFIX = "/_synapse/admin/v1"


class SharedSecretBody(Body):
    nonce: str
    username: str
    password: str
    mac: str
    admin: bool = False
    user_type: str | None = None
    displayname: str | None = None


class NewTokenBody(Body):
    token: str | None = None
    length: int = 16
    uses_allowed: int | None = None
    expiry_time: int | None = None
    note: str | None = None
    rooms: list[str] = Field(default_factory=list)


class UpdateTokenBody(Body):
    uses_allowed: int | None = None
    expiry_time: int | None = None


def register(router: Router, hs: HomeServer) -> None:
    def admin(request: web.Request) -> Requester:
        requester = hs.auth.requester(request)
        if not requester.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        return requester

    async def get_nonce(request: web.Request) -> web.Response:
        return json_response({"nonce": hs.registration.new_nonce()})

    async def shared_secret_register(request: web.Request) -> web.Response:
        body = await read(request, SharedSecretBody, bad="M_INVALID_PARAM")
        if any("\x00" in v for v in (body.username, body.password, body.nonce)):
            raise MatrixError(400, "M_INVALID_PARAM", "fields must not contain NUL characters")
        done = await hs.registration.register_with_shared_secret(
            nonce=body.nonce,
            username=body.username,
            password=body.password,
            admin=body.admin,
            mac=body.mac,
            user_type=body.user_type,
            displayname=body.displayname,
        )
        return json_response(session_json(hs, done.user_id, done.session))

    async def list_tokens(request: web.Request) -> web.Response:
        admin(request)
        valid = query_bool(request, "valid") if "valid" in request.query else None
        return json_response({"registration_tokens": hs.registration_tokens.list(valid)})

    async def get_token(request: web.Request) -> web.Response:
        admin(request)
        token = request.match_info["token"]
        record = hs.registration_tokens.get(token)
        if record is None:
            raise MatrixError(404, "M_NOT_FOUND", f"no such registration token: {token}")
        return json_response(hs.registration_tokens.render(token, record))

    async def new_token(request: web.Request) -> web.Response:
        requester = admin(request)
        body = await read(request, NewTokenBody, allow_empty=True, bad="M_INVALID_PARAM")
        created = await hs.invites.create_token(
            body.token,
            length=body.length,
            uses_allowed=body.uses_allowed,
            expiry_time=body.expiry_time,
            note=body.note,
            rooms=body.rooms,
            creator=requester.user_id,
        )
        return json_response(created)

    async def update_token(request: web.Request) -> web.Response:
        admin(request)
        body = await read(request, UpdateTokenBody, allow_empty=True, bad="M_INVALID_PARAM")
        changes = {k: getattr(body, k) for k in ("uses_allowed", "expiry_time") if k in body.model_fields_set}
        updated = await hs.registration_tokens.update(request.match_info["token"], **changes)
        return json_response(updated)

    async def delete_token(request: web.Request) -> web.Response:
        admin(request)
        await hs.registration_tokens.delete(request.match_info["token"])
        return json_response({})

    router.add("GET", f"{ADMIN_PREFIX}/register", get_nonce)
    router.add("POST", f"{ADMIN_PREFIX}/register", shared_secret_register)
    router.add("GET", f"{ADMIN_PREFIX}/registration_tokens", list_tokens)
    router.add("POST", f"{ADMIN_PREFIX}/registration_tokens/new", new_token)
    router.add("GET", f"{ADMIN_PREFIX}/registration_tokens/{{token}}", get_token)
    router.add("PUT", f"{ADMIN_PREFIX}/registration_tokens/{{token}}", update_token)
    router.add("DELETE", f"{ADMIN_PREFIX}/registration_tokens/{{token}}", delete_token)
