"""The OAuth 2.0 API's pages: authorize (sign in, sign up, consent), the device code page, and
account management (homeserver/auth/oauth/, templates in homeserver/web/).

spec: client-server-api "Authorisation code flow", "Device authorisation flow", "User
registration" (`prompt=create`), "Account management" (the actions and `device_id`):
  - GET authorize checks the request; an unknown client or an unregistered redirect URI is a page,
    never a redirect; a signed-in browser goes straight to consent; otherwise the sign-in page
    (`login_hint=mxid:@user:server` fills in the user), or with `prompt=create` the sign-up page.
    Sign-up is linked from sign-in whatever the prompt (Element X sends `prompt=consent`).
  - every form carries a CSRF token matched against a cookie (double submit); `next` (where a form
    continues) must be one of our own pages: no open redirects.
  - upstream providers (OpenID Connect, Mastodon, whatever `hs.sso` offers) sign in through the
    legacy SSO redirect with a login token handed back to GET sso here, which signs the browser in;
    a sign-in the provider or our rules refuse ends on a page that leads back to the sign-in page.
Pages answer in HTML: 400 for a form to fix or a request that cannot be used, 403 for a refused
sign-in, 429 when rate limited.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from aiohttp import web

from homeserver.api.bodies import client_ip
from homeserver.api.http import Router
from homeserver.api.pages import MIN_PASSWORD, PAGE_HEADERS, html
from homeserver.auth.oauth.grants import NotRedirectable, RedirectError
from homeserver.auth.oauth.metadata import (
    ACCOUNT_PATH,
    ACTIONS,
    AUTHORIZE_PATH,
    DEVICE_PAGE_PATH,
    OAUTH_PREFIX,
    UNSTABLE_ACTIONS,
)
from homeserver.auth.sso import INVITE_PARAM, check_redirect_url
from homeserver.auth.tokens import Requester
from homeserver.errors import MatrixError
from homeserver.web.catalogue import Strings, best_language

if TYPE_CHECKING:
    from homeserver.server import HomeServer

log = logging.getLogger(__name__)

SESSION_COOKIE = "hs_web"
CSRF_COOKIE = "hs_oauth_csrf"
INVITE_COOKIE = "hs_invite"  # set by the invite page: its token fills in the sign-up form
COOKIE_PATH = "/_homeserver/"
LOGIN_PATH = f"{OAUTH_PREFIX}/login"
SIGNUP_PATH = f"{OAUTH_PREFIX}/signup"
CONSENT_PATH = f"{OAUTH_PREFIX}/consent"
SSO_RETURN_PATH = f"{OAUTH_PREFIX}/sso"
LOGOUT_PATH = f"{OAUTH_PREFIX}/logout"
DEVICE_CONSENT_PATH = f"{OAUTH_PREFIX}/device/consent"
MAX_FORM_BYTES = 8 * 1024


def safe_next(value: str | None, default: str = ACCOUNT_PATH) -> str:
    """A page of ours to continue to, else `default`: a path under /_homeserver/oauth/ or the
    account page, never another site (`//host`, `\\host`, a scheme)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    if not (parts.path.startswith(OAUTH_PREFIX + "/") or parts.path == ACCOUNT_PATH):
        return default
    return value


def form_action_source(uri: str) -> str:
    """The CSP source that admits `uri`: its origin, or its scheme for a private-use scheme."""
    parts = urlsplit(uri)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return f"{parts.scheme}:"


