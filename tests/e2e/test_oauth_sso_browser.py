"""Signing in to an OAuth 2.0 client through the authorize page with an upstream OpenID provider
(npm `oidc-provider` on loopback) in Chromium (issue 14): the provider's button on our sign-in page,
the provider's pages, our consent page naming the client, then the code exchanged for an access
token that works on the client-server API."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.e2e.test_invite_page import CHROMIUM, E2E, _node
from tests.e2e.test_sso_browser import provider_and_server  # noqa: F401 - the fixture
from tests.interop.server import RunningServer, http_json

LOOPBACK = "http://127.0.0.1/callback"


def test_oauth_sign_in_with_the_upstream_provider_gives_a_working_token(
    provider_and_server: tuple[str, RunningServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    _, server = provider_and_server
    node = _node()
    meta = http_json("GET", f"{server.base_url}/_matrix/client/v1/auth_metadata")
    client = {
        "client_name": "Loopback App",
        "client_uri": "https://app.example/",
        "redirect_uris": [LOOPBACK],
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }
    client_id = http_json("POST", meta["registration_endpoint"], client)["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://127.0.0.1:9/callback"  # any port on loopback (spec); nothing listens on 9
    query = {
        "response_type": "code",
        "response_mode": "query",
        "client_id": client_id,
        "redirect_uri": redirect,
        "scope": "urn:matrix:client:api:* urn:matrix:client:device:SSODEVICE",
        "state": "s1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    artifacts = Path(os.environ.get("E2E_ARTIFACTS", E2E / "artifacts")) / "oauth-sso"
    artifacts.mkdir(parents=True, exist_ok=True)
    scenario = {
        "chromium": CHROMIUM,
        "artifacts": str(artifacts),
        "authorizeUrl": f"{meta['authorization_endpoint']}?{urlencode(query)}",
        "providerName": "Test OP",
        "subject": "dana",
        "redirectPrefix": redirect,
    }
    path = tmp_path / "oauth-sso.json"
    path.write_text(json.dumps(scenario))
    proc = subprocess.run([node, str(E2E / "oauth_sso.mjs"), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{proc.stderr}\n--- server log ---\n{server.log_tail(30)}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["signIn"]["h1"] == "Sign in to localhost" and "Test OP" in out["signIn"]["buttons"]
    assert out["consent"]["h1"] == "Allow Loopback App to use your account?"
    assert "@dana:localhost" in out["consent"]["text"]
    params = {k: v[0] for k, v in parse_qs(urlsplit(out["redirect"]).query).items()}
    assert params["state"] == "s1"
    form = urlencode(
        {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": redirect,
            "client_id": client_id,
            "code_verifier": verifier,
        }
    ).encode()
    request = urllib.request.Request(
        meta["token_endpoint"], data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        tokens = json.loads(resp.read())
    me = http_json("GET", f"{server.base_url}/_matrix/client/v3/account/whoami", token=tokens["access_token"])
    assert me == {"user_id": "@dana:localhost", "device_id": "SSODEVICE", "is_guest": False}
