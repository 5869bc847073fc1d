"""The OAuth 2.0 API's machine endpoints: discovery, client registration, token, revocation and
device authorization (homeserver/auth/oauth/). The pages a person sees are in oauth_pages.py.

spec: client-server-api "OAuth 2.0 API", GET /_matrix/client/v1/auth_metadata; RFC 8414 (metadata),
RFC 7591 (registration), RFC 6749 section 3.2 (token), RFC 7009 (revocation), RFC 8628 (device
authorization). Errors are OAuth's `{"error", "error_description"}`, never Matrix JSON, except the
429 of a rate limit. Every answer has the CORS headers (web clients such as Element Web call these
from the browser) and token answers are never cached (RFC 6749 5.1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from aiohttp import web

from homeserver.api.bodies import client_ip
from homeserver.api.http import Router, json_object, json_response, read_body
from homeserver.auth.oauth.errors import OAuthError
from homeserver.auth.oauth.metadata import (
    DEVICE_AUTHORIZATION_PATH,
    DEVICE_PAGE_PATH,
    REGISTRATION_PATH,
    REVOCATION_PATH,
    TOKEN_PATH,
    server_metadata,
)
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

MAX_FORM_BYTES = 16 * 1024
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


async def read_form(request: web.Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body as a dict (RFC 6749 3.2: the token endpoint's
    format); `invalid_request` for anything else."""
    if request.content_type != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    try:
        raw = await read_body(request, MAX_FORM_BYTES)
        pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except (MatrixError, UnicodeDecodeError):
        raise OAuthError("invalid_request", f"the body must be a form of at most {MAX_FORM_BYTES} bytes") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:  # RFC 6749 3.2: parameters must not be repeated
            raise OAuthError("invalid_request", f"{key} is repeated")
        form[key] = value
    return form


def oauth_errors(
    handler: Callable[[web.Request], Awaitable[web.Response]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def answered(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except OAuthError as e:
            headers = dict(NO_STORE)
            if e.status == 401:
                headers["WWW-Authenticate"] = 'Bearer error="invalid_client"'
            return json_response(e.to_json(), status=e.status, headers=headers)

    return answered


def register(router: Router, hs: HomeServer) -> None:
    if not hs.config.oauth.enabled:
        return
    base = hs.invites.base_url()

    def limit(request: web.Request, what: str) -> None:
        hs.ratelimiter.check("oauth", f"{what}:{client_ip(request)}")

    async def auth_metadata(request: web.Request) -> web.Response:
        return json_response(server_metadata(base, signup=hs.browser_accounts.signup_open()))

    async def auth_issuer(request: web.Request) -> web.Response:
        # MSC2965's first form, which older clients still ask: the issuer, then its discovery document
        return json_response({"issuer": f"{base}/"})

    @oauth_errors
    async def register_client(request: web.Request) -> web.Response:
        limit(request, "register")
        try:
            body = await json_object(request)
        except MatrixError as e:
            raise OAuthError("invalid_client_metadata", e.message) from None
        return json_response(await hs.oauth_clients.register(body), status=201, headers=NO_STORE)

    @oauth_errors
    async def token(request: web.Request) -> web.Response:
        limit(request, "token")
        return json_response(await hs.oauth.token(await read_form(request)), headers=NO_STORE)

    @oauth_errors
    async def revoke(request: web.Request) -> web.Response:
        limit(request, "revoke")
        await hs.oauth.revoke(await read_form(request))
        return json_response({}, headers=NO_STORE)

    @oauth_errors
    async def device_authorization(request: web.Request) -> web.Response:
        limit(request, "device")
        answer = hs.oauth.device_authorization(await read_form(request), base + DEVICE_PAGE_PATH)
        return json_response(answer, headers=NO_STORE)

    router.add("GET", "/_matrix/client/v1/auth_metadata", auth_metadata)
    router.add("GET", "/_matrix/client/unstable/org.matrix.msc2965/auth_metadata", auth_metadata)
    router.add("GET", "/_matrix/client/unstable/org.matrix.msc2965/auth_issuer", auth_issuer)
    router.add("GET", "/.well-known/openid-configuration", auth_metadata)
    router.add("GET", "/.well-known/oauth-authorization-server", auth_metadata)
    router.add("POST", REGISTRATION_PATH, register_client)
    router.add("POST", TOKEN_PATH, token)
    router.add("POST", REVOCATION_PATH, revoke)
    router.add("POST", DEVICE_AUTHORIZATION_PATH, device_authorization)
