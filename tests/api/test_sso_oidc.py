"""Single sign-on with OpenID Connect (issue 13, item 4) against an in-process provider that signs
real ID tokens (joserfc): the spec's hand-off (redirect, callback, confirmation page, loginToken,
m.login.token), account mapping by (provider, subject), the registration policy, and every bad
input the issue names: forged or replayed state, a missing cookie, access_denied, wrong iss, aud or
nonce, an expired token, a bad signature, a wrong PKCE verifier, replayed login tokens, and
redirect URLs that are not http(s)."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html import unescape as html_unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from joserfc import jwt
from joserfc.jwk import RSAKey

from homeserver.server import HomeServer
from tests.interop.server import free_port

from .auth_helpers import NO_LIMITS
from .conftest import Harness, make_config

CLIENT_URL = "https://client.example/after-login"
PNG = base64.b64decode(  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
BIG_PNG = PNG + secrets.token_bytes(1024 * 1024)
REDIRECT = "/_matrix/client/v3/login/sso/redirect"


@dataclass
class FakeProvider:
    """An OpenID provider: discovery, JWKS, and a token endpoint that checks PKCE."""

    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    tamper: dict[str, Any] = field(default_factory=dict)  # claim overrides for the next tokens
    bad_signature: bool = False
    base: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_post("/token", self.token)
        app.router.add_get("/pictures/{name}", self.picture)
        return app

    async def picture(self, request: web.Request) -> web.Response:
        """Account pictures: a PNG, something that is not an image, one too large, a redirect."""
        name = request.match_info["name"]
        if name == "alice.png":
            return web.Response(body=PNG, content_type="image/png")
        if name == "big.png":  # many network chunks, under the cap
            return web.Response(body=BIG_PNG, content_type="image/png")
        if name == "huge.png":
            return web.Response(body=PNG + bytes(3 * 1024 * 1024), content_type="image/png")
        if name == "moved.png":
            raise web.HTTPFound(f"{self.base}/pictures/alice.png")
        return web.Response(text="<html>not a picture</html>", content_type="text/html")

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.base,
                "authorization_endpoint": f"{self.base}/auth",
                "token_endpoint": f"{self.base}/token",
                "jwks_uri": f"{self.base}/jwks",
                "code_challenge_methods_supported": ["S256"],
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    def authorize(self, auth_url: str, sub: str, **claims: Any) -> str:
        """What the provider's login pages do: remember the request, hand back a code."""
        params = {k: v[0] for k, v in parse_qs(urlsplit(auth_url).query).items()}
        assert params["response_type"] == "code" and params["code_challenge_method"] == "S256"
        assert "openid" in params["scope"].split()
        code = secrets.token_urlsafe(12)
        self.codes[code] = {"params": params, "sub": sub, "claims": claims}
        return code

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        grant = self.codes.pop(str(form.get("code")), None)
        if grant is None:
            return web.json_response({"error": "invalid_grant"}, status=400)
        params = grant["params"]
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != params["code_challenge"] or form.get("client_secret") != "s3cret":
            return web.json_response({"error": "invalid_grant"}, status=400)
        now = int(time.time())
        claims = {
            "iss": self.base,
            "aud": params["client_id"],
            "sub": grant["sub"],
            "nonce": params["nonce"],
            "iat": now,
            "exp": now + 300,
            **grant["claims"],
            **self.tamper,
        }
        key = RSAKey.generate_key(2048, parameters={"kid": "k1"}) if self.bad_signature else self.key
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)
        return web.json_response({"access_token": "at", "token_type": "Bearer", "id_token": id_token})


@asynccontextmanager
async def sso_server(tmp_path: Path, **provider: Any) -> AsyncIterator[tuple[Harness, FakeProvider]]:
    fake = FakeProvider()
    upstream = TestServer(fake.app(), host="127.0.0.1")
    await upstream.start_server()
    fake.base = str(upstream.make_url("")).rstrip("/")
    settings = {
        "id": "idp",
        "name": "Our Provider",
        "issuer": fake.base,
        "client_id": "matrix",
        "client_secret": "s3cret",
        **provider,
    }
    config = make_config(
        tmp_path,
        public_baseurl="https://hs.example",
        sso={"oidc": [settings], "client_hosts": ["trusted.example"]},
        **NO_LIMITS,
    )
    hs = HomeServer(config)
    client = TestClient(TestServer(hs.build_app()))
    await client.start_server()
    try:
        yield Harness(hs, client), fake
    finally:
        await client.close()
        await upstream.close()


