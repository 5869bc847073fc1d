"""Account registration.

spec: client-server-api "Account registration" (POST /register, GET /register/available,
POST /register/{email,msisdn}/requestToken), "Token-authenticated registration"
(GET /v1/register/m.login.registration_token/validity), guest_access module; and invites made by
users for their friends (`INVITES_PATH`, this server's own API; homeserver/auth/invites.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import Field

from homeserver.api.bodies import Body, client_ip, read
from homeserver.api.client.login import session_json
from homeserver.api.http import Router, json_object, json_response, query_bool
from homeserver.auth.login import LoginOptions, check_device_id, check_password_value
from homeserver.errors import MatrixError
from homeserver.validation import validate

if TYPE_CHECKING:
    from homeserver.server import HomeServer

# Request fields a UIA session remembers, so later rounds may omit them (spec lets clients resend
# only `auth`; Element resends everything, others do not).
INVITES_PATH = "/_matrix/client/unstable/org.homeserver.invites"

_REMEMBERED = ("username", "password", "device_id", "initial_device_display_name", "inhibit_login", "refresh_token")


class RegisterBody(Body):
    auth: Any = None
    username: str | None = None
    password: str | None = None
    device_id: str | None = None
    initial_device_display_name: str | None = None
    inhibit_login: bool | None = None
    refresh_token: bool | None = None
    guest_access_token: str | None = None


class NewInviteBody(Body):
    uses: int | None = 1
    expires_in_ms: int | None = None
    never_expires: bool = False  # admins only (users' invites always expire)
    admin: bool = False  # admins only: the account becomes a server admin
    note: str | None = None
    rooms: list[str] = Field(default_factory=list)


class GuestRegisterBody(Body):
    initial_device_display_name: str | None = None


class EmailTokenBody(Body):
    client_secret: str
    email: str
    send_attempt: int


class MsisdnTokenBody(Body):
    client_secret: str
    country: str
    phone_number: str
    send_attempt: int


def register(router: Router, hs: HomeServer) -> None:
    async def post_register(request: web.Request) -> web.Response:
        ip = client_ip(request)
        kind = request.query.get("kind", "user")
        if kind not in ("user", "guest"):
            raise MatrixError(400, "M_INVALID_PARAM", "kind must be 'user' or 'guest'")
        raw = await json_object(request, allow_empty=True)
        if kind == "guest":
            # spec: for guests every parameter but initial_device_display_name MUST be ignored
            name = validate(GuestRegisterBody, raw).initial_device_display_name
            hs.ratelimiter.check("registration", f"ip:{ip}")
            guest = await hs.registration.register_guest(name, ip)
            return json_response(session_json(hs, guest.user_id, guest.session))

        flows = hs.registration.flows()  # 403 when registration is closed
        body = validate(RegisterBody, raw)
        guest_user_id = None
        if body.guest_access_token is not None:
            guest_user_id = hs.registration.guest_to_upgrade(body.guest_access_token, body.username)
        elif body.username is not None:
            # spec: username checks come before user-interactive authentication
            hs.registration.check_username(body.username)
        if body.password is not None:
            check_password_value(body.password)
        check_device_id(body.device_id)
        if body.auth is not None:
            hs.ratelimiter.check("registration", f"ip:{ip}")
        remember = {k: getattr(body, k) for k in _REMEMBERED if getattr(body, k) is not None}
        session = await hs.uia.authenticate(body.auth, flows, kind="register", ip=ip, remember=remember)

        req: dict[str, Any] = session.data.get("request", {})
        password = req.get("password")
        if password is None:
            raise MatrixError(400, "M_MISSING_PARAM", "password is required")
        login = None
        if not req.get("inhibit_login", False):
            login = LoginOptions(
                req.get("device_id"), req.get("initial_device_display_name"), bool(req.get("refresh_token")), ip
            )
        done = await hs.registration.register(
            session, username=req.get("username"), password=password, login=login, guest_user_id=guest_user_id
        )
        return json_response(session_json(hs, done.user_id, done.session))

    async def available(request: web.Request) -> web.Response:
        username = request.query.get("username")
        if username is None:
            raise MatrixError(400, "M_MISSING_PARAM", "username is required")
        hs.registration.flows()  # 403 when registration is closed
        hs.registration.check_username(username)
        return json_response({"available": True})

    async def token_validity(request: web.Request) -> web.Response:
        token = request.query.get("token")
        if token is None:
            raise MatrixError(400, "M_MISSING_PARAM", "token is required")
        # spec: servers should rate limit this endpoint against brute force
        hs.ratelimiter.check("registration", f"validity:{client_ip(request)}")
        return json_response({"valid": hs.registration.token_valid(token)})

    async def email_request_token(request: web.Request) -> web.Response:
        await read(request, EmailTokenBody)
        raise MatrixError(403, "M_THREEPID_DENIED", "this server does not register accounts by email")

    async def msisdn_request_token(request: web.Request) -> web.Response:
        await read(request, MsisdnTokenBody)
        raise MatrixError(403, "M_THREEPID_DENIED", "this server does not register accounts by phone number")

    async def create_invite(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        body = await read(request, NewInviteBody, allow_empty=True, bad="M_INVALID_PARAM")
        created = await hs.invites.create(
            creator=requester.user_id,
            as_admin=requester.is_admin,
            uses=body.uses,
            expires_in_ms=body.expires_in_ms,
            never_expires=body.never_expires,
            note=body.note,
            rooms=body.rooms,
            admin=body.admin,
        )
        return json_response(created)

    async def list_invites(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        # admins see every invite with ?all=true (the CLI's `invite list` over HTTP)
        everyone = requester.is_admin and query_bool(request, "all")
        return json_response({"invites": hs.invites.list(creator=None if everyone else requester.user_id)})

    async def revoke_invite(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        token = request.match_info["token"]
        revoked = await hs.invites.revoke(token, by=requester.user_id, as_admin=requester.is_admin)
        return json_response(revoked)

    router.add("POST", INVITES_PATH, create_invite)
    router.add("GET", INVITES_PATH, list_invites)
    router.add("DELETE", f"{INVITES_PATH}/{{token}}", revoke_invite)
    router.client("POST", "/register", post_register)
    router.client("GET", "/register/available", available)
    router.client("POST", "/register/email/requestToken", email_request_token)
    router.client("POST", "/register/msisdn/requestToken", msisdn_request_token)
    router.client("GET", "/register/m.login.registration_token/validity", token_validity, versions=("v1",))
