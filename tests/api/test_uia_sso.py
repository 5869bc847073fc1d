"""User-interactive auth through single sign-on (spec: UIA "Single Sign-On", "Fallback", "SSO during
User-Interactive Authentication"), against the in-process OpenID provider of test_sso_oidc: the flows
a user is offered (password only with a password, m.login.sso only with a linked identity, a clear
403 with neither), the fallback page (what is confirmed, the provider link bound to a cookie), the
callback completing the stage only for the session's own user, and every bad input: unknown and
expired sessions, another user's or nobody's identity, replayed and cookieless state, a stage sent
without the browser. Also the m.login.password fallback form."""

from __future__ import annotations

import base64
import hashlib
import re
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from homeserver.api.pages import AUTH_DONE_SCRIPT
from tests.accounts import User

from .conftest import Harness
from .test_sso_oidc import FakeProvider, full_login, sso_server

SSO_FALLBACK = "/_matrix/client/v3/auth/m.login.sso/fallback/web"
PASSWORD_FALLBACK = "/_matrix/client/v3/auth/m.login.password/fallback/web"
CALLBACK = "/_homeserver/sso/callback/idp"


async def sso_user(h: Harness, fake: FakeProvider, sub: str, name: str) -> User:
    status, body = await full_login(h, fake, sub, preferred_username=name)
    assert status == 200, body
    return User(body["user_id"], body["device_id"], body["access_token"])


async def delete_device(h: Harness, user: User, device_id: str, auth: Any = None) -> tuple[int, Any]:
    return await h.request("DELETE", f"devices/{device_id}", user, json={} if auth is None else {"auth": auth})


async def fallback_page(h: Harness, session: str) -> tuple[int, str]:
    resp = await h.client.get(SSO_FALLBACK, params={"session": session})
    return resp.status, await resp.text()


def provider_links(page: str) -> list[str]:
    return [unescape(u) for u in re.findall(r'<a class="button" href="([^"]+)"', page)]


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


async def back_from_provider(h: Harness, auth_url: str, code: str) -> tuple[int, str, dict[str, str]]:
    state = parse_qs(urlsplit(auth_url).query)["state"][0]
    resp = await h.client.get(CALLBACK, params={"state": state, "code": code}, allow_redirects=False)
    return resp.status, await resp.text(), dict(resp.headers)


