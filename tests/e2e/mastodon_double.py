"""A test double of a Mastodon server's OAuth and accounts API, written from Mastodon's documentation
(docs.joinmastodon.org: methods/apps "Create an application", methods/oauth "authorize", "token",
"revoke", methods/accounts "verify_credentials", spec/oauth; entities Account, CredentialApplication,
Token; the 4.3+ server metadata `/.well-known/oauth-authorization-server` with PKCE S256 and the
`profile` scope, and 4.4's `/oauth/userinfo`).

What it checks as Mastodon does: a registered client and redirect URI at authorize; at the token
endpoint the client's credentials (401 `invalid_client`), a single-use code for the same redirect
URI and scope, and the PKCE verifier when a challenge was sent (400 `invalid_grant`); bearer tokens
with a scope that reads the account; 403 at verify_credentials for unconfirmed or disabled logins.

The authorize page is real HTML: a login form (any username signs in; the account is made on the
spot) with "Authorize" and "Deny" buttons. Error modes for the tests: `mode` = "slow" (answers after
`slow_s`), "500", "bad_json" on the token and account endpoints; `metadata=False` for a server older
than 4.3 (no metadata document: no PKCE, `read:accounts`).

Run alone for the browser test: `python -m tests.e2e.mastodon_double PORT` prints "ready"; the test
steers it over HTTP: `/_double/rename?from=&to=`, `/_double/account?username=&bot=&suspended=…`,
`/_double/stats`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import itertools
import secrets
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

# a 1x1 PNG: what the avatars are
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
READ_ACCOUNT_SCOPES = {"read", "read:accounts", "profile"}


@dataclass
class Account:
    id: str
    username: str
    display_name: str = ""
    bot: bool = False
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(days=400))
    confirmed: bool = True
    approved: bool = True
    suspended: bool = False
    limited: bool = False
    avatar: bool = True


@dataclass
class App:
    client_id: str
    client_secret: str
    redirect_uris: list[str]
    scopes: list[str]
    name: str


class MastodonDouble:
    def __init__(self, *, metadata: bool = True, userinfo: bool = True) -> None:
        self.base = ""
        self.metadata = metadata
        self.userinfo = userinfo
        self.userinfo_status = 200  # another status: userinfo fails; "userinfo_name" makes it lie
        self.userinfo_name: str | None = None
        self.mode: str | None = None  # "slow", "500", "bad_json": the token and account endpoints misbehave
        self.slow_s = 30.0
        self.register_delay_s = 0.0  # widens the window in which two first logins could both register
        self.accounts: dict[str, Account] = {}  # by id
        self.apps: dict[str, App] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, dict[str, Any]] = {}
        self.revoked: list[str] = []
        self.registrations = 0
        self.authorize_requests: list[dict[str, str]] = []
        self._ids = itertools.count(109_000_000_000_000_001)

    # -- the test's handles --------------------------------------------------------------------------

    def account(self, username: str, **attrs: Any) -> Account:
        """The account of that username, made if new; `attrs` change it."""
        found = next((a for a in self.accounts.values() if a.username == username), None)
        if found is None:
            found = Account(str(next(self._ids)), username, display_name=username.capitalize())
            self.accounts[found.id] = found
        for k, v in attrs.items():
            setattr(found, k, v)
        return found

    def rename(self, old: str, new: str) -> None:
        self.account(old).username = new

    def forget_apps(self) -> None:
        """An admin removed our app (or, before 4.3, it was vacuumed)."""
        self.apps.clear()

    def grant(self, params: dict[str, str], username: str) -> str:
        """What pressing "Authorize" does: a code for `params` (an authorize request's query)."""
        code = secrets.token_urlsafe(24)
        self.codes[code] = {"params": params, "account": self.account(username).id}
        return code

    # -- the app --------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        if self.metadata:
            app.router.add_get("/.well-known/oauth-authorization-server", self.server_metadata)
        app.router.add_post("/api/v1/apps", self.create_app)
        app.router.add_get("/oauth/authorize", self.authorize_page)
        app.router.add_post("/oauth/authorize", self.authorize_decision)
        app.router.add_post("/oauth/token", self.token)
        app.router.add_post("/oauth/revoke", self.revoke)
        app.router.add_get("/api/v1/accounts/verify_credentials", self.verify_credentials)
        if self.userinfo:
            app.router.add_get("/oauth/userinfo", self.oauth_userinfo)
        app.router.add_get("/system/accounts/avatars/{id}.png", self.avatar)
        app.router.add_get("/_double/rename", self.control_rename)
        app.router.add_get("/_double/account", self.control_account)
        app.router.add_get("/_double/stats", self.control_stats)
        return app

    async def server_metadata(self, request: web.Request) -> web.Response:
        doc: dict[str, Any] = {
            "issuer": f"{self.base}/",
            "service_documentation": "https://docs.joinmastodon.org/",
            "authorization_endpoint": f"{self.base}/oauth/authorize",
            "token_endpoint": f"{self.base}/oauth/token",
            "app_registration_endpoint": f"{self.base}/api/v1/apps",
            "revocation_endpoint": f"{self.base}/oauth/revoke",
            "scopes_supported": ["read", "write", "push", "profile", "read:accounts", "follow"],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code", "client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }
        if self.userinfo:
            doc["userinfo_endpoint"] = f"{self.base}/oauth/userinfo"
        return web.json_response(doc)

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            body = await request.json()
            return body if isinstance(body, dict) else {}
        return {k: v for k, v in (await request.post()).items() if isinstance(v, str)}

    async def create_app(self, request: web.Request) -> web.Response:
        """methods/apps#create: client_name and redirect_uris required; scopes default `read`."""
        params = await self._params(request)
        if self.register_delay_s:
            await asyncio.sleep(self.register_delay_s)
        name, uris = params.get("client_name"), params.get("redirect_uris")
        if isinstance(uris, str):
            uris = uris.split()
        if not isinstance(name, str) or not name or not isinstance(uris, list) or not uris:
            return web.json_response({"error": "Validation failed: Redirect URI must be an absolute URI."}, status=422)
        scopes = str(params.get("scopes") or "read").split()
        app = App(secrets.token_urlsafe(32), secrets.token_urlsafe(32), uris, scopes, name)
        self.apps[app.client_id] = app
        self.registrations += 1
        return web.json_response(
            {
                "id": str(len(self.apps)),
                "name": name,
                "website": params.get("website"),
                "scopes": scopes,
                "redirect_uri": "\n".join(uris),
                "redirect_uris": uris,
                "client_id": app.client_id,
                "client_secret": app.client_secret,
                "client_secret_expires_at": 0,
            }
        )

    def _check_authorize(self, params: dict[str, str]) -> str | None:
        """What is wrong with an authorize request, as Doorkeeper's error page would say."""
        app = self.apps.get(params.get("client_id", ""))
        if app is None:
            return "Client authentication failed due to unknown client."
        if params.get("redirect_uri") not in app.redirect_uris:
            return "The redirect uri included is not valid."
        if params.get("response_type") != "code":
            return "The authorization server does not support this response type."
        if not set(params.get("scope", "read").split()) <= set(app.scopes):
            return "The requested scope is invalid, unknown, or malformed."
        if "code_challenge" in params and params.get("code_challenge_method") != "S256":
            return "The code challenge method must be S256."
        return None

    async def authorize_page(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        self.authorize_requests.append(params)
        problem = self._check_authorize(params)
        if problem is not None:
            return web.Response(
                text=f"<h1>An error has occurred</h1><p>{html.escape(problem)}</p>",
                status=400,
                content_type="text/html",
            )
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
        )
        app = self.apps[params["client_id"]]
        page = f"""<!doctype html><html><head><meta name="viewport" content="width=device-width">
<title>Authorization required</title></head><body><main>
<h1>Authorization required</h1>
<p><strong>{html.escape(app.name)}</strong> would like permission to access your account.</p>
<p>Scopes: {html.escape(params.get("scope", "read"))}</p>
<form method="post" action="/oauth/authorize">{hidden}
<label>Username <input name="username" autocomplete="username"></label>
<label>Password <input name="password" type="password"></label>
<button type="submit" name="decision" value="allow">Authorize</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form></main></body></html>"""
        return web.Response(text=page, content_type="text/html")

    async def authorize_decision(self, request: web.Request) -> web.Response:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        decision, username = form.pop("decision", ""), form.pop("username", "").strip()
        form.pop("password", None)
        problem = self._check_authorize(form)
        if problem is not None:
            return web.Response(text=problem, status=400)
        back: dict[str, str] = {}
        if decision == "allow" and username:
            back["code"] = self.grant(form, username)
        else:
            back = {
                "error": "access_denied",
                "error_description": "The resource owner or authorization server denied the request.",
            }
        if "state" in form:
            back["state"] = form["state"]
        raise web.HTTPFound(f"{form['redirect_uri']}?{urlencode(back)}")

    def _client(self, request: web.Request, form: dict[str, Any]) -> App | None:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        app = self.apps.get(str(client_id))
        return app if app is not None and secrets.compare_digest(app.client_secret, str(secret)) else None

    async def _misbehave(self) -> web.Response | None:
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
        if self.mode == "500":
            return web.Response(
                text="<h1>We're sorry, but something went wrong</h1>", status=500, content_type="text/html"
            )
        if self.mode == "bad_json":
            return web.Response(text='{"access_token": "abc", ', content_type="application/json")
        return None

    async def token(self, request: web.Request) -> web.Response:
        """methods/oauth#token."""
        form = await self._params(request)
        app = self._client(request, form)
        if app is None:
            return web.json_response(
                {
                    "error": "invalid_client",
                    "error_description": "Client authentication failed due to unknown client, "
                    "no client authentication included, or unsupported authentication method.",
                },
                status=401,
            )
        grant_type = form.get("grant_type")
        if grant_type == "client_credentials":
            return web.json_response(self._issue(app, None, str(form.get("scope") or "read")))
        if grant_type != "authorization_code":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        misbehaving = await self._misbehave()
        if misbehaving is not None:
            return misbehaving
        invalid = web.json_response(
            {
                "error": "invalid_grant",
                "error_description": "The provided authorization grant is invalid, expired, "
                "revoked, does not match the redirection URI used in the authorization request, or was issued to "
                "another client.",
            },
            status=400,
        )
        grant = self.codes.pop(str(form.get("code")), None)  # single use
        if grant is None:
            return invalid
        params = grant["params"]
        if params["client_id"] != app.client_id or params["redirect_uri"] != form.get("redirect_uri"):
            return invalid
        if "code_challenge" in params:  # RFC 7636 4.6
            verifier = str(form.get("code_verifier", ""))
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not secrets.compare_digest(digest, params["code_challenge"]):
                return invalid
        scope = params.get("scope", "read")
        if form.get("scope", scope) != scope:
            return web.json_response({"error": "invalid_scope"}, status=400)
        return web.json_response(self._issue(app, grant["account"], scope))

    def _issue(self, app: App, account: str | None, scope: str) -> dict[str, Any]:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = {"app": app.client_id, "account": account, "scope": scope}
        return {"access_token": token, "token_type": "Bearer", "scope": scope, "created_at": 1_573_979_017}

    async def revoke(self, request: web.Request) -> web.Response:
        form = await self._params(request)
        if self._client(request, form) is None:
            return web.json_response({"error": "unauthorized_client"}, status=403)
        token = str(form.get("token"))
        if self.tokens.pop(token, None) is not None:
            self.revoked.append(token)
        return web.json_response({})

    def _bearer(self, request: web.Request) -> Account | web.Response:
        auth = request.headers.get("Authorization", "")
        grant = self.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None
        if grant is None or grant["account"] is None:
            return web.json_response({"error": "The access token is invalid"}, status=401)
        if not set(grant["scope"].split()) & READ_ACCOUNT_SCOPES:
            return web.json_response({"error": "This action is outside the authorized scopes"}, status=403)
        account = self.accounts[grant["account"]]
        # Api::BaseController#require_user!
        if not account.confirmed:
            return web.json_response({"error": "Your login is missing a confirmed e-mail address"}, status=403)
        if not account.approved:
            return web.json_response({"error": "Your login is currently pending approval"}, status=403)
        if account.suspended:
            return web.json_response({"error": "Your login is currently disabled"}, status=403)
        return account

    def _avatar_url(self, account: Account) -> str:
        if not account.avatar:
            return f"{self.base}/avatars/original/missing.png"
        return f"{self.base}/system/accounts/avatars/{account.id}.png"

    async def verify_credentials(self, request: web.Request) -> web.Response:
        """methods/accounts#verify_credentials: a CredentialAccount."""
        misbehaving = await self._misbehave()
        if misbehaving is not None:
            return misbehaving
        account = self._bearer(request)
        if isinstance(account, web.Response):
            return account
        created = account.created_at.replace(hour=0, minute=0, second=0, microsecond=0)
        body: dict[str, Any] = {
            "id": account.id,
            "username": account.username,
            "acct": account.username,
            "display_name": account.display_name,
            "locked": False,
            "bot": account.bot,
            "discoverable": True,
            "group": False,
            "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "note": "",
            "url": f"{self.base}/@{account.username}",
            "uri": f"{self.base}/users/{account.username}",
            "avatar": self._avatar_url(account),
            "avatar_static": self._avatar_url(account),
            "header": f"{self.base}/headers/original/missing.png",
            "header_static": f"{self.base}/headers/original/missing.png",
            "followers_count": 0,
            "following_count": 0,
            "statuses_count": 0,
            "last_status_at": None,
            "emojis": [],
            "fields": [],
            "source": {"privacy": "public", "sensitive": False, "language": "", "note": "", "fields": []},
        }
        if account.limited:
            body["limited"] = True  # an extra attribute, present only when true
        return web.json_response(body)

    async def oauth_userinfo(self, request: web.Request) -> web.Response:
        account = self._bearer(request)
        if isinstance(account, web.Response):
            return account
        if self.userinfo_status != 200:
            return web.json_response(
                {"error": "This action is outside the authorized scopes"}, status=self.userinfo_status
            )
        return web.json_response(
            {
                "iss": f"{self.base}/",
                "sub": f"{self.base}/users/{account.username}",
                "name": account.display_name,
                "preferred_username": self.userinfo_name or account.username,
                "profile": f"{self.base}/@{account.username}",
                "picture": self._avatar_url(account),
            }
        )

    async def avatar(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.accounts:
            raise web.HTTPNotFound()
        return web.Response(body=PNG, content_type="image/png")

    # -- control, for a test driving the double from another process -------------------------------

    async def control_rename(self, request: web.Request) -> web.Response:
        self.rename(request.query["from"], request.query["to"])
        return web.Response(text="ok")

    async def control_account(self, request: web.Request) -> web.Response:
        attrs: dict[str, Any] = {
            k: request.query[k] == "true" for k in ("bot", "suspended", "limited") if k in request.query
        }
        if "age_days" in request.query:
            attrs["created_at"] = datetime.now(UTC) - timedelta(days=float(request.query["age_days"]))
        account = self.account(request.query["username"], **attrs)
        return web.json_response({"id": account.id})

    async def control_stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"registrations": self.registrations, "revoked": len(self.revoked), "authorize": self.authorize_requests}
        )


async def serve(port: int) -> None:
    double = MastodonDouble()
    double.base = f"http://127.0.0.1:{port}"
    runner = web.AppRunner(double.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)  # only once it listens
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1])))