def _when(ms: object) -> str:
    if not isinstance(ms, int):
        return ""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def register(router: Router, hs: HomeServer) -> None:
    if not hs.config.oauth.enabled:
        return
    pages = hs.pages
    browser = hs.browser_accounts
    base = hs.invites.base_url()

    # -- shared pieces ---------------------------------------------------------------------------

    def lang_of(request: web.Request) -> str:
        return best_language(request.headers.get("Accept-Language"))

    def csrf_of(request: web.Request) -> str:
        return request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)

    def page(
        request: web.Request,
        template: str,
        csrf: str,
        status: int = 200,
        *,
        redirect_to: str | None = None,
        **context: Any,
    ) -> web.Response:
        response = html(pages.render(template, lang_of(request), csrf=csrf, **context), status)
        if redirect_to is not None:
            # browsers apply form-action to the redirect that answers a form: allow the client's one
            csp = PAGE_HEADERS["Content-Security-Policy"]
            response.headers["Content-Security-Policy"] = csp.replace(
                "form-action 'self'", f"form-action 'self' {form_action_source(redirect_to)}"
            )
        response.set_cookie(
            CSRF_COOKIE, csrf, path=COOKIE_PATH, httponly=True, samesite="Strict", secure=request.secure, max_age=3600
        )
        return response

    def message(request: web.Request, title: str, text: str, status: int = 200, *, error: bool = False) -> web.Response:
        body = pages.render("oauth_message.html", lang_of(request), title=title, message=text, link=None, error=error)
        return html(body, status)

    def go(location: str) -> web.Response:
        return web.Response(status=303, headers={**PAGE_HEADERS, "Location": location})

    def signed_in(request: web.Request, user_id: str, location: str) -> web.Response:
        response = go(location)
        response.set_cookie(
            SESSION_COOKIE,
            browser.start(user_id),
            path=COOKIE_PATH,
            httponly=True,
            samesite="Lax",  # the client app sends the browser here from its own site
            secure=request.secure,
            max_age=hs.config.oauth.web_session_lifetime_s,
        )
        return response

    def user_of(request: web.Request) -> str | None:
        return browser.user(request.cookies.get(SESSION_COOKIE))

    async def form_of(request: web.Request) -> dict[str, str] | None:
        """The posted form if its CSRF token matches the cookie; None otherwise."""
        if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise MatrixError(415, "M_UNRECOGNIZED", "this page takes an HTML form")
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", "form too large")
        form = await request.post()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, fields.get("csrf", "")):
            return None
        return fields

    def limited(request: web.Request, what: str) -> bool:
        try:
            hs.ratelimiter.check("oauth", f"{what}:{client_ip(request)}")
        except MatrixError:
            return True
        return False

    def too_many(request: web.Request) -> web.Response:
        t = Strings(lang_of(request))
        return message(request, t.error_title, t.err_too_many, 429, error=True)

    def form_expired(request: web.Request) -> web.Response:
        t = Strings(lang_of(request))
        return message(request, t.oauth_error_title, t.err_form_expired, 400, error=True)

    def sso_links(next_url: str, invite: str | None = None) -> list[tuple[str, str]]:
        back = quote(f"{base}{SSO_RETURN_PATH}?{urlencode({'next': next_url})}", safe="")
        extra = f"&{INVITE_PARAM}={quote(invite)}" if invite else ""
        return [
            (str(p["name"]), f"/_matrix/client/v3/login/sso/redirect/{quote(str(p['id']))}?redirectUrl={back}{extra}")
            for p in hs.sso.identity_providers()
        ]

    def client_for(next_url: str) -> str | None:
        """The client a sign-in continues to, for the page's "to continue to …"."""
        parts = urlsplit(next_url)
        if parts.path == CONSENT_PATH:
            request = hs.oauth.pending(dict(_query(parts.query)).get("req"))
            return request.client_name if request is not None else None
        return None

    def login_page(
        request: web.Request, next_url: str, *, username: str = "", errors: Sequence[str] = (), status: int = 200
    ) -> web.Response:
        signup_url = f"{SIGNUP_PATH}?{urlencode({'next': next_url})}" if browser.signup_open() else None
        return page(
            request,
            "oauth_login.html",
            csrf_of(request),
            status,
            action=LOGIN_PATH,
            next=next_url,
            username=username,
            errors=list(errors),
            client=client_for(next_url),
            # an invite link opened in this browser goes with a provider button too: Element X lands
            # on sign-in (prompt=consent), and a provider that takes invites signs them up with it
            sso_links=sso_links(next_url, request.cookies.get(INVITE_COOKIE) or None),
            signup_url=signup_url,
        )

    def signup_page(
        request: web.Request,
        next_url: str,
        *,
        invite: str = "",
        username: str = "",
        errors: Sequence[str] = (),
        status: int = 200,
    ) -> web.Response:
        invite = invite or request.cookies.get(INVITE_COOKIE, "")
        return page(
            request,
            "oauth_signup.html",
            csrf_of(request),
            status,
            action=SIGNUP_PATH,
            next=next_url,
            invite=invite,
            invite_required=browser.invite_required(),
            username=username,
            errors=list(errors),
            client=client_for(next_url),
            sso_links=sso_links(next_url, invite or None),
            login_url=f"{LOGIN_PATH}?{urlencode({'next': next_url})}",
            min_password=MIN_PASSWORD,
        )

    def hint_of(login_hint: str | None) -> str:
        # Element X: login_hint=mxid:@user:server
        if login_hint and login_hint.startswith("mxid:"):
            return login_hint[len("mxid:") :]
        return ""

    # -- authorize and consent -------------------------------------------------------------------

    def not_redirectable(request: web.Request, reason: str) -> web.Response:
        t = Strings(lang_of(request))
        text = t[f"oauth_error_{reason}"].format(server=hs.server_name)
        return message(request, t.oauth_error_title, text, 400, error=True)

    async def authorize(request: web.Request) -> web.Response:
        if limited(request, "authorize"):
            return too_many(request)
        query = {k: v for k, v in request.query.items() if isinstance(v, str)}
        try:
            auth = hs.oauth.authorization_request(query)
        except NotRedirectable as e:
            return not_redirectable(request, e.reason)
        except RedirectError as e:
            return go(e.location)
        consent = f"{CONSENT_PATH}?{urlencode({'req': auth.id})}"
        if auth.prompt == "create" and browser.signup_open():
            return signup_page(request, consent)  # spec: "User registration"
        if user_of(request) is not None and auth.prompt != "login":
            return go(consent)
        return login_page(request, consent, username=hint_of(auth.login_hint))

    async def consent_page(request: web.Request) -> web.Response:
        auth = hs.oauth.pending(request.query.get("req"))
        if auth is None:
            return not_redirectable(request, "expired")
        user_id = user_of(request)
        here = f"{CONSENT_PATH}?{urlencode({'req': auth.id})}"
        if user_id is None:
            return login_page(request, here, username=hint_of(auth.login_hint))
        client = hs.oauth_clients.get(auth.client_id) or {}
        return page(
            request,
            "oauth_consent.html",
            csrf_of(request),
            redirect_to=auth.redirect_uri,
            client=auth.client_name,
            host=urlsplit(auth.redirect_uri).hostname or urlsplit(str(client.get("client_uri", ""))).hostname,
            user_id=user_id,
            device_id=auth.grant.device_id,
            user_code=None,
            action=CONSENT_PATH,
            hidden=[("req", auth.id)],
            logout_action=LOGOUT_PATH,
            here=here,
        )

    async def consent(request: web.Request) -> web.Response:
        fields = await form_of(request)
        if fields is None:
            return form_expired(request)
        user_id = user_of(request)
        request_id = fields.get("req", "")
        if user_id is None:
            return login_page(request, f"{CONSENT_PATH}?{urlencode({'req': request_id})}")
        try:
            if fields.get("decision") == "allow":
                return go(hs.oauth.approve(request_id, user_id))
            return go(hs.oauth.deny(request_id))
        except NotRedirectable as e:
            return not_redirectable(request, e.reason)

    # -- sign in, sign up, sign out --------------------------------------------------------------

    async def get_login(request: web.Request) -> web.Response:
        next_url = safe_next(request.query.get("next"))
        return login_page(request, next_url, username=hint_of(request.query.get("login_hint")))

    async def post_login(request: web.Request) -> web.Response:
        fields = await form_of(request)
        if fields is None:
            return form_expired(request)
        next_url = safe_next(fields.get("next"))
        t = Strings(lang_of(request))
        username = fields.get("username", "").strip()
        try:
            user_id = await browser.password_login(username, fields.get("password", ""), client_ip(request))
        except MatrixError as e:
            if e.status == 429:
                return login_page(request, next_url, username=username, errors=[t.err_too_many], status=429)
            return login_page(request, next_url, username=username, errors=[t.oauth_err_login], status=403)
        return signed_in(request, user_id, next_url)

    async def get_signup(request: web.Request) -> web.Response:
        next_url = safe_next(request.query.get("next"))
        if not browser.signup_open():
            t = Strings(lang_of(request))
            return message(request, t.status_closed_title, t.oauth_err_closed, 403, error=True)
        return signup_page(request, next_url, invite=request.query.get("invite", ""))

    async def post_signup(request: web.Request) -> web.Response:
        fields = await form_of(request)
        if fields is None:
            return form_expired(request)
        t = Strings(lang_of(request))
        next_url = safe_next(fields.get("next"))
        username = fields.get("username", "").strip()
        invite = fields.get("invite", "").strip()

        def again(error: str, status: int) -> web.Response:
            return signup_page(request, next_url, invite=invite, username=username, errors=[error], status=status)

        if limited(request, "signup"):
            return again(t.err_too_many, 429)
        password, password2 = fields.get("password", ""), fields.get("password2", "")
        if password != password2:
            return again(t.err_passwords_differ, 400)
        if len(password) < MIN_PASSWORD:
            return again(t.err_password_short.format(min=MIN_PASSWORD), 400)
        if not username:
            return again(t.err_username_invalid, 400)
        if browser.invite_required() and not invite:
            return again(t.oauth_err_invite_needed, 400)
        try:
            user_id = await browser.sign_up(username, password, invite or None)
        except MatrixError as e:
            known = {
                "M_USER_IN_USE": (t.err_username_taken, 409),
                "M_EXCLUSIVE": (t.err_username_taken, 409),
                "M_INVALID_USERNAME": (t.err_username_invalid, 400),
                "M_LIMIT_EXCEEDED": (t.err_too_many, 429),
                "M_FORBIDDEN": (t.oauth_err_invite, 403),
            }
            text, status = known.get(e.errcode, (t.err_generic.format(message=e.message), 400))
            return again(text, status)
        response = signed_in(request, user_id, next_url)
        response.del_cookie(INVITE_COOKIE, path=COOKIE_PATH)
        return response

    async def sso_return(request: web.Request) -> web.Response:
        # the legacy SSO flow's hand-off (homeserver/auth/sso.py) back to our pages
        next_url = safe_next(request.query.get("next"))
        try:
            user_id = hs.login_tokens.spend(request.query.get("loginToken"))
        except MatrixError:
            t = Strings(lang_of(request))
            return message(request, t.sso_error_title, t.sso_error_state, 400, error=True)
        return signed_in(request, user_id, next_url)

    async def logout(request: web.Request) -> web.Response:
        fields = await form_of(request)
        if fields is None:
            return form_expired(request)
        browser.end(request.cookies.get(SESSION_COOKIE))
        response = go(f"{LOGIN_PATH}?{urlencode({'next': safe_next(fields.get('next'))})}")
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    # -- the device authorization grant's page ---------------------------------------------------

    def device_form(
        request: web.Request, user_code: str, errors: Sequence[str] = (), status: int = 200
    ) -> web.Response:
        return page(
            request,
            "oauth_device.html",
            csrf_of(request),
            status,
            action=DEVICE_PAGE_PATH,
            user_code=user_code,
            errors=list(errors),
        )

    async def get_device(request: web.Request) -> web.Response:
        user_code = request.query.get("user_code", "")
        here = f"{DEVICE_PAGE_PATH}?{urlencode({'user_code': user_code})}" if user_code else DEVICE_PAGE_PATH
        user_id = user_of(request)
        if user_id is None:
            return login_page(request, here)
        if not user_code:
            return device_form(request, "")
        t = Strings(lang_of(request))
        pending = hs.oauth.device_request(user_code)
        if pending is None:
            if limited(request, "user-code"):  # guessing codes costs a rate-limit token per miss
                return too_many(request)
            return device_form(request, user_code, [t.oauth_device_unknown], 400)
        return page(
            request,
            "oauth_consent.html",
            csrf_of(request),
            client=pending.client_name,
            host=pending.client_name,
            user_id=user_id,
            device_id=pending.grant.device_id,
            user_code=pending.user_code,
            action=DEVICE_CONSENT_PATH,
            hidden=[("user_code", pending.user_code)],
            logout_action=LOGOUT_PATH,
            here=here,
        )

    async def post_device(request: web.Request) -> web.Response:
        fields = await form_of(request)
        if fields is None:
            return form_expired(request)
        return go(f"{DEVICE_PAGE_PATH}?{urlencode({'user_code': fields.get('user_code', '').strip()})}")

    async def device_consent(request: web.Request) -> web.Response:
        fields = await form_of(request)
        if fields is None:
            return form_expired(request)
        t = Strings(lang_of(request))
        user_id = user_of(request)
        if user_id is None:
            return login_page(request, DEVICE_PAGE_PATH)
        allow = fields.get("decision") == "allow"
        if not hs.oauth.device_decide(fields.get("user_code", ""), user_id, allow):
            return device_form(request, "", [t.oauth_device_unknown], 400)
        if allow:
            return message(request, t.oauth_device_done_title, t.oauth_device_done)
        return message(request, t.oauth_device_denied_title, t.oauth_device_denied)

    # -- account management ----------------------------------------------------------------------

    def device_view(user_id: str, device_id: str, device: dict[str, Any], t: Strings) -> dict[str, Any]:
        return {
            "id": device_id,
            "name": device.get("display_name") or t.account_session_unnamed,
            "created": _when(device.get("created_ts")),
            "last_seen": _when(device.get("last_seen_ts")),
            "ip": device.get("last_seen_ip"),
            "client": None,
        }

    def account_page(
        request: web.Request, user_id: str, *, notice: str | None = None, errors: Sequence[str] = (), status: int = 200
    ) -> web.Response:
        t = Strings(lang_of(request))
        action = request.query.get("action", "")
        action = UNSTABLE_ACTIONS.get(action, action)  # the draft names clients still send
        focus = action if action in ACTIONS else None
        device_id = request.query.get("device_id")
        device = None
        if device_id is not None and focus in ("org.matrix.device_view", "org.matrix.device_delete"):
            found = hs.accounts.device(user_id, device_id)
            if found is None:
                errors = [*errors, t.account_no_session.format(device_id=device_id)]
            else:
                device = device_view(user_id, device_id, found, t)
        devices = [device_view(user_id, d, info, t) for d, info in hs.accounts.devices(user_id)]
        devices.sort(key=lambda d: str(d["last_seen"]), reverse=True)
        return page(
            request,
            "account.html",
            csrf_of(request),
            status,
            user_id=user_id,
            notice=notice,
            errors=list(errors),
            focus=focus,
            device=device,
            devices=devices,
            displayname=hs.profiles.get_profile(user_id).get("displayname") or "",
            base=ACCOUNT_PATH,
            logout_action=LOGOUT_PATH,
        )

    async def get_account(request: web.Request) -> web.Response:
        user_id = user_of(request)
        if user_id is None:
            return login_page(request, safe_next(request.path_qs))
        return account_page(request, user_id)

    async def account_form(request: web.Request) -> tuple[str, dict[str, str]] | web.Response:
        fields = await form_of(request)
        if fields is None:
            return form_expired(request)
        user_id = user_of(request)
        if user_id is None:
            return login_page(request, ACCOUNT_PATH)
        return user_id, fields

    def requester_for(user_id: str) -> Requester:
        return Requester(user_id, "", b"")

    async def post_profile(request: web.Request) -> web.Response:
        got = await account_form(request)
        if isinstance(got, web.Response):
            return got
        user_id, fields = got
        t = Strings(lang_of(request))
        try:
            await hs.profiles.set_field(requester_for(user_id), user_id, "displayname", fields.get("displayname", ""))
        except MatrixError as e:
            return account_page(request, user_id, errors=[t.err_generic.format(message=e.message)], status=400)
        return account_page(request, user_id, notice=t.account_saved)

    async def post_device_delete(request: web.Request) -> web.Response:
        got = await account_form(request)
        if isinstance(got, web.Response):
            return got
        user_id, fields = got
        t = Strings(lang_of(request))
        device_id = fields.get("device_id", "")
        if hs.accounts.device(user_id, device_id) is None:
            return account_page(request, user_id, errors=[t.account_no_session.format(device_id=device_id)], status=404)
        await hs.accounts.delete_devices(user_id, [device_id])
        return account_page(request, user_id, notice=t.account_ended)

    async def post_deactivate(request: web.Request) -> web.Response:
        got = await account_form(request)
        if isinstance(got, web.Response):
            return got
        user_id, fields = got
        t = Strings(lang_of(request))
        if fields.get("confirm", "").strip() != user_id:
            return account_page(request, user_id, errors=[t.account_deactivate_wrong], status=400)
        await hs.deactivation.deactivate(user_id)
        browser.end(request.cookies.get(SESSION_COOKIE))
        response = message(request, t.account_deactivated_title, t.account_deactivate_help)
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        return response

    async def post_cross_signing_reset(request: web.Request) -> web.Response:
        got = await account_form(request)
        if isinstance(got, web.Response):
            return got
        user_id, _ = got
        t = Strings(lang_of(request))
        browser.allow_cross_signing_reset(user_id)
        return message(request, t.account_cross_signing, t.account_cross_signing_done)

    async def legacy_sso(request: web.Request) -> web.Response:
        # the end of `m.login.sso` for OAuth aware clients: the signed-in user's login token to the
        # client, after a confirmation unless its host is trusted (as homeserver/auth/sso.py does)
        try:
            redirect_url = check_redirect_url(request.query.get("redirectUrl"))
        except MatrixError:
            return not_redirectable(request, "bad_redirect")
        user_id = user_of(request)
        if user_id is None:
            return login_page(request, safe_next(request.path_qs))
        token, _ = hs.login_tokens.issue(user_id)
        without_fragment, hash_sign, fragment = redirect_url.partition("#")
        sep = "&" if urlsplit(without_fragment).query else "?"
        redirect_to = f"{without_fragment}{sep}{urlencode({'loginToken': token})}{hash_sign}{fragment}"
        host = urlsplit(redirect_url).hostname or ""
        if host in hs.config.sso.client_hosts:
            return go(redirect_to)
        body = pages.render("sso_confirm.html", lang_of(request), host=host, user_id=user_id, redirect_to=redirect_to)
        return html(body)

    router.add("GET", f"{OAUTH_PREFIX}/legacy_sso", legacy_sso)
    router.add("GET", AUTHORIZE_PATH, authorize)
    router.add("GET", CONSENT_PATH, consent_page)
    router.add("POST", CONSENT_PATH, consent)
    router.add("GET", LOGIN_PATH, get_login)
    router.add("POST", LOGIN_PATH, post_login)
    router.add("GET", SIGNUP_PATH, get_signup)
    router.add("POST", SIGNUP_PATH, post_signup)
    router.add("GET", SSO_RETURN_PATH, sso_return)
    router.add("POST", LOGOUT_PATH, logout)
    router.add("GET", DEVICE_PAGE_PATH, get_device)
    router.add("POST", DEVICE_PAGE_PATH, post_device)
    router.add("POST", DEVICE_CONSENT_PATH, device_consent)
    router.add("GET", ACCOUNT_PATH, get_account)
    router.add("POST", f"{ACCOUNT_PATH}/profile", post_profile)
    router.add("POST", f"{ACCOUNT_PATH}/device_delete", post_device_delete)
    router.add("POST", f"{ACCOUNT_PATH}/deactivate", post_deactivate)
    router.add("POST", f"{ACCOUNT_PATH}/cross_signing_reset", post_cross_signing_reset)


def _query(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query)
