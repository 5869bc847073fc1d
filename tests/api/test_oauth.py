"""The OAuth 2.0 API (issue 14): discovery, client registration, the authorization code grant with
PKCE through the sign-in and consent pages, tokens that work on the client-server API, refresh with
rotation, a grace period and replay detection, and revocation."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode, urlsplit

from .auth_helpers import PASSWORD, bearer
from .conftest import Harness, User
from .oauth_helpers import (
    API_SCOPE,
    BASE,
    DEVICE_SCOPE,
    FORM,
    OAUTH,
    Clock,
    login_with_code,
    oauth_server,
    register_client,
    token_request,
)


async def whoami(h: Harness, token: str) -> tuple[int, dict[str, object]]:
    return await h.request("GET", "account/whoami", headers=bearer(token))


# -- 1. discovery ------------------------------------------------------------------------------------


async def test_metadata_has_every_required_field_with_https_urls(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        # h.request validates the answer against the spec's OpenAPI schema (tests/openapi/)
        status, meta = await h.request("GET", "/_matrix/client/v1/auth_metadata")
        assert status == 200, meta
        assert meta["issuer"] == f"{BASE}/"
        for key in ("authorization_endpoint", "token_endpoint", "registration_endpoint", "revocation_endpoint"):
            assert meta[key].startswith(f"{BASE}/"), key
        assert meta["device_authorization_endpoint"] == f"{BASE}{OAUTH}/device_authorization"
        assert meta["account_management_uri"] == f"{BASE}/_homeserver/account"
        assert "org.matrix.cross_signing_reset" in meta["account_management_actions_supported"]
        assert meta["prompt_values_supported"] == ["create"]
        assert set(meta["response_modes_supported"]) >= {"query", "fragment"}
        assert set(meta["grant_types_supported"]) >= {"authorization_code", "refresh_token"}
        assert meta["code_challenge_methods_supported"] == ["S256"]
        unstable = await h.client.get("/_matrix/client/unstable/org.matrix.msc2965/auth_metadata")
        assert await unstable.json() == meta
        assert unstable.headers["Access-Control-Allow-Origin"] == "*"
        issuer = await (await h.client.get("/_matrix/client/unstable/org.matrix.msc2965/auth_issuer")).json()
        assert issuer == {"issuer": f"{BASE}/"}
        oidc = await (await h.client.get("/.well-known/openid-configuration")).json()
        assert oidc == meta


async def test_no_sign_up_prompt_when_registration_is_closed(tmp_path: Path) -> None:
    async with oauth_server(tmp_path, registration="closed") as h:
        await h.user("alice")
        status, meta = await h.request("GET", "/_matrix/client/v1/auth_metadata")
        assert status == 200 and "prompt_values_supported" not in meta


async def test_disabled_oauth_answers_unrecognized(tmp_path: Path) -> None:
    async with oauth_server(tmp_path, oauth={"enabled": False}) as h:
        status, body = await h.request("GET", "/_matrix/client/v1/auth_metadata")
        assert (status, body["errcode"]) == (404, "M_UNRECOGNIZED")


# -- 3./4. code grant, tokens, refresh, revocation ---------------------------------------------------


async def test_code_grant_gives_tokens_that_work_everywhere(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        tokens = await login_with_code(h, client_id, "alice", PASSWORD, device_id="PHONE1")
        assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 300
        assert tokens["scope"] == f"{API_SCOPE} {DEVICE_SCOPE}PHONE1"
        status, me = await whoami(h, tokens["access_token"])
        assert status == 200 and me["user_id"] == "@alice:hs.test" and me["device_id"] == "PHONE1"
        status, devices = await h.request("GET", "devices", headers=bearer(tokens["access_token"]))
        assert status == 200
        [device] = [d for d in devices["devices"] if d["device_id"] == "PHONE1"]
        assert device["display_name"] == "Web Chat"
        status, sync = await h.request("GET", "sync?timeout=0", headers=bearer(tokens["access_token"]))
        assert status == 200 and "next_batch" in sync


async def test_access_tokens_expire_and_refresh_rotates(tmp_path: Path) -> None:
    clock = Clock()
    async with oauth_server(tmp_path, clock) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        tokens = await login_with_code(h, client_id, "alice", PASSWORD)
        clock.now += 301
        status, body = await whoami(h, tokens["access_token"])
        assert (status, body["errcode"], body["soft_logout"]) == (401, "M_UNKNOWN_TOKEN", True)
        status, fresh = await token_request(
            h, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
        )
        assert status == 200, fresh
        assert fresh["refresh_token"] != tokens["refresh_token"] and fresh["scope"] == tokens["scope"]
        assert (await whoami(h, fresh["access_token"]))[0] == 200
        # the next refresh with the new token works; the session goes on
        status, third = await token_request(
            h, {"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"], "client_id": client_id}
        )
        assert status == 200 and (await whoami(h, third["access_token"]))[0] == 200


async def test_a_lost_refresh_answer_can_be_retried_within_the_grace_period(tmp_path: Path) -> None:
    clock = Clock()
    async with oauth_server(tmp_path, clock) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        tokens = await login_with_code(h, client_id, "alice", PASSWORD)
        grant = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
        status, lost = await token_request(h, grant)
        assert status == 200
        clock.now += 10
        status, retried = await token_request(h, grant)
        assert status == 200, retried
        assert (await whoami(h, lost["access_token"]))[0] == 401  # the lost answer's tokens are gone
        assert (await whoami(h, retried["access_token"]))[0] == 200


async def test_replaying_an_old_refresh_token_ends_the_session(tmp_path: Path) -> None:
    clock = Clock()
    async with oauth_server(tmp_path, clock) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        tokens = await login_with_code(h, client_id, "alice", PASSWORD)
        grant = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
        status, fresh = await token_request(h, grant)
        assert status == 200
        clock.now += 120  # past the 60 s grace period: a thief's replay
        status, body = await token_request(h, grant)
        assert (status, body["error"]) == (400, "invalid_grant")
        assert (await whoami(h, fresh["access_token"]))[0] == 401
        status, body = await token_request(
            h, {"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"], "client_id": client_id}
        )
        assert (status, body["error"]) == (400, "invalid_grant")
        assert h.hs.accounts.device("@alice:hs.test", "DEVICEONE") is None


async def test_revocation_ends_the_session_and_unknown_tokens_are_fine(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        tokens = await login_with_code(h, client_id, "alice", PASSWORD)
        resp = await h.client.post(
            f"{OAUTH}/revoke",
            data=urlencode({"token": tokens["access_token"], "token_type_hint": "access_token"}),
            headers=FORM,
        )
        assert resp.status == 200
        assert (await whoami(h, tokens["access_token"]))[0] == 401
        status, body = await token_request(
            h, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
        )
        assert (status, body["error"]) == (400, "invalid_grant")
        resp = await h.client.post(f"{OAUTH}/revoke", data=urlencode({"token": "mat_nothing"}), headers=FORM)
        assert resp.status == 200
        resp = await h.client.post(f"{OAUTH}/revoke", data=urlencode({"token": ""}), headers=FORM)
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"


async def test_legacy_refresh_and_password_login_stay_apart(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        tokens = await login_with_code(h, client_id, "alice", PASSWORD)
        status, body = await h.request("POST", "refresh", json={"refresh_token": tokens["refresh_token"]})
        assert (status, body["errcode"]) == (401, "M_UNKNOWN_TOKEN")
        # spec: a password login gets a refresh token only when it asks (Element X logs out otherwise)
        login = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}}
        status, plain = await h.request("POST", "login", json={**login, "password": PASSWORD})
        assert status == 200 and "refresh_token" not in plain and "expires_in_ms" not in plain
        status, asked = await h.request("POST", "login", json={**login, "password": PASSWORD, "refresh_token": True})
        assert status == 200 and "refresh_token" in asked


async def test_cross_signing_reset_asks_m_oauth_of_oauth_sessions(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        tokens = await login_with_code(h, client_id, "alice", PASSWORD)
        user = User("@alice:hs.test", "DEVICEONE", tokens["access_token"])
        keys = {
            "master_key": {
                "user_id": user.user_id,
                "usage": ["master"],
                "keys": {"ed25519:aaaa": "aaaa"},
            }
        }
        status, body = await h.request("POST", "keys/device_signing/upload", user, json=keys)
        assert status == 200, body  # the first upload needs no confirmation
        keys["master_key"]["keys"] = {"ed25519:bbbb": "bbbb"}
        status, body = await h.request("POST", "keys/device_signing/upload", user, json=keys)
        assert status == 401, body
        assert body["flows"] == [{"stages": ["m.oauth"]}]
        url = body["params"]["m.oauth"]["url"]
        assert url == f"{BASE}/_homeserver/account?action=org.matrix.cross_signing_reset"
        h.hs.browser_accounts.allow_cross_signing_reset(user.user_id)  # what the account page does
        status, body = await h.request(
            "POST", "keys/device_signing/upload", user, json={**keys, "auth": {"session": body["session"]}}
        )
        assert status == 200, body
        assert urlsplit(url).path == "/_homeserver/account"


async def test_legacy_sso_leads_oauth_aware_clients_through_the_sign_in_page(tmp_path: Path) -> None:
    async with oauth_server(tmp_path, sso={"client_hosts": ["trusted.example"]}) as h:
        await h.user("alice", password=PASSWORD)
        status, flows = await h.request("GET", "login")
        assert status == 200
        sso = [f for f in flows["flows"] if f["type"] == "m.login.sso"]
        assert sso == [{"type": "m.login.sso", "identity_providers": [], "oauth_aware_preferred": True}]
        assert {"type": "m.login.password"} in flows["flows"]
        resp = await h.client.get(
            "/_matrix/client/v3/login/sso/redirect",
            params={"redirectUrl": "https://trusted.example/app?x=1", "action": "login"},
            allow_redirects=False,
        )
        assert resp.status == 302
        page = await h.client.get(resp.headers["Location"], allow_redirects=False)
        text = await page.text()
        assert page.status == 200 and 'name="password"' in text
        from .oauth_helpers import csrf_of, hidden, post_form

        fields = {"csrf": csrf_of(text), "next": hidden(text, "next"), "username": "alice", "password": PASSWORD}
        status, _, location = await post_form(h, f"{OAUTH}/login", fields)
        assert status == 303 and location is not None
        resp = await h.client.get(location, allow_redirects=False)
        target = resp.headers["Location"]
        assert resp.status == 303 and target.startswith("https://trusted.example/app?x=1&loginToken=")
        token = target.split("loginToken=")[1]
        status, body = await h.request("POST", "login", json={"type": "m.login.token", "token": token})
        assert status == 200 and body["user_id"] == "@alice:hs.test"
        resp = await h.client.get(
            "/_matrix/client/v3/login/sso/redirect",
            params={"redirectUrl": "https://other.example/", "action": "register"},
            allow_redirects=False,
        )
        assert resp.status == 302 and resp.headers["Location"].startswith(f"{OAUTH}/signup?")
        # an untrusted client host gets the confirmation page first
        resp = await h.client.get(
            f"{OAUTH}/legacy_sso", params={"redirectUrl": "https://other.example/"}, allow_redirects=False
        )
        assert resp.status == 200 and "Continue to other.example" in await resp.text()


async def test_endpoints_that_need_uia_are_closed_to_oauth_sessions(tmp_path: Path) -> None:
    # spec: "OAuth 2.0 API": endpoints that depend on UIA can't be used with its access tokens (the
    # account page does these); a stolen access token cannot delete devices or change the password.
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        tokens = await login_with_code(h, client_id, "alice", PASSWORD)
        user = User("@alice:hs.test", "DEVICEONE", tokens["access_token"])
        password_auth = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}}
        password_auth["password"] = PASSWORD
        for method, path, body in (
            ("DELETE", "devices/DEVICEONE", {"auth": password_auth}),
            ("POST", "delete_devices", {"devices": ["DEVICEONE"], "auth": password_auth}),
            ("POST", "account/password", {"new_password": "an0ther-Passw0rd!", "auth": password_auth}),
            ("POST", "account/deactivate", {"auth": password_auth}),
            ("POST", "/_matrix/client/v1/login/get_token", {"auth": password_auth}),
        ):
            status, answer = await h.request(method, path, user, json=body)
            assert (status, answer["errcode"]) == (403, "M_FORBIDDEN"), (path, answer)
            assert f"{BASE}/_homeserver/account" in answer["error"]
        assert (await whoami(h, user.access_token))[0] == 200  # nothing happened to the account
