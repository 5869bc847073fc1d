"""Account management: whoami, password change, deactivation, third-party identifiers.

spec: client-server-api "Current account information" (GET /account/whoami), "Password
management" (POST /account/password and its requestToken endpoints), "Account deactivation"
(POST /account/deactivate), "Adding Account Administrative Contact Information" (/account/3pid...).
This server keeps no third-party identifiers: the 3PID endpoints answer with the spec's errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from homeserver.api.bodies import Body, client_ip, read
from homeserver.api.client.register import EmailTokenBody, MsisdnTokenBody
from homeserver.api.http import Router, json_response
from homeserver.auth.login import check_password_value
from homeserver.auth.uia import PASSWORD
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

PASSWORD_FLOWS = [[PASSWORD]]  # without an access token: the password stage names the user


class PasswordBody(Body):
    new_password: str
    logout_devices: bool = True
    auth: Any = None


class DeactivateBody(Body):
    auth: Any = None
    erase: bool = False
    id_server: str | None = None


class ThreePidCreds(Body):
    client_secret: str
    sid: str
    id_server: str | None = None
    id_access_token: str | None = None


class Post3PidBody(Body):
    three_pid_creds: ThreePidCreds


class Add3PidBody(Body):
    client_secret: str
    sid: str
    auth: Any = None


class Bind3PidBody(Body):
    client_secret: str
    id_server: str
    id_access_token: str
    sid: str


class Remove3PidBody(Body):
    medium: Literal["email", "msisdn"]
    address: str
    id_server: str | None = None


def register(router: Router, hs: HomeServer) -> None:
    async def whoami(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        return json_response(
            {"user_id": requester.user_id, "device_id": requester.device_id, "is_guest": requester.is_guest}
        )

    async def change_password(request: web.Request) -> web.Response:
        # spec: an access token is optional; without one the password stage names the user
        requester = hs.auth.optional_requester(request)
        body = await read(request, PasswordBody)
        check_password_value(body.new_password, name="new_password")
        hs.auth.refuse_oauth_uia(requester)
        session = await hs.uia.authenticate(
            body.auth,
            hs.uia.flows_for(requester.user_id) if requester else PASSWORD_FLOWS,
            kind="password",
            user_id=requester.user_id if requester else None,
            ip=client_ip(request),
        )
        assert session.user_id is not None  # the password stage sets it
        await hs.accounts.set_password(
            session.user_id,
            body.new_password,
            logout_devices=body.logout_devices,
            keep=requester.device_id if requester else None,  # spec: SHOULD NOT revoke the caller's token
        )
        hs.uia.forget(session)
        return json_response({})

    async def deactivate(request: web.Request) -> web.Response:
        requester = hs.auth.optional_requester(request)
        body = await read(request, DeactivateBody)
        hs.auth.refuse_oauth_uia(requester)
        session = await hs.uia.authenticate(
            body.auth,
            hs.uia.flows_for(requester.user_id) if requester else PASSWORD_FLOWS,
            kind="deactivate",
            user_id=requester.user_id if requester else None,
            ip=client_ip(request),
        )
        assert session.user_id is not None
        await hs.deactivation.deactivate(session.user_id, erase=body.erase)
        hs.uia.forget(session)
        # spec: "success" when the homeserver has no identifiers to unbind
        return json_response({"id_server_unbind_result": "success"})

    # -- third-party identifiers -----------------------------------------------------------------

    async def get_3pids(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        return json_response({"threepids": []})

    async def post_3pid(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        await read(request, Post3PidBody)
        raise MatrixError(403, "M_THREEPID_AUTH_FAILED", "this server cannot verify third-party identifiers")

    async def add_3pid(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        await read(request, Add3PidBody)
        # no validation session was ever handed out, so none can be valid: say so before asking for a password
        raise MatrixError(400, "M_THREEPID_AUTH_FAILED", "unknown third-party validation session")

    async def bind_3pid(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        await read(request, Bind3PidBody)
        raise MatrixError(400, "M_SERVER_NOT_TRUSTED", "this server does not use identity servers")

    async def remove_3pid(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        await read(request, Remove3PidBody)
        # spec: with no record of the identity server, the result is "no-support"; nothing is stored
        return json_response({"id_server_unbind_result": "no-support"})

    async def threepid_email_token(request: web.Request) -> web.Response:
        await read(request, EmailTokenBody)
        raise MatrixError(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "this server does not add email addresses")

    async def threepid_msisdn_token(request: web.Request) -> web.Response:
        await read(request, MsisdnTokenBody)
        raise MatrixError(400, "M_THREEPID_MEDIUM_NOT_SUPPORTED", "this server does not add phone numbers")

    async def password_email_token(request: web.Request) -> web.Response:
        await read(request, EmailTokenBody)
        raise MatrixError(400, "M_THREEPID_NOT_FOUND", "no account has that email address")

    async def password_msisdn_token(request: web.Request) -> web.Response:
        await read(request, MsisdnTokenBody)
        raise MatrixError(400, "M_THREEPID_NOT_FOUND", "no account has that phone number")

    router.client("GET", "/account/whoami", whoami, guests=True)  # spec: guest access (v1.2)
    router.client("POST", "/account/password", change_password)
    router.client("POST", "/account/deactivate", deactivate)
    router.client("GET", "/account/3pid", get_3pids)
    router.client("POST", "/account/3pid", post_3pid)
    router.client("POST", "/account/3pid/add", add_3pid)
    router.client("POST", "/account/3pid/bind", bind_3pid)
    router.client("POST", "/account/3pid/delete", remove_3pid)
    router.client("POST", "/account/3pid/unbind", remove_3pid)
    router.client("POST", "/account/3pid/email/requestToken", threepid_email_token)
    router.client("POST", "/account/3pid/msisdn/requestToken", threepid_msisdn_token)
    router.client("POST", "/account/password/email/requestToken", password_email_token)
    router.client("POST", "/account/password/msisdn/requestToken", password_msisdn_token)