async def begin(h: Harness, redirect_url: str = CLIENT_URL, query: str = "") -> str:
    resp = await h.client.get(
        f"{REDIRECT}/idp?redirectUrl={quote(redirect_url, safe='')}{query}", allow_redirects=False
    )
    assert resp.status == 302, await resp.text()
    return resp.headers["Location"]


async def callback(h: Harness, auth_url: str, **query: str) -> tuple[int, str, dict[str, str]]:
    state = parse_qs(urlsplit(auth_url).query)["state"][0]
    resp = await h.client.get("/_homeserver/sso/callback/idp", params={"state": state, **query}, allow_redirects=False)
    return resp.status, await resp.text(), dict(resp.headers)


def login_token_from(page: str) -> str:
    found = re.search(r'href="https://client\.example/after-login\?loginToken=([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


async def token_login(h: Harness, token: str) -> tuple[int, Any]:
    return await h.request("POST", "login", json={"type": "m.login.token", "token": token})


async def full_login(h: Harness, fake: FakeProvider, sub: str, **claims: Any) -> tuple[int, Any]:
    auth_url = await begin(h)
    status, page, _ = await callback(h, auth_url, code=fake.authorize(auth_url, sub, **claims))
    assert status == 200, page
    return await token_login(h, login_token_from(page))


async def test_login_flows_list_the_provider(tmp_path: Path) -> None:
    async with sso_server(tmp_path, icon="mxc://hs.example/icon") as (h, _):
        status, body = await h.request("GET", "login")
        assert status == 200
        sso = [f for f in body["flows"] if f["type"] == "m.login.sso"]
        assert sso == [
            {
                "type": "m.login.sso",
                "identity_providers": [{"id": "idp", "name": "Our Provider", "icon": "mxc://hs.example/icon"}],
                "oauth_aware_preferred": True,  # the OAuth 2.0 API is on by default
            }
        ]


async def test_the_whole_hand_off_and_the_same_account_next_time(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        auth_url = await begin(h)
        params = parse_qs(urlsplit(auth_url).query)
        assert auth_url.startswith(f"{fake.base}/auth?")
        assert params["redirect_uri"] == ["https://hs.example/_homeserver/sso/callback/idp"]
        assert params["client_id"] == ["matrix"] and len(params["code_challenge"][0]) == 43
        code = fake.authorize(auth_url, "sub-1", preferred_username="Alice", name="Alice A.")
        status, page, _ = await callback(h, auth_url, code=code)
        assert status == 200 and "Continue to client.example?" in page and "@alice:hs.test" in page
        token = login_token_from(page)
        status, body = await token_login(h, token)
        assert status == 200 and body["user_id"] == "@alice:hs.test"
        assert h.hs.profiles.get_profile("@alice:hs.test").get("displayname") == "Alice A."
        assert (await token_login(h, token))[0] == 403  # single use
        # again: the same account; renamed upstream: still the same account (keyed by subject)
        assert (await full_login(h, fake, "sub-1", preferred_username="alice"))[1]["user_id"] == "@alice:hs.test"
        assert (await full_login(h, fake, "sub-1", preferred_username="alicia"))[1]["user_id"] == "@alice:hs.test"
        # someone else whose name is taken gets a free one, never alice's account
        status, body = await full_login(h, fake, "sub-2", preferred_username="alice")
        assert status == 200 and body["user_id"] == "@alice2:hs.test"


async def test_the_picture_claim_becomes_the_new_accounts_avatar(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        status, body = await full_login(
            h, fake, "p-1", preferred_username="pia", picture=f"{fake.base}/pictures/big.png"
        )
        assert status == 200
        avatar = h.hs.profiles.get_profile(body["user_id"])["avatar_url"]
        assert avatar.startswith("mxc://hs.test/")
        resp = await h.client.get(
            f"/_matrix/client/v1/media/download/hs.test/{avatar.rsplit('/', 1)[1]}",
            headers={"Authorization": f"Bearer {body['access_token']}"},
        )
        assert resp.status == 200 and resp.content_type == "image/png" and await resp.read() == BIG_PNG
        # taken once, at sign-up: a new picture upstream does not replace the user's own choice later
        status, again = await full_login(h, fake, "p-1", picture=f"{fake.base}/pictures/huge.png")
        assert again["user_id"] == body["user_id"]
        assert h.hs.profiles.get_profile(body["user_id"])["avatar_url"] == avatar
        # what is no picture, too large, a redirect or not a URL at all: the account, without an avatar
        for n, picture in enumerate(("not-an-image", "huge.png", "moved.png")):
            status, other = await full_login(
                h, fake, f"q-{n}", preferred_username=f"q{n}", picture=f"{fake.base}/pictures/{picture}"
            )
            assert status == 200 and "avatar_url" not in h.hs.profiles.get_profile(other["user_id"])
        for n, picture in enumerate(("http://example.org/a.png", "not a url", 42)):
            status, other = await full_login(h, fake, f"r-{n}", preferred_username=f"r{n}", picture=picture)
            assert status == 200 and "avatar_url" not in h.hs.profiles.get_profile(other["user_id"])


async def test_no_avatar_when_the_picture_claim_is_off(tmp_path: Path) -> None:
    async with sso_server(tmp_path, picture_claim=None) as (h, fake):
        status, body = await full_login(
            h, fake, "p-1", preferred_username="pia", picture=f"{fake.base}/pictures/alice.png"
        )
        assert status == 200 and "avatar_url" not in h.hs.profiles.get_profile(body["user_id"])


async def test_allow_listed_client_hosts_skip_the_confirmation(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        auth_url = await begin(h, "https://trusted.example/app?x=1#frag")
        status, _, headers = await callback(h, auth_url, code=fake.authorize(auth_url, "s", preferred_username="t"))
        assert status == 302
        location = headers["Location"]
        assert location.startswith("https://trusted.example/app?x=1&loginToken=") and location.endswith("#frag")


async def test_forged_replayed_and_cookieless_state(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        auth_url = await begin(h)
        code = fake.authorize(auth_url, "s", preferred_username="bob")
        resp = await h.client.get("/_homeserver/sso/callback/idp", params={"state": "forged", "code": code})
        assert resp.status == 400 and 'data-reason="state"' in await resp.text()
        # the state without this browser's cookie
        h.client.session.cookie_jar.clear()
        status, page, _ = await callback(h, auth_url, code=code)
        assert status == 400 and 'data-reason="state"' in page
        # a fresh attempt works once, and its state cannot be replayed
        auth_url = await begin(h)
        status, _, _ = await callback(h, auth_url, code=fake.authorize(auth_url, "s", preferred_username="bob"))
        assert status == 200
        status, page, _ = await callback(h, auth_url, code=fake.authorize(auth_url, "s", preferred_username="bob"))
        assert status == 400 and 'data-reason="state"' in page


async def test_provider_refusals_and_bad_tokens_create_nothing(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        auth_url = await begin(h)
        status, page, _ = await callback(h, auth_url, error="access_denied")
        assert status == 403 and 'data-reason="denied"' in page
        for tamper in (
            {"iss": "https://evil.example"},
            {"aud": "someone-else"},
            {"nonce": "replayed"},
            {"exp": int(time.time()) - 3600},
        ):
            fake.tamper = tamper
            auth_url = await begin(h)
            status, page, _ = await callback(h, auth_url, code=fake.authorize(auth_url, "x", preferred_username="eve"))
            assert status == 502 and 'data-reason="provider"' in page, tamper
        fake.tamper = {}
        fake.bad_signature = True
        auth_url = await begin(h)
        status, page, _ = await callback(h, auth_url, code=fake.authorize(auth_url, "x", preferred_username="eve"))
        assert status == 502
        fake.bad_signature = False
        # a code exchanged with another attempt's verifier (the provider refuses it)
        first, second = await begin(h), await begin(h)
        code = fake.authorize(second, "x", preferred_username="eve")
        fake.codes[code]["params"]["code_challenge"] = parse_qs(urlsplit(first).query)["code_challenge"][0]
        status, page, _ = await callback(h, second, code=code)
        assert status == 502
        assert not h.hs.accounts.exists("@eve:hs.test")


async def test_bad_redirect_urls(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, _):
        status, body = await h.request("GET", "login/sso/redirect/idp")
        assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
        for bad in ("javascript:alert(1)", "/relative", "ftp://x.example/"):
            status, body = await h.request("GET", f"login/sso/redirect/idp?redirectUrl={bad}")
            assert status == 400 and body["errcode"] == "M_INVALID_PARAM", bad
        status, body = await h.request("GET", f"login/sso/redirect/nope?redirectUrl={CLIENT_URL}")
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"
        status, body = await h.request("POST", "login", json={"type": "m.login.token", "token": "mlt_forged"})
        assert status == 403


async def test_invite_only_provider(tmp_path: Path) -> None:
    async with sso_server(tmp_path, registration="invite") as (h, fake):
        auth_url = await begin(h)
        status, page, _ = await callback(h, auth_url, code=fake.authorize(auth_url, "n1", preferred_username="newbie"))
        assert status == 403 and 'data-reason="invite_needed"' in page
        assert not h.hs.accounts.exists("@newbie:hs.test")
        invite = await h.hs.invites.create(creator=None, as_admin=True)
        auth_url = await begin(h, query=f"&org.homeserver.invite={invite['token']}")
        status, page, _ = await callback(h, auth_url, code=fake.authorize(auth_url, "n1", preferred_username="newbie"))
        assert status == 200 and "@newbie:hs.test" in page
        row = next(r for r in h.hs.invites.list() if r["token"] == invite["token"])
        assert row["status"] == "used"


async def test_closed_provider_and_existing_users(tmp_path: Path) -> None:
    async with sso_server(tmp_path, registration="closed", allow_existing_users=True) as (h, fake):
        await h.user("carol")
        status, body = await full_login(h, fake, "c-sub", preferred_username="Carol")
        assert status == 200 and body["user_id"] == "@carol:hs.test"  # linked by localpart
        auth_url = await begin(h)
        status, page, _ = await callback(h, auth_url, code=fake.authorize(auth_url, "d", preferred_username="dan"))
        assert status == 403 and 'data-reason="no_account"' in page


async def test_sign_up_from_the_invite_page_with_the_provider(tmp_path: Path) -> None:
    async with sso_server(tmp_path, registration="invite") as (h, fake):
        boss = await h.user("boss", admin=True)
        status, room = await h.request("POST", "createRoom", boss, json={"preset": "public_chat"})
        invite = await h.hs.invites.create(creator=None, as_admin=True, rooms=[room["room_id"]])
        resp = await h.client.get(f"/invite/{invite['token']}")
        page = html_unescape(await resp.text())
        found = re.search(r'<a class="button" href="([^"]+)">Our Provider</a>', page)
        assert found is not None, page
        resp = await h.client.get(found.group(1), allow_redirects=False)
        assert resp.status == 302
        auth_url = resp.headers["Location"]
        status, page, _ = await callback(h, auth_url, code=fake.authorize(auth_url, "inv", preferred_username="Vic"))
        assert status == 200 and "Welcome, @vic:hs.test!" in page and "loginToken" not in page
        assert h.hs.queries.is_joined("@vic:hs.test", h.hs.queries.room(room["room_id"]) or 0)
        row = next(r for r in h.hs.invites.list() if r["token"] == invite["token"])
        assert row["status"] == "used"


async def test_an_unreachable_provider_is_a_clear_error(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with sso_server(tmp_path, issuer=dead) as (h, _):
        status, body = await h.request("GET", f"login/sso/redirect/idp?redirectUrl={CLIENT_URL}")
        assert status == 502 and body["errcode"] == "M_UNKNOWN" and "could not be reached" in body["error"]


async def test_sso_attempts_are_rate_limited(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, _):
        h.hs.ratelimiter.config = h.hs.config.rate_limits.model_copy(update={"enabled": True})
        url = f"{REDIRECT}/idp?redirectUrl={quote(CLIENT_URL, safe='')}"
        statuses = [(await h.client.get(url, allow_redirects=False)).status for _ in range(8)]
        assert statuses[:5] == [302] * 5 and 429 in statuses[5:]
