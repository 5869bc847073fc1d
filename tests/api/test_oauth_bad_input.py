"""The OAuth 2.0 API refusing bad input (issue 14, "Bad input and abuse"): the spec's redirect URI
rules, unknown clients, unregistered redirects shown as a page (never followed), scopes without
exactly one device, PKCE verifiers wrong or missing, codes used twice or too late, CSRF, open
redirects, and nothing created half-way."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from homeserver.api.oauth_pages import safe_next
from homeserver.auth.oauth.clients import check_redirect_uri, redirect_matches
from homeserver.auth.oauth.errors import OAuthError
from homeserver.auth.oauth.scopes import parse_scope

from .auth_helpers import PASSWORD
from .oauth_helpers import (
    FORM,
    OAUTH,
    WEB_CLIENT,
    Clock,
    authorize_query,
    csrf_of,
    get,
    hidden,
    oauth_server,
    pkce,
    post_form,
    register_client,
    response_params,
    sign_in_and_consent,
    token_request,
)

# spec: "Redirect URI validation", with https://example.com/ as the client URI
VALID_NATIVE = [
    "com.example.app:/callback",
    "com.example:/",
    "com.example:callback",
    "http://localhost/callback",
    "http://127.0.0.1/callback",
    "http://[::1]/callback",
    "https://example.com/callback",
    "https://app.example.com/callback",
]
INVALID_NATIVE = [
    "example:/callback",
    "com.example.app://callback",
    "https://localhost/callback",
    "http://localhost:1234/callback",
    "com.example.app:/callback#fragment",
    "org.other:/callback",
]
VALID_WEB = [
    "https://example.com/callback",
    "https://app.example.com/callback",
    "https://example.com:5173/?query=value",
]
INVALID_WEB = [
    "https://example.com/callback#fragment",
    "http://example.com/callback",
    "http://localhost/",
    "https://user:pw@example.com/cb",
    "https://evil.com/cb",
    "https://notexample.com/cb",
    "com.example:/cb",
]


@pytest.mark.parametrize("uri", VALID_NATIVE)
def test_native_redirect_uris_the_spec_allows(uri: str) -> None:
    assert check_redirect_uri(uri, "example.com", "native") == uri


@pytest.mark.parametrize("uri", INVALID_NATIVE)
def test_native_redirect_uris_the_spec_refuses(uri: str) -> None:
    with pytest.raises(OAuthError) as e:
        check_redirect_uri(uri, "example.com", "native")
    assert e.value.error == "invalid_redirect_uri"


@pytest.mark.parametrize("uri", VALID_WEB)
def test_web_redirect_uris_the_spec_allows(uri: str) -> None:
    assert check_redirect_uri(uri, "example.com", "web") == uri


@pytest.mark.parametrize("uri", INVALID_WEB)
def test_web_redirect_uris_the_spec_refuses(uri: str) -> None:
    with pytest.raises(OAuthError):
        check_redirect_uri(uri, "example.com", "web")


def test_loopback_redirects_match_any_port_and_nothing_else() -> None:
    registered = ["http://127.0.0.1/callback", "http://[::1]/cb"]
    assert redirect_matches(registered, "http://127.0.0.1:43123/callback")
    assert redirect_matches(registered, "http://[::1]:8080/cb")
    assert not redirect_matches(registered, "http://127.0.0.1:43123/other")
    assert not redirect_matches(registered, "http://127.0.0.2:43123/callback")
    assert not redirect_matches(["https://a.example/cb"], "https://a.example:444/cb")


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"client_uri": None}, "invalid_client_metadata"),
        ({"client_uri": "http://chat.example/"}, "invalid_client_metadata"),
        ({"client_uri": "https://u:p@chat.example/"}, "invalid_client_metadata"),
        ({"token_endpoint_auth_method": "client_secret_basic"}, "invalid_client_metadata"),
        ({"application_type": "desktop"}, "invalid_client_metadata"),
        ({"redirect_uris": []}, "invalid_redirect_uri"),
        ({"redirect_uris": "https://chat.example/cb"}, "invalid_redirect_uri"),
        ({"redirect_uris": ["https://other.example/cb"]}, "invalid_redirect_uri"),
        ({"response_types": ["token"]}, "invalid_client_metadata"),
    ],
)
async def test_registration_refuses_bad_metadata(tmp_path: Path, change: dict[str, Any], error: str) -> None:
    metadata = {k: v for k, v in {**WEB_CLIENT, **change}.items() if v is not None}
    async with oauth_server(tmp_path) as h:
        resp = await h.client.post(f"{OAUTH}/register", json=metadata)
        body = await resp.json()
        assert (resp.status, body["error"]) == (400, error), body


async def test_registration_keeps_only_what_it_supports_and_deduplicates(tmp_path: Path) -> None:
    metadata = {
        **WEB_CLIENT,
        "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:token-exchange"],
        "logo_uri": "https://elsewhere.example/logo.png",  # not the client's host: dropped
        "tos_uri": "https://chat.example/tos",
    }
    async with oauth_server(tmp_path) as h:
        first = await (await h.client.post(f"{OAUTH}/register", json=metadata)).json()
        second = await (await h.client.post(f"{OAUTH}/register", json=metadata)).json()
        assert first["client_id"] == second["client_id"]
        assert first["grant_types"] == ["authorization_code", "refresh_token"]
        assert "logo_uri" not in first and first["tos_uri"] == "https://chat.example/tos"
        assert first["token_endpoint_auth_method"] == "none" and "client_secret" not in first
        resp = await h.client.post(f"{OAUTH}/register", data="not json", headers={"Content-Type": "application/json"})
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_client_metadata"


def test_scopes_need_the_api_and_exactly_one_device() -> None:
    grant = parse_scope("openid urn:matrix:client:api:* urn:matrix:client:device:ABC")
    assert (grant.device_id, grant.scope) == ("ABC", "urn:matrix:client:api:* urn:matrix:client:device:ABC")
    both = parse_scope(
        "urn:matrix:client:api:* urn:matrix:client:device:ABC urn:matrix:org.matrix.msc2967.client:device:ABC"
    )
    assert both.device_id == "ABC"
    for bad in (
        "",
        "urn:matrix:client:api:*",
        "urn:matrix:client:device:ABC",
        "urn:matrix:client:api:* urn:matrix:client:device:A urn:matrix:client:device:B",
        "urn:matrix:client:api:* urn:matrix:client:device:bad/id",
        'urn:matrix:client:api:* urn:matrix:client:device:"q"',
    ):
        with pytest.raises(OAuthError) as e:
            parse_scope(bad)
        assert e.value.error == "invalid_scope", bad


def test_next_pages_are_our_own() -> None:
    assert safe_next("/_homeserver/oauth/consent?req=x") == "/_homeserver/oauth/consent?req=x"
    assert safe_next("/_homeserver/account?action=org.matrix.profile").startswith("/_homeserver/account")
    for evil in ("https://evil.example/", "//evil.example/_homeserver/oauth/x", "/\\evil.example", "/elsewhere", None):
        assert safe_next(evil) == "/_homeserver/account", evil


async def test_unknown_clients_and_unregistered_redirects_get_a_page_not_a_redirect(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        client_id = await register_client(h)
        _, challenge = pkce()
        status, page, location = await get(h, f"{OAUTH}/authorize", **authorize_query("oc_nope", challenge))
        assert (status, location) == (400, None) and "not registered" in page
        query = authorize_query(client_id, challenge, redirect_uri="https://evil.example/steal")
        status, page, location = await get(h, f"{OAUTH}/authorize", **query)
        assert (status, location) == (400, None) and "did not register" in page


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"scope": "urn:matrix:client:api:*"}, "invalid_scope"),
        ({"scope": "urn:matrix:client:api:* urn:matrix:client:device:A urn:matrix:client:device:B"}, "invalid_scope"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"prompt": "none"}, "consent_required"),
    ],
)
async def test_other_request_errors_go_back_to_the_client_with_its_state(
    tmp_path: Path, change: dict[str, str], error: str
) -> None:
    async with oauth_server(tmp_path) as h:
        client_id = await register_client(h)
        _, challenge = pkce()
        status, _, location = await get(h, f"{OAUTH}/authorize", **{**authorize_query(client_id, challenge), **change})
        assert status == 303 and location is not None and location.startswith("https://chat.example/callback#")
        params = response_params(location)
        assert params["error"] == error and params["state"] == "st4te"


async def code_for(h: Any, client_id: str) -> tuple[str, str]:
    verifier, challenge = pkce()
    location = await sign_in_and_consent(h, authorize_query(client_id, challenge), "alice", PASSWORD)
    return response_params(location)["code"], verifier


def exchange(client_id: str, code: str, verifier: str | None) -> dict[str, str]:
    fields = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": "https://chat.example/callback",
        "client_id": client_id,
    }
    if verifier is not None:
        fields["code_verifier"] = verifier
    return fields


async def test_wrong_or_missing_verifier_and_other_clients_get_invalid_grant(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        other = await register_client(h, {**WEB_CLIENT, "client_name": "Other"})
        code, verifier = await code_for(h, client_id)
        for fields in (
            exchange(client_id, code, None),
            exchange(client_id, code, "x" * 43),
            exchange(client_id, code, verifier + "!"),
            exchange(other, code, verifier),
            {**exchange(client_id, code, verifier), "redirect_uri": "https://chat.example/other"},
        ):
            status, body = await token_request(h, fields)
            assert (status, body["error"]) == (400, "invalid_grant"), fields
        assert h.hs.accounts.device("@alice:hs.test", "DEVICEONE") is None  # nothing half-made
        status, body = await token_request(h, exchange(client_id, code, verifier))
        assert status == 200, body
        status, body = await token_request(h, {**exchange(client_id, code, verifier), "client_id": "oc_nope"})
        assert (status, body["error"]) == (401, "invalid_client")
        status, body = await token_request(h, {"grant_type": "password", "client_id": client_id})
        assert (status, body["error"]) == (400, "unsupported_grant_type")
        code_only = await register_client(h, {**WEB_CLIENT, "grant_types": ["authorization_code", "refresh_token"]})
        status, body = await token_request(
            h, {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": code_only}
        )
        assert (status, body["error"]) == (400, "unauthorized_client")


async def test_a_code_used_twice_revokes_what_it_gave(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        code, verifier = await code_for(h, client_id)
        status, tokens = await token_request(h, exchange(client_id, code, verifier))
        assert status == 200
        status, body = await token_request(h, exchange(client_id, code, verifier))
        assert (status, body["error"]) == (400, "invalid_grant")
        bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
        status, _ = await h.request("GET", "account/whoami", headers=bearer)
        assert status == 401


async def test_expired_codes_are_refused(tmp_path: Path) -> None:
    clock = Clock()
    async with oauth_server(tmp_path, clock) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        code, verifier = await code_for(h, client_id)
        clock.now += 301
        status, body = await token_request(h, exchange(client_id, code, verifier))
        assert (status, body["error"]) == (400, "invalid_grant")


async def test_forms_without_the_csrf_token_do_nothing(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        _, challenge = pkce()
        status, page, _ = await get(h, f"{OAUTH}/authorize", **authorize_query(client_id, challenge))
        fields = {"next": hidden(page, "next"), "username": "alice", "password": PASSWORD}
        for csrf in ("", "forged"):
            status, page2, location = await post_form(h, f"{OAUTH}/login", {**fields, "csrf": csrf})
            assert (status, location) == (400, None) and "expired" in page2
        status, _, location = await post_form(h, f"{OAUTH}/login", {**fields, "csrf": csrf_of(page)})
        assert status == 303 and location is not None
        status, page, _ = await get(h, location)
        consent = {"req": hidden(page, "req"), "decision": "allow", "csrf": "forged"}
        status, _, location = await post_form(h, f"{OAUTH}/consent", consent)
        assert (status, location) == (400, None)


async def test_wrong_password_and_denied_consent(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        _, challenge = pkce()
        status, page, _ = await get(h, f"{OAUTH}/authorize", **authorize_query(client_id, challenge))
        fields = {"csrf": csrf_of(page), "next": hidden(page, "next"), "username": "alice", "password": "wrong"}
        status, page, location = await post_form(h, f"{OAUTH}/login", fields)
        assert (status, location) == (403, None) and "Wrong username or password" in page
        location = await sign_in_and_consent(
            h, authorize_query(client_id, challenge), "alice", PASSWORD, decision="deny"
        )
        assert response_params(location) == {
            "error": "access_denied",
            "error_description": "The user declined the request.",
            "state": "st4te",
        }


async def test_bad_token_requests(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        client_id = await register_client(h)
        resp = await h.client.post(f"{OAUTH}/token", json={"grant_type": "refresh_token"})
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
        status, body = await token_request(h, {"grant_type": "refresh_token", "client_id": client_id})
        assert (status, body["error"]) == (400, "invalid_request")
        status, body = await token_request(h, {"grant_type": "authorization_code", "client_id": client_id, "code": "x"})
        assert (status, body["error"]) == (400, "invalid_grant")
        resp = await h.client.post(f"{OAUTH}/token", data=urlencode({"grant_type": "x"}), headers=FORM)
        assert resp.status == 401 and resp.headers["Cache-Control"] == "no-store"


async def test_oauth_endpoints_are_rate_limited(tmp_path: Path) -> None:
    limits = {"rate_limits": {"oauth": {"per_second": 0.01, "burst": 3}}}
    async with oauth_server(tmp_path, **limits) as h:
        statuses = []
        for _ in range(5):
            resp = await h.client.post(f"{OAUTH}/register", json=WEB_CLIENT)
            statuses.append(resp.status)
        assert statuses == [201, 201, 201, 429, 429]


async def test_consent_page_lets_the_form_answer_redirect_to_the_client_only(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        await h.user("alice", password=PASSWORD)
        client_id = await register_client(h)
        _, challenge = pkce()
        _, page, _ = await get(h, f"{OAUTH}/authorize", **authorize_query(client_id, challenge))
        fields = {"csrf": csrf_of(page), "next": hidden(page, "next"), "username": "alice", "password": PASSWORD}
        _, _, location = await post_form(h, f"{OAUTH}/login", fields)
        assert location is not None
        resp = await h.client.get(location)
        # browsers apply form-action to the redirect answering the consent form
        assert "form-action 'self' https://chat.example;" in resp.headers["Content-Security-Policy"]
        login = await h.client.get(f"{OAUTH}/login")
        assert "form-action 'self';" in login.headers["Content-Security-Policy"]


async def test_token_endpoint_refuses_repeated_parameters(tmp_path: Path) -> None:
    async with oauth_server(tmp_path) as h:
        client_id = await register_client(h)
        body = f"grant_type=refresh_token&client_id={client_id}&refresh_token=a&refresh_token=b"
        resp = await h.client.post(f"{OAUTH}/token", data=body, headers=FORM)
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_request"