async def test_an_sso_only_user_deletes_a_device_through_the_fallback(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        alice = await sso_user(h, fake, "sub-a", "alice")
        other = await sso_user(h, fake, "sub-a", "alice")  # a second device of the same account
        assert other.user_id == alice.user_id == "@alice:hs.test"
        status, body = await delete_device(h, alice, other.device_id)
        assert status == 401 and body["flows"] == [{"stages": ["m.login.sso"]}], body  # no password to offer
        session = body["session"]

        status, page = await fallback_page(h, session)
        assert status == 200
        assert "An app signed in as @alice:hs.test asks to sign out and remove one of your devices." in page
        (link,) = provider_links(page)
        assert link.startswith(f"{fake.base}/auth?") and "Continue with Our Provider" in page
        assert "<script" not in page  # the confirmation needs no script
        params = parse_qs(urlsplit(link).query)
        assert params["redirect_uri"] == [f"https://hs.example{CALLBACK}"]

        status, done, headers = await back_from_provider(h, link, fake.authorize(link, "sub-a"))
        assert status == 200 and 'id="done"' in done and "go back to your app" in done
        # spec: the fallback's completion script, allowed by its hash and nothing else
        assert f"<script>{AUTH_DONE_SCRIPT}</script>" in done
        assert 'window.opener.postMessage("authDone", "*")' in AUTH_DONE_SCRIPT
        digest = base64.b64encode(hashlib.sha256(AUTH_DONE_SCRIPT.encode()).digest()).decode()
        assert f"script-src 'sha256-{digest}'" in headers["Content-Security-Policy"]

        status, body = await delete_device(h, alice, other.device_id, {"session": session})
        assert status == 200, body
        assert h.hs.accounts.device(alice.user_id, other.device_id) is None
        assert (await h.request("GET", "account/whoami", other))[0] == 401
        # the session served its one operation
        status, page = await fallback_page(h, session)
        assert status == 400 and 'data-reason="uia_session"' in page


async def test_flows_follow_what_the_user_can_confirm_with(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        bob = await h.user("bob")  # a password, no identity
        status, body = await delete_device(h, bob, bob.device_id)
        assert status == 401 and body["flows"] == [{"stages": ["m.login.password"]}]

        carol = await sso_user(h, fake, "sub-c", "carol")
        # an SSO-only user sets a password, confirming with the provider; then both ways are offered
        status, body = await h.request("POST", "account/password", carol, json={"new_password": "carol's own pw"})
        assert status == 401 and body["flows"] == [{"stages": ["m.login.sso"]}]
        session = body["session"]
        (link,) = provider_links((await fallback_page(h, session))[1])
        assert (await back_from_provider(h, link, fake.authorize(link, "sub-c")))[0] == 200
        status, body = await h.request(
            "POST", "account/password", carol, json={"new_password": "carol's own pw", "auth": {"session": session}}
        )
        assert status == 200, body
        status, body = await delete_device(h, carol, carol.device_id)
        assert body["flows"] == [{"stages": ["m.login.password"]}, {"stages": ["m.login.sso"]}]
        status, body = await delete_device(
            h,
            carol,
            carol.device_id,
            {"type": "m.login.password", "password": "carol's own pw", "session": body["session"]},
        )
        assert status == 200

        # neither a password nor an identity: a clear refusal, not a flow nobody can complete
        dave_id = await h.hs.accounts.create("dave", None)
        dave_session = await h.hs.accounts.new_session(dave_id)
        dave = User(dave_id, dave_session.device_id, dave_session.access_token)
        status, body = await delete_device(h, dave, dave.device_id)
        assert status == 403 and body["errcode"] == "M_FORBIDDEN" and "no password" in body["error"]


async def test_bad_sessions_get_a_page_not_a_provider(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        alice = await sso_user(h, fake, "sub-a", "alice")
        for session in ("", "no-such-session"):
            status, page = await fallback_page(h, session)
            assert status == 400 and 'data-reason="uia_session"' in page and "Nothing was confirmed" in page
        # expired before the page was opened
        status, body = await delete_device(h, alice, alice.device_id)
        found = h.hs.uia.get(body["session"])
        assert found is not None
        found.expires_at = 0
        assert (await fallback_page(h, body["session"]))[0] == 400
        # a registration session has no user to re-authenticate
        status, body = await h.request("POST", "register", json={"username": "newbie", "password": "pw-newbie-1"})
        assert status == 401
        status, page = await fallback_page(h, body["session"])
        assert status == 400 and 'data-reason="uia_no_provider"' in page
        # a stage the browser cannot do here
        resp = await h.client.get("/_matrix/client/v3/auth/m.login.recaptcha/fallback/web?session=x")
        assert resp.status == 404 and 'data-reason="uia_unsupported"' in await resp.text()


async def test_only_the_sessions_own_user_completes_the_stage(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        alice = await sso_user(h, fake, "sub-a", "alice")
        await sso_user(h, fake, "sub-b", "bob")
        status, body = await delete_device(h, alice, alice.device_id)
        session = body["session"]
        # signed in upstream as bob (linked to @bob), then as someone linked to nobody
        for sub in ("sub-b", "sub-nobody"):
            (link,) = provider_links((await fallback_page(h, session))[1])
            status, page, _ = await back_from_provider(h, link, fake.authorize(link, sub))
            assert status == 403 and 'data-reason="uia_wrong_user"' in page, sub
            assert "<script" not in page
        assert not h.hs.accounts.exists("@nobody:hs.test")  # re-authentication never creates accounts
        status, body = await delete_device(h, alice, alice.device_id, {"session": session})
        assert status == 401 and "completed" not in body  # nothing was marked
        # a client cannot claim the stage itself
        status, body = await delete_device(h, alice, alice.device_id, {"type": "m.login.sso", "session": session})
        assert status == 401 and body["errcode"] == "M_UNAUTHORIZED" and "fallback/web" in body["error"]
        assert h.hs.accounts.device(alice.user_id, alice.device_id) is not None


async def test_replayed_cookieless_and_late_callbacks_are_refused(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        alice = await sso_user(h, fake, "sub-a", "alice")
        status, body = await delete_device(h, alice, alice.device_id)
        session = body["session"]
        # another browser (no cookie from the page) cannot use the page's link
        (link,) = provider_links((await fallback_page(h, session))[1])
        h.client.session.cookie_jar.clear()
        status, page, _ = await back_from_provider(h, link, fake.authorize(link, "sub-a"))
        assert status == 400 and 'data-reason="state"' in page
        # the session expires while the user is at the provider
        (link,) = provider_links((await fallback_page(h, session))[1])
        found = h.hs.uia.get(session)
        assert found is not None
        found.expires_at = 0
        status, page, _ = await back_from_provider(h, link, fake.authorize(link, "sub-a"))
        assert status == 400 and 'data-reason="uia_session"' in page
        # a fresh session: its state works once, and not twice
        status, body = await delete_device(h, alice, alice.device_id)
        session = body["session"]
        (link,) = provider_links((await fallback_page(h, session))[1])
        assert (await back_from_provider(h, link, fake.authorize(link, "sub-a")))[0] == 200
        status, page, _ = await back_from_provider(h, link, fake.authorize(link, "sub-a"))
        assert status == 400 and 'data-reason="state"' in page
        # a login attempt's state is not a UIA one: the login callback still logs in as before
        assert (await full_login(h, fake, "sub-a"))[0] == 200


async def test_password_fallback_form(tmp_path: Path) -> None:
    async with sso_server(tmp_path) as (h, fake):
        bob = await h.user("bob")
        status, body = await h.request("POST", "account/deactivate", bob, json={})
        assert status == 401
        session = body["session"]
        url = f"{PASSWORD_FALLBACK}?session={session}"
        resp = await h.client.get(url)
        page = await resp.text()
        assert resp.status == 200 and "asks to deactivate your account, which cannot be undone" in page
        # a program posting JSON gets a Matrix error; a forged form (no matching token) and a wrong
        # password do nothing
        resp = await h.client.post(url, json={"password": "correct horse"})
        assert resp.status == 415 and (await resp.json())["errcode"] == "M_UNRECOGNIZED"
        resp = await h.client.post(url, data={"csrf": "forged", "password": "correct horse"})
        page = await resp.text()
        assert resp.status == 400 and "The form expired" in page
        resp = await h.client.post(url, data={"csrf": csrf_of(page), "password": "wrong"})
        page = await resp.text()
        assert resp.status == 403 and "That password is not right" in page
        assert (await h.request("POST", "account/deactivate", bob, json={"auth": {"session": session}}))[0] == 401
        resp = await h.client.post(url, data={"csrf": csrf_of(page), "password": "correct horse"})
        assert resp.status == 200 and f"<script>{AUTH_DONE_SCRIPT}</script>" in await resp.text()
        status, body = await h.request("POST", "account/deactivate", bob, json={"auth": {"session": session}})
        assert status == 200, body
        # an SSO-only user has no password form
        alice = await sso_user(h, fake, "sub-a", "alice")
        status, body = await delete_device(h, alice, alice.device_id)
        resp = await h.client.get(f"{PASSWORD_FALLBACK}?session={body['session']}")
        assert resp.status == 400 and 'data-reason="uia_no_password"' in await resp.text()
