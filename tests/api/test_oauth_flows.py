"""The OAuth 2.0 API as real clients use it (issue 14): Element X's exact requests, sign-up with an
invite on the pages (`prompt=create`, and from `prompt=consent` too), the device authorization grant
with its page, and the account management page with the stable and draft action names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from .auth_helpers import PASSWORD, bearer
from .conftest import Harness
from .oauth_helpers import (
    BASE,
    FORM,
    OAUTH,
    Clock,
    authorize_query,
    csrf_of,
    get,
    hidden,
    local,
    oauth_server,
    pkce,
    post_form,
    register_client,
    response_params,
    token_request,
)

# matrix-rust-sdk's registration body for Element X iOS (registration.rs: redirect URIs, public
# client, refresh token always, native), its unstable scopes and authorization parameters
ELEMENT_X = {
    "redirect_uris": ["https://element.io/oauth/ios/callback"],
    "token_endpoint_auth_method": "none",
    "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
    "response_types": ["code"],
    "application_type": "native",
    "client_uri": "https://element.io",
    "client_name": "Element X",
    "logo_uri": "https://element.io/mobile-icon.png",
    "policy_uri": "https://element.io/privacy",
    "tos_uri": "https://element.io/user-terms-of-service",
}
UNSTABLE_API = "urn:matrix:org.matrix.msc2967.client:api:*"
UNSTABLE_DEVICE = "urn:matrix:org.matrix.msc2967.client:device:"


def rust_sdk_accepts(meta: dict[str, Any]) -> None:
    """The checks matrix-rust-sdk (ruma's AuthorizationServerMetadata) makes before it logs in:
    required fields and values, every URL https, an issuer without query or fragment."""
    for key in ("issuer", "authorization_endpoint", "token_endpoint", "revocation_endpoint"):
        assert isinstance(meta[key], str), key
    assert "code" in meta["response_types_supported"]
    assert {"query", "fragment"} <= set(meta["response_modes_supported"])
    assert {"authorization_code", "refresh_token"} <= set(meta["grant_types_supported"])
    assert "S256" in meta["code_challenge_methods_supported"]
    issuer = urlsplit(meta["issuer"])
    assert not issuer.query and not issuer.fragment and "#" not in meta["issuer"]
    for key in (
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "revocation_endpoint",
        "registration_endpoint",
        "account_management_uri",
        "device_authorization_endpoint",
    ):
        assert urlsplit(meta[key]).scheme == "https", key


async def test_element_x_logs_in_with_its_exact_requests(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        status, meta = await h.request("GET", "/_matrix/client/v1/auth_metadata")
        assert status == 200
        rust_sdk_accepts(meta)
        resp = await h.client.post(local(meta["registration_endpoint"]), json=ELEMENT_X)
        registered = await resp.json()
        assert resp.status == 201, registered
        client_id = registered["client_id"]
        verifier, challenge = pkce()
        query = {
            "response_type": "code",
            "client_id": client_id,
            "state": "xstate",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "redirect_uri": "https://element.io/oauth/ios/callback",
            "scope": f"{UNSTABLE_API} {UNSTABLE_DEVICE}EXDEVICE42",
            "prompt": "consent",
            "login_hint": "mxid:@alice:hs.test",
        }
        status, page, _ = await get(h, local(meta["authorization_endpoint"]), **query)
        assert status == 200
        assert 'value="@alice:hs.test"' in page  # the hint fills in the user
        assert "Create an account" in page  # sign-up offered whatever the prompt
        fields = {"csrf": csrf_of(page), "next": hidden(page, "next"), "username": "@alice:hs.test"}
        status, _, location = await post_form(h, f"{OAUTH}/login", {**fields, "password": PASSWORD})
        assert status == 303 and location is not None
        status, page, _ = await get(h, location)
        assert status == 200 and "Element X" in page and "EXDEVICE42" in page
        consent = {"csrf": csrf_of(page), "req": hidden(page, "req"), "decision": "allow"}
        status, _, location = await post_form(h, f"{OAUTH}/consent", consent)
        assert status == 303 and location is not None
        assert location.startswith("https://element.io/oauth/ios/callback?")  # query response mode
        params = response_params(location, "query")
        assert params["state"] == "xstate"
        status, tokens = await token_request(
            h,
            {
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": "https://element.io/oauth/ios/callback",
                "client_id": client_id,
                "code_verifier": verifier,
            },
        )
        assert status == 200, tokens
        assert tokens["scope"] == f"{UNSTABLE_API} {UNSTABLE_DEVICE}EXDEVICE42"
        status, me = await h.request("GET", "account/whoami", headers=bearer(tokens["access_token"]))
        assert (status, me["device_id"]) == (200, "EXDEVICE42")
        status, fresh = await token_request(
            h, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"], "client_id": client_id}
        )
        assert status == 200 and fresh["scope"] == tokens["scope"]
        # Element X logs out by revoking
        resp = await h.client.post(
            local(meta["revocation_endpoint"]), data=urlencode({"token": fresh["access_token"]}), headers=FORM
        )
        assert resp.status == 200
        assert h.hs.accounts.device("@alice:hs.test", "EXDEVICE42") is None


async def test_element_x_android_private_scheme_redirect(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        client_id = await register_client(h, {**ELEMENT_X, "redirect_uris": ["io.element:/callback"]})
        _, challenge = pkce()
        query = {**authorize_query(client_id, challenge), "redirect_uri": "io.element:/callback", "prompt": "none"}
        query.pop("response_mode")
        status, _, location = await get(h, f"{OAUTH}/authorize", **query)
        assert status == 303 and location is not None and location.startswith("io.element:/callback?error=")


async def invite(h: Harness, uses: int = 1) -> str:
    made = await h.hs.invites.create(creator=None, as_admin=True, uses=uses)
    return str(made["token"])


async def sign_up(h: Harness, page: str, username: str, invite_code: str | None) -> tuple[int, str, str | None]:
    fields = {
        "csrf": csrf_of(page),
        "next": hidden(page, "next"),
        "username": username,
        "password": PASSWORD,
        "password2": PASSWORD,
    }
    if invite_code is not None:
        fields["invite"] = invite_code
    return await post_form(h, f"{OAUTH}/signup", fields)


async def test_prompt_create_opens_sign_up_which_needs_an_invite(tmp_path: Path) -> None:
    async with oauth_server(tmp_path, registration="token") as h:
        await h.user("admin")
        code = await invite(h)
        client_id = await register_client(h)
        verifier, challenge = pkce()
        status, page, _ = await get(h, f"{OAUTH}/authorize", **authorize_query(client_id, challenge, prompt="create"))
        assert status == 200 and 'name="invite"' in page and 'name="password2"' in page
        status, page2, location = await sign_up(h, page, "bob", None)
        assert (status, location) == (400, None) and "Enter the invite code" in page2
        status, page2, location = await sign_up(h, page, "bob", "not-an-invite")
        assert (status, location) == (403, None)
        assert not h.hs.accounts.exists("@bob:hs.test")
        status, _, location = await sign_up(h, page, "bob", code)
        assert status == 303 and location is not None
        status, page, _ = await get(h, location)  # signed in: consent next
        consent = {"csrf": csrf_of(page), "req": hidden(page, "req"), "decision": "allow"}
        _, _, location = await post_form(h, f"{OAUTH}/consent", consent)
        assert location is not None
        params = response_params(location)
        status, tokens = await token_request(
            h,
            {
                "grant_type": "authorization_code",
                "code": params["code"],
                "redirect_uri": "https://chat.example/callback",
                "client_id": client_id,
                "code_verifier": verifier,
            },
        )
        assert status == 200
        status, me = await h.request("GET", "account/whoami", headers=bearer(tokens["access_token"]))
        assert me["user_id"] == "@bob:hs.test"
        assert h.hs.invites.view(code).status == "used"


async def test_an_opened_invite_link_fills_in_the_sign_up_page(tmp_path: Path) -> None:
    async with oauth_server(tmp_path, registration="token") as h:
        await h.user("admin")
        code = await invite(h)
        assert (await h.client.get(f"/invite/{code}")).status == 200
        client_id = await register_client(h)
        _, challenge = pkce()
        # Element X: prompt=consent even to sign up; the sign-up link is on the sign-in page
        status, page, _ = await get(h, f"{OAUTH}/authorize", **authorize_query(client_id, challenge, prompt="consent"))
        link = re.search(r'id="signup" href="([^"]+)"', page)
        assert status == 200 and link is not None
        status, page, _ = await get(h, link.group(1).replace("&amp;", "&"))
        assert status == 200 and f'name="invite" value="{code}"' in page


async def test_open_registration_signs_up_without_an_invite(tmp_path: Path) -> None:
    async with oauth_server(tmp_path, registration="open") as h:
        status, page, _ = await get(h, f"{OAUTH}/signup")
        assert status == 200 and 'name="invite"' not in page
        status, _, location = await sign_up(h, page, "carol", None)
        assert status == 303 and location == "/_homeserver/account"
        assert h.hs.accounts.exists("@carol:hs.test")
        status, page, _ = await get(h, f"{OAUTH}/signup")
        status, page, _ = await sign_up(h, page, "carol", None)
        assert status == 409 and "taken" in page


# -- the device authorization grant (RFC 8628) -------------------------------------------------------


async def start_device(h: Harness, client_id: str, device_id: str = "TV1") -> dict[str, Any]:
    scope = f"urn:matrix:client:api:* urn:matrix:client:device:{device_id}"
    resp = await h.client.post(
        f"{OAUTH}/device_authorization", data=urlencode({"client_id": client_id, "scope": scope}), headers=FORM
    )
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def poll(h: Harness, client_id: str, device_code: str) -> tuple[int, dict[str, Any]]:
    return await token_request(
        h,
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": device_code,
            "client_id": client_id,
        },
    )


async def browser_sign_in(h: Harness, username: str = "alice") -> None:
    status, page, _ = await get(h, f"{OAUTH}/login")
    fields = {"csrf": csrf_of(page), "next": "/_homeserver/account", "username": username, "password": PASSWORD}
    status, _, _ = await post_form(h, f"{OAUTH}/login", fields)
    assert status == 303


async def test_device_grant_with_the_code_page(tmp_path: Path) -> None:
    clock = Clock()
    async with oauth_server(tmp_path, clock) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        started = await start_device(h, client_id)
        assert started["verification_uri"] == f"{BASE}{OAUTH}/device" and started["interval"] == 5
        assert re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", started["user_code"])
        status, body = await poll(h, client_id, started["device_code"])
        assert (status, body["error"]) == (400, "authorization_pending")
        status, body = await poll(h, client_id, started["device_code"])  # at once again: too fast
        assert (status, body["error"]) == (400, "slow_down")
        # the person opens the complete URI, signs in, checks the code and allows
        status, page, _ = await get(h, local(started["verification_uri_complete"]))
        assert status == 200 and 'name="password"' in page
        fields = {"csrf": csrf_of(page), "next": hidden(page, "next"), "username": "alice", "password": PASSWORD}
        status, _, location = await post_form(h, f"{OAUTH}/login", fields)
        assert status == 303 and location is not None
        status, page, _ = await get(h, location)
        assert status == 200 and started["user_code"] in page and "TV1" in page
        consent = {"csrf": csrf_of(page), "user_code": hidden(page, "user_code"), "decision": "allow"}
        status, page, _ = await post_form(h, f"{OAUTH}/device/consent", consent)
        assert status == 200 and "connected" in page
        clock.now += 11
        status, tokens = await poll(h, client_id, started["device_code"])
        assert status == 200, tokens
        status, me = await h.request("GET", "account/whoami", headers=bearer(tokens["access_token"]))
        assert (me["user_id"], me["device_id"]) == ("@alice:hs.test", "TV1")
        status, body = await poll(h, client_id, started["device_code"])  # used once
        assert (status, body["error"]) == (400, "invalid_grant")


async def test_device_codes_expire_can_be_denied_and_unknown_codes_are_limited(tmp_path: Path) -> None:
    clock = Clock()
    async with oauth_server(tmp_path, clock) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        old = await start_device(h, client_id)
        clock.now += 901
        status, body = await poll(h, client_id, old["device_code"])
        assert (status, body["error"]) == (400, "expired_token")
        await browser_sign_in(h)
        status, page, _ = await get(h, f"{OAUTH}/device", user_code=old["user_code"])
        assert status == 400 and "unknown or has expired" in page
        fresh = await start_device(h, client_id, "TV2")
        status, page, _ = await get(h, f"{OAUTH}/device", user_code=fresh["user_code"].lower().replace("-", ""))
        assert status == 200
        consent = {"csrf": csrf_of(page), "user_code": hidden(page, "user_code"), "decision": "deny"}
        status, page, _ = await post_form(h, f"{OAUTH}/device/consent", consent)
        assert status == 200 and "cancelled" in page
        status, body = await poll(h, client_id, fresh["device_code"])
        assert (status, body["error"]) == (400, "access_denied")
        assert h.hs.accounts.device("@alice:hs.test", "TV2") is None
        status, body = await poll(h, "oc_nope", fresh["device_code"])
        assert (status, body["error"]) == (401, "invalid_client")


async def test_device_authorization_refuses_bad_scopes_and_clients(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        client_id = await register_client(h)
        resp = await h.client.post(
            f"{OAUTH}/device_authorization",
            data=urlencode({"client_id": client_id, "scope": "urn:matrix:client:api:*"}),
            headers=FORM,
        )
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_scope"
        code_only = await register_client(h, {**ELEMENT_X, "grant_types": ["authorization_code", "refresh_token"]})
        resp = await h.client.post(
            f"{OAUTH}/device_authorization",
            data=urlencode({"client_id": code_only, "scope": "urn:matrix:client:api:* urn:matrix:client:device:X"}),
            headers=FORM,
        )
        assert resp.status == 400 and (await resp.json())["error"] == "unauthorized_client"


# -- account management -------------------------------------------------------------------------------


async def test_account_page_needs_sign_in_then_lists_views_and_ends_sessions(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        alice = await h.user("alice", password=PASSWORD)
        end = {"action": "org.matrix.session_end", "device_id": alice.device_id}
        status, page, _ = await get(h, "/_homeserver/account", **end)
        assert status == 200 and 'name="password"' in page
        next_url = hidden(page, "next")
        assert next_url.startswith("/_homeserver/account?action=org.matrix.session_end")
        fields = {"csrf": csrf_of(page), "next": next_url, "username": "alice", "password": PASSWORD}
        status, _, location = await post_form(h, f"{OAUTH}/login", fields)
        assert status == 303 and location == next_url
        status, page, _ = await get(h, location)  # the draft name is the stable device_delete
        assert status == 200 and 'id="confirm-end"' in page and alice.device_id in page
        status, page, _ = await get(h, "/_homeserver/account", action="org.matrix.device_view", device_id="NOPE")
        assert "There is no session NOPE" in page
        status, page, _ = await post_form(
            h, "/_homeserver/account/device_delete", {"csrf": csrf_of(page), "device_id": alice.device_id}
        )
        assert status == 200 and "signed out" in page
        status, _ = await h.request("GET", "account/whoami", alice)
        assert status == 401
        profile = {"csrf": csrf_of(page), "displayname": "Al"}
        status, page, _ = await post_form(h, "/_homeserver/account/profile", profile)
        assert status == 200 and h.hs.profiles.get_profile(alice.user_id)["displayname"] == "Al"
        status, page, _ = await post_form(h, "/_homeserver/account/profile", {"csrf": "forged", "displayname": "X"})
        assert status == 400 and h.hs.profiles.get_profile(alice.user_id)["displayname"] == "Al"


async def test_account_page_cross_signing_reset_and_deactivation(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        alice = await h.user("alice", password=PASSWORD)
        await browser_sign_in(h)
        status, page, _ = await get(h, "/_homeserver/account", action="org.matrix.cross_signing_reset")
        assert status == 200 and 'id="allow-reset"' in page
        assert not h.hs.browser_accounts.cross_signing_reset_allowed(alice.user_id)
        status, _, _ = await post_form(h, "/_homeserver/account/cross_signing_reset", {"csrf": csrf_of(page)})
        assert status == 200 and h.hs.browser_accounts.cross_signing_reset_allowed(alice.user_id)
        status, page, _ = await get(h, "/_homeserver/account", action="org.matrix.account_deactivate")
        wrong = {"csrf": csrf_of(page), "confirm": "x"}
        status, _, _ = await post_form(h, "/_homeserver/account/deactivate", wrong)
        assert status == 400 and not h.hs.accounts.account(alice.user_id)["deactivated"]  # type: ignore[index]
        status, _, _ = await post_form(
            h, "/_homeserver/account/deactivate", {"csrf": csrf_of(page), "confirm": alice.user_id}
        )
        assert status == 200 and h.hs.accounts.account(alice.user_id)["deactivated"]  # type: ignore[index]
        status, page, _ = await get(h, "/_homeserver/account")
        assert 'name="password"' in page  # signed out with the account


async def test_prompt_create_on_a_closed_server_shows_sign_in_without_sign_up(tmp_path: Path) -> None:
    async with oauth_server(tmp_path, registration="closed") as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        _, challenge = pkce()
        status, page, _ = await get(h, f"{OAUTH}/authorize", **authorize_query(client_id, challenge, prompt="create"))
        assert status == 200 and 'name="password2"' not in page and 'id="signup"' not in page
        status, page, _ = await get(h, f"{OAUTH}/signup")
        assert status == 403
