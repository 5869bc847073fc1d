"""User-interactive auth stages done in a browser: `/_matrix/client/v3/auth/{type}/fallback/web`.

spec: client-server-api UIA "Fallback": a client that cannot handle a stage opens this page with its
`session`; the page performs the stage and ends with the spec's script, after which the client
retries its request with only the session. Stages served here:
  - `m.login.sso` (homeserver/auth/uia_sso.py): says what is being confirmed and links to the
    user's provider(s); the provider sends the browser to our SSO callback, which completes it;
  - `m.login.password`: a password form (CSRF double submit), for a session that knows its user.
Any other stage, and any session that is unknown, expired or cannot use the stage, gets an HTML page
saying so (never Matrix JSON: a person reads it).
"""

from __future__ import annotations

import hmac
import secrets
from typing import TYPE_CHECKING

from aiohttp import web

from homeserver.api.bodies import client_ip
from homeserver.api.client.login import SSO_COOKIE
from homeserver.api.http import Router
from homeserver.api.pages import CSRF_COOKIE, MAX_FORM_BYTES, auth_done_page, html
from homeserver.auth.sso import CALLBACK_PATH, SsoFailed
from homeserver.auth.uia import PASSWORD, SSO, UiaSession
from homeserver.errors import MatrixError
from homeserver.web.catalogue import Strings, best_language

if TYPE_CHECKING:
    from homeserver.server import HomeServer

FALLBACK = "/auth/{stage}/fallback/web"


def register(router: Router, hs: HomeServer) -> None:
    def language(request: web.Request) -> str:
        return best_language(request.headers.get("Accept-Language"))

    def error_page(request: web.Request, reason: str, status: int) -> web.Response:
        return html(hs.pages.render("sso_error.html", language(request), reason=reason), status)

    def action_text(t: Strings, session: UiaSession) -> str:
        key = f"uia_action_{session.action}"
        return t.get(key, t.uia_action_other)

    async def sso_page(request: web.Request) -> web.Response:
        try:
            view = hs.sso_reauth.view(request.query.get("session", ""))
        except SsoFailed as e:
            return error_page(request, e.reason, e.status)
        try:
            # each provider link is an attempt remembered for ten minutes: as limited as /login/sso/redirect
            hs.ratelimiter.check("login", f"sso:{client_ip(request)}")
        except MatrixError:
            return error_page(request, "uia_too_many", 429)
        cookie = secrets.token_urlsafe(24)
        try:
            links = await hs.sso_reauth.links(view, cookie)
        except MatrixError:
            return error_page(request, "provider", 502)
        session = hs.uia.get(view.session_id)
        assert session is not None  # looked up just now, in the same turn of the event loop
        t = Strings(language(request))
        body = hs.pages.render(
            "uia_confirm.html", t.lang, user_id=view.user_id, action=action_text(t, session), providers=links, error=""
        )
        response = html(body)
        # Lax: the provider sends the browser back with a top-level GET from its own site
        response.set_cookie(
            SSO_COOKIE, cookie, path=CALLBACK_PATH, httponly=True, samesite="Lax", secure=request.secure, max_age=600
        )
        return response

    def password_session(request: web.Request) -> UiaSession | str:
        """The session a password page is for, or the reason it cannot be."""
        session = hs.uia.get(request.query.get("session", ""))
        if session is None:
            return "uia_session"
        if session.user_id is None or not hs.login.has_password(session.user_id):
            return "uia_no_password"
        return session

    def password_form(
        request: web.Request, session: UiaSession, csrf: str, error: str = "", status: int = 200
    ) -> web.Response:
        assert session.user_id is not None
        t = Strings(language(request))
        body = hs.pages.render(
            "uia_confirm.html",
            t.lang,
            user_id=session.user_id,
            action=action_text(t, session),
            providers=[],
            error=error,
            csrf=csrf,
            action_url=request.path_qs,
        )
        response = html(body, status)
        response.set_cookie(
            CSRF_COOKIE, csrf, path=request.path, httponly=True, samesite="Strict", secure=request.secure, max_age=1800
        )
        return response

    async def get_fallback(request: web.Request) -> web.Response:
        stage = request.match_info["stage"]
        if stage == SSO:
            return await sso_page(request)
        if stage == PASSWORD:
            found = password_session(request)
            if isinstance(found, str):
                return error_page(request, found, 400)
            return password_form(request, found, request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24))
        return error_page(request, "uia_unsupported", 404)

    async def post_fallback(request: web.Request) -> web.Response:
        if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            # not a browser's form: a program gets a Matrix error it can read
            raise MatrixError(415, "M_UNRECOGNIZED", "this page takes an HTML form")
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", "form too large")
        if request.match_info["stage"] != PASSWORD:
            return error_page(request, "uia_unsupported", 404)
        found = password_session(request)
        if isinstance(found, str):
            return error_page(request, found, 400)
        form = await request.post()
        csrf, password = form.get("csrf"), form.get("password")
        cookie = request.cookies.get(CSRF_COOKIE, "")
        t = Strings(language(request))
        if not cookie or not isinstance(csrf, str) or not hmac.compare_digest(cookie, csrf):
            return password_form(request, found, secrets.token_urlsafe(24), t.err_form_expired, 400)
        assert found.user_id is not None
        try:
            if not isinstance(password, str) or not password:
                raise MatrixError(403, "M_FORBIDDEN", "no password")
            await hs.login.verify(found.user_id, password, client_ip(request))
        except MatrixError as e:
            message, status = (t.err_too_many, 429) if e.status == 429 else (t.uia_wrong_password, 403)
            return password_form(request, found, cookie, message, status)
        if not hs.uia.complete_out_of_band(found.id, PASSWORD, found.user_id):
            return error_page(request, "uia_session", 400)
        response = auth_done_page(hs, t.lang)
        response.del_cookie(CSRF_COOKIE, path=request.path)
        return response

    router.client("GET", FALLBACK, get_fallback)
    router.client("POST", FALLBACK, post_fallback)
