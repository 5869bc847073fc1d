"""Login, token refresh and logout (legacy authentication API).

spec: client-server-api "Login" (GET/POST /login), "Refreshing access tokens" (POST /refresh),
POST /logout, POST /logout/all, "Client login via SSO" (GET /login/sso/redirect[/{idpId}]; the
provider's callback is a page: homeserver/api/pages.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from homeserver.api.bodies import Body, client_ip, read
from homeserver.api.http import Router, json_object, json_response
from homeserver.auth.login import LOGIN_FLOWS
from homeserver.auth.sso import CALLBACK_PATH, INVITE_PARAM, check_redirect_url
from homeserver.auth.tokens import Session
from homeserver.errors import MatrixError
from homeserver.validation import validate

if TYPE_CHECKING:
    from homeserver.server import HomeServer


SSO_COOKIE = "hs_sso"


class LoginBody(Body):
    """The login type picks the rest of the body's shape, checked by the login service."""

    type: str


class RefreshBody(Body):
    refresh_token: str


def session_json(hs: HomeServer, user_id: str, session: Session | None, *, well_known: bool = False) -> dict[str, Any]:
    """The body of a successful login or registration."""
    body: dict[str, Any] = {"user_id": user_id, "home_server": hs.server_name}
    if session is not None:
        body["access_token"] = session.access_token
        body["device_id"] = session.device_id
        if session.refresh_token is not None:
            body["refresh_token"] = session.refresh_token
        if session.expires_in_ms is not None:
            body["expires_in_ms"] = session.expires_in_ms
    if well_known and hs.config.public_baseurl:
        body["well_known"] = {"m.homeserver": {"base_url": hs.config.public_baseurl.rstrip("/")}}
    return body


def register(router: Router, hs: HomeServer) -> None:
    async def get_login(request: web.Request) -> web.Response:
        flows = list(LOGIN_FLOWS)
        if hs.sso.enabled or hs.config.oauth.enabled:
            sso: dict[str, Any] = {"type": "m.login.sso", "identity_providers": hs.sso.identity_providers()}
            if hs.config.oauth.enabled:
                # spec: "OAuth 2.0 aware clients" — the SSO flow leads to the OAuth sign-in page
                sso["oauth_aware_preferred"] = True
            flows.append(sso)
        return json_response({"flows": flows})

    async def sso_redirect(request: web.Request) -> web.StreamResponse:
        provider = request.match_info.get("idpId")
        invite = request.query.get(INVITE_PARAM)
        if provider is None and hs.config.oauth.enabled:
            # spec: "OAuth 2.0 aware clients": our sign-in (or, with action=register, sign-up) page,
            # then a login token back to redirectUrl (homeserver/api/oauth_pages.py)
            back = check_redirect_url(request.query.get("redirectUrl"))
            done = f"/_homeserver/oauth/legacy_sso?{urlencode({'redirectUrl': back})}"
            page = "signup" if request.query.get("action") == "register" else "login"
            location = f"/_homeserver/oauth/{page}?{urlencode({'next': done})}"
            return web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
        # each attempt is remembered for ten minutes (a bounded table): a flood must not push out real ones
        hs.ratelimiter.check("login", f"sso:{client_ip(request)}")
        auth_url, cookie = await hs.sso.start(provider, request.query.get("redirectUrl"), invite)
        response = web.Response(status=302, headers={"Location": auth_url, "Cache-Control": "no-store"})
        # Lax: the provider sends the browser back with a top-level GET from its own site
        response.set_cookie(
            SSO_COOKIE, cookie, path=CALLBACK_PATH, httponly=True, samesite="Lax", secure=request.secure, max_age=600
        )
        return response

    async def post_login(request: web.Request) -> web.Response:
        body = await json_object(request)
        login_type = validate(LoginBody, body).type
        if login_type == "m.login.token":
            result = await hs.login.token_login(body, client_ip(request))
        elif login_type == "m.login.password":
            result = await hs.login.password_login(body, client_ip(request))
        else:
            raise MatrixError(400, "M_UNKNOWN", f"unknown login type {login_type}")
        return json_response(session_json(hs, result.user_id, result.session, well_known=True))

    async def get_token(request: web.Request) -> web.Response:
        # spec: POST /login/get_token — user-interactive auth, then a single-use token for m.login.token
        requester = hs.auth.requester(request)
        body = await json_object(request, allow_empty=True)
        await hs.auth.require(request, requester, body, "create a login token", "login_token")
        hs.ratelimiter.check("login", f"user:{requester.user_id}")
        token, lifetime = hs.login_tokens.issue(requester.user_id)
        return json_response({"login_token": token, "expires_in_ms": lifetime})

    async def refresh(request: web.Request) -> web.Response:
        body = await read(request, RefreshBody)
        session = await hs.tokens.refresh(body.refresh_token)
        out: dict[str, Any] = {"access_token": session.access_token, "refresh_token": session.refresh_token}
        if session.expires_in_ms is not None:
            out["expires_in_ms"] = session.expires_in_ms
        return json_response(out)

    async def logout(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        await hs.accounts.delete_devices(requester.user_id, [requester.device_id])
        return json_response({})

    async def logout_all(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        await hs.accounts.delete_all_devices(requester.user_id)
        return json_response({})

    router.client("GET", "/login", get_login)
    router.client("GET", "/login/sso/redirect", sso_redirect)
    router.client("GET", "/login/sso/redirect/{idpId}", sso_redirect)
    router.client("POST", "/login", post_login)
    router.add("POST", "/_matrix/client/v1/login/get_token", get_token)
    router.client("POST", "/refresh", refresh)
    router.client("POST", "/logout", logout)
    router.client("POST", "/logout/all", logout_all)
