"""Driving the OAuth 2.0 API as a client and a browser would, in-process: register a client, open the
authorize URL, fill in the pages (CSRF tokens read from them), follow the redirect, use the code."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from aiohttp.test_utils import TestClient, TestServer

from homeserver.server import HomeServer

from .auth_helpers import NO_LIMITS
from .conftest import Harness, make_config

BASE = "https://matrix.hs.test"
OAUTH = "/_homeserver/oauth"
WEB_CLIENT = {
    "client_name": "Web Chat",
    "client_uri": "https://chat.example/",
    "redirect_uris": ["https://chat.example/callback"],
    "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
    "response_types": ["code"],
    "token_endpoint_auth_method": "none",
    "application_type": "web",
}
DEVICE_SCOPE = "urn:matrix:client:device:"
API_SCOPE = "urn:matrix:client:api:*"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def oauth_server(tmp_path: Path, clock: Clock | None = None, **overrides: Any) -> AsyncIterator[Harness]:
    values = {"public_baseurl": BASE, **NO_LIMITS, **overrides}
    hs = HomeServer(make_config(tmp_path, **values), clock=clock or Clock())
    client = TestClient(TestServer(hs.build_app()))
    await client.start_server()
    try:
        yield Harness(hs, client)
    finally:
        await client.close()


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', page)
    assert found is not None, page
    return unescape(found.group(1))


def local(url: str) -> str:
    """A URL of ours as the in-process client requests it (the path and query)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


async def register_client(h: Harness, metadata: dict[str, Any] | None = None) -> str:
    resp = await h.client.post(f"{OAUTH}/register", json=metadata or WEB_CLIENT)
    body = await resp.json()
    assert resp.status == 201, body
    return str(body["client_id"])


def authorize_query(client_id: str, challenge: str, device_id: str = "DEVICEONE", **extra: str) -> dict[str, str]:
    query = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": WEB_CLIENT["redirect_uris"][0],  # type: ignore[index]
        "scope": f"{API_SCOPE} {DEVICE_SCOPE}{device_id}",
        "state": "st4te",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "response_mode": "fragment",
    }
    query.update(extra)
    return query


async def get(h: Harness, path: str, **params: str) -> tuple[int, str, str | None]:
    """(status, body text, Location) without following redirects."""
    resp = await h.client.get(path, params=params or None, allow_redirects=False)
    return resp.status, await resp.text(), resp.headers.get("Location")


async def post_form(h: Harness, path: str, fields: dict[str, str]) -> tuple[int, str, str | None]:
    resp = await h.client.post(path, data=fields, allow_redirects=False)
    return resp.status, await resp.text(), resp.headers.get("Location")


async def sign_in_and_consent(
    h: Harness, query: dict[str, str], username: str, password: str, *, decision: str = "allow"
) -> str:
    """Open the authorize URL, sign in, consent; the redirect back to the client."""
    status, page, location = await get(h, f"{OAUTH}/authorize", **query)
    if status == 303 and location is not None and location.startswith(f"{OAUTH}/consent"):
        status, page, location = await get(h, location)
    else:
        assert status == 200, page
        fields = {"csrf": csrf_of(page), "next": hidden(page, "next"), "username": username, "password": password}
        status, page, location = await post_form(h, f"{OAUTH}/login", fields)
        assert status == 303, page
        assert location is not None
        status, page, location = await get(h, location)
    assert status == 200, page
    fields = {"csrf": csrf_of(page), "req": hidden(page, "req"), "decision": decision}
    status, page, location = await post_form(h, f"{OAUTH}/consent", fields)
    assert status == 303 and location is not None, page
    return location


def response_params(location: str, mode: str = "fragment") -> dict[str, str]:
    parts = urlsplit(location)
    raw = parts.fragment if mode == "fragment" else parts.query
    return {k: v[0] for k, v in parse_qs(raw).items()}


async def token_request(h: Harness, fields: dict[str, str]) -> tuple[int, dict[str, Any]]:
    resp = await h.client.post(f"{OAUTH}/token", data=urlencode(fields), headers=FORM)
    return resp.status, await resp.json()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def login_with_code(
    h: Harness, client_id: str, username: str, password: str, device_id: str = "DEVICEONE"
) -> dict[str, Any]:
    verifier, challenge = pkce()
    location = await sign_in_and_consent(h, authorize_query(client_id, challenge, device_id), username, password)
    params = response_params(location)
    status, body = await token_request(
        h,
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": WEB_CLIENT["redirect_uris"][0],  # type: ignore[index]
            "client_id": client_id,
            "code_verifier": verifier,
        },
    )
    assert status == 200, body
    return body
