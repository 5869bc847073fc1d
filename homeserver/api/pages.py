"""The web pages' routes (templates and strings in homeserver/web/): the invite page at
`/invite/<token>` and its sign-up form, and the single-sign-on callback with its confirmation and
error pages (homeserver/auth/sso.py), and the page that ends a user-interactive auth stage done in
the browser (homeserver/api/uia_fallback.py).

Pages answer in HTML, never Matrix JSON: every refusal is a page with the right status (404 an
unknown invite, 410 one used up, expired or revoked, 403 sign-up closed, 400/409 a form to fix,
429 too many tries). Forms carry a CSRF token matched against a cookie (double submit); failed
look-ups and sign-ups are rate limited per address against guessing tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from aiohttp import web
from markupsafe import Markup

from homeserver.api.bodies import client_ip
from homeserver.api.client.login import SSO_COOKIE
from homeserver.api.http import Router
from homeserver.auth.oauth.metadata import OAUTH_PREFIX
from homeserver.auth.sso import CALLBACK_PATH, SsoFailed
from homeserver.errors import MatrixError
from homeserver.web import qr_svg
from homeserver.web.catalogue import Strings, best_language
from homeserver.web.clients import deep_links, platform_of, register_links, suggestions

if TYPE_CHECKING:
    from homeserver.server import HomeServer

log = logging.getLogger(__name__)

MIN_PASSWORD = 8
MAX_FORM_BYTES = 8 * 1024
CSRF_COOKIE = "hs_csrf"
STATUS_CODES = {"unknown": 404, "used": 410, "expired": 410, "revoked": 410, "closed": 403}
# a page's resources are its own markup: inline style, inline SVG, nothing fetched, no scripts
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# spec: UIA "Fallback" — the page that ends a stage MUST run this script; it is the only script we serve
AUTH_DONE_SCRIPT = (
    "if (window.onAuthDone) {\n    window.onAuthDone();\n"
    "} else if (window.opener && window.opener.postMessage) {\n"
    '    window.opener.postMessage("authDone", "*");\n}'
)
_AUTH_DONE_HASH = base64.b64encode(hashlib.sha256(AUTH_DONE_SCRIPT.encode()).digest()).decode()


def html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


def auth_done_page(hs: HomeServer, lang: str) -> web.Response:
    """spec: UIA "Fallback" — a stage completed in the browser: tell the client (the spec's script,
    allowed by its hash alone) and the user (go back to the app)."""
    body = hs.pages.render("uia_done.html", lang, script=Markup(AUTH_DONE_SCRIPT))
    response = html(body)
    csp = PAGE_HEADERS["Content-Security-Policy"]
    response.headers["Content-Security-Policy"] = f"{csp}; script-src 'sha256-{_AUTH_DONE_HASH}'"
    return response


def register(router: Router, hs: HomeServer) -> None:
    pages = hs.pages

    def language(request: web.Request) -> str:
        return best_language(request.headers.get("Accept-Language"))

    def status_page(request: web.Request, status: str) -> web.Response:
        return html(pages.render("invite_status.html", language(request), status=status), STATUS_CODES[status])

    def limited(request: web.Request, what: str) -> bool:
        try:
            hs.ratelimiter.check("registration", f"{what}:{client_ip(request)}")
        except MatrixError:
            return True
        return False

    def signed_up_page(lang: str, user_id: str) -> str:
        base = hs.invites.base_url()
        return pages.render(
            "signed_up.html", lang, user_id=user_id, base_url=base, deep_links=deep_links(base, hs.server_name)
        )

    def invite_page(
        request: web.Request,
        token: str,
        csrf: str,
        *,
        errors: Sequence[str] = (),
        username: str = "",
        status: int = 200,
    ) -> web.Response:
        view = hs.invites.view(token)
        platform = platform_of(request.headers.get("User-Agent"))
        mine, rest = suggestions(platform)
        page_url = hs.invites.link(token)
        lang = language(request)
        body = pages.render(
            "invite.html",
            lang,
            invite=view,
            platform=platform,
            mine=mine,
            rest=rest,
            errors=list(errors),
            username=username,
            csrf=csrf,
            action=f"/invite/{token}",
            min_password=MIN_PASSWORD,
            page_url=page_url,
            qr=qr_svg(page_url, Strings(lang).qr_title),
            register_links=register_links(hs.server_name, token),
            sso_links=hs.sso.signup_links(token),
        )
        response = html(body, status)
        response.set_cookie(
            CSRF_COOKIE,
            csrf,
            path=f"/invite/{token}",
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            max_age=3600,
        )
        return response

    async def get_invite(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        view = hs.invites.view(token)
        if view.status != "valid":
            # guessing tokens costs a rate-limit token per miss; a real link is never limited
            if view.status == "unknown" and limited(request, "invite-page"):
                return html(pages.render("invite_status.html", language(request), status="unknown"), 429)
            return status_page(request, view.status)
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        response = invite_page(request, token, csrf)
        # an app that signs up through the OAuth pages (Element X) finds the invite filled in there
        response.set_cookie(
            "hs_invite",
            token,
            path="/_homeserver/",
            httponly=True,
            samesite="Lax",
            secure=request.secure,
            max_age=86_400,
        )
        return response

    async def post_invite(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        t = Strings(language(request))
        if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            # not a browser's form: a program gets a Matrix error it can read
            raise MatrixError(415, "M_UNRECOGNIZED", "this page takes an HTML form")
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", "form too large")
        form = await request.post()
        fields: dict[str, str] = {k: v for k, v in form.items() if isinstance(v, str)}
        csrf_cookie = request.cookies.get(CSRF_COOKIE, "")
        fresh = secrets.token_urlsafe(24)
        view = hs.invites.view(token)
        if view.status != "valid" or not view.password:  # no password sign-up: single sign-on only
            return status_page(request, view.status if view.status != "valid" else "closed")
        username = fields.get("username", "").strip()
        if limited(request, "invite-signup"):
            return invite_page(request, token, fresh, errors=[t.err_too_many], username=username, status=429)
        if not csrf_cookie or not hmac.compare_digest(csrf_cookie, fields.get("csrf", "")):
            return invite_page(request, token, fresh, errors=[t.err_form_expired], username=username, status=400)
        password, password2 = fields.get("password", ""), fields.get("password2", "")
        errors = []
        if password != password2:
            errors.append(t.err_passwords_differ)
        elif len(password) < MIN_PASSWORD:
            errors.append(t.err_password_short.format(min=MIN_PASSWORD))
        if not username:
            errors.append(t.err_username_invalid)
        if errors:
            return invite_page(request, token, csrf_cookie, errors=errors, username=username, status=400)
        try:
            user_id = await hs.registration.register_with_invite(token, username, password)
        except MatrixError as e:
            answer = _form_error(e, t)
            if answer is None:  # the invite went while the form was filled in
                return status_page(request, hs.invites.view(token).status)
            message, status = answer
            return invite_page(request, token, csrf_cookie, errors=[message], username=username, status=status)
        response = html(signed_up_page(t.lang, user_id))
        response.del_cookie(CSRF_COOKIE, path=f"/invite/{token}")
        return response

    async def sso_callback(request: web.Request) -> web.Response:
        provider = request.match_info["idp_id"]
        lang = language(request)
        query = {k: v for k, v in request.query.items() if isinstance(v, str)}
        try:
            done = await hs.sso.finish(provider, query, request.cookies.get(SSO_COOKIE))
        except SsoFailed as e:
            log.info("single sign-on with %s failed: %s", provider, e.detail or e.reason)
            back = oauth_sign_in_again(hs, e.redirect_url)
            return html(pages.render("sso_error.html", lang, reason=e.reason, back=back), e.status)
        # the OAuth pages' own hand-off (homeserver/api/oauth_pages.py) needs no confirmation
        own = done.redirect_to.startswith(f"{hs.invites.base_url()}/_homeserver/oauth/")
        if done.page == "uia_done":
            response = auth_done_page(hs, lang)
        elif done.welcome:
            response = html(signed_up_page(lang, done.user_id))
        elif not done.confirm or own:
            response = web.Response(status=302, headers={**PAGE_HEADERS, "Location": done.redirect_to})
        else:
            body = pages.render(
                "sso_confirm.html", lang, host=done.client_host, user_id=done.user_id, redirect_to=done.redirect_to
            )
            response = html(body)
        response.del_cookie(SSO_COOKIE, path=CALLBACK_PATH)
        return response

    router.add("GET", f"{CALLBACK_PATH}/{{idp_id}}", sso_callback)
    router.add("GET", "/invite/{token}", get_invite)
    router.add("POST", "/invite/{token}", post_invite)


def oauth_sign_in_again(hs: HomeServer, redirect_url: str) -> str | None:
    """The OAuth sign-in page again for a sign-in that the OAuth pages sent to a provider and that
    failed (refused account, cancelled, …), so the user can try another way: an app's browser tab
    often has no back button. `next` is checked by that page (homeserver/api/oauth_pages.py)."""
    prefix = f"{hs.invites.base_url()}{OAUTH_PREFIX}/sso?"
    if not hs.config.oauth.enabled or not redirect_url.startswith(prefix):
        return None
    next_url = dict(parse_qsl(redirect_url[len(prefix) :])).get("next")
    return f"{OAUTH_PREFIX}/login?{urlencode({'next': next_url})}" if next_url else None


def _form_error(e: MatrixError, t: Strings) -> tuple[str, int] | None:
    """What the form says about a refused sign-up, and its status; None when the invite is gone."""
    messages: dict[str, tuple[str, int]] = {
        "M_USER_IN_USE": (t.err_username_taken, 409),
        "M_INVALID_USERNAME": (t.err_username_invalid, 400),
        "M_EXCLUSIVE": (t.err_username_taken, 409),
        "M_LIMIT_EXCEEDED": (t.err_too_many, 429),
    }
    if e.errcode == "M_FORBIDDEN":
        return None
    found = messages.get(e.errcode)
    if found is not None:
        return found
    return t.err_generic.format(message=e.message), 400
