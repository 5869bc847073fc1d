"""Signing in to an OAuth 2.0 client through the authorize page with Mastodon, in Chromium (the issue
"Element X and the new login"): an app registered by dynamic client registration asks as Element X
does (PKCE S256, the unstable MSC2967 scopes, `prompt=consent`, a private-use redirect URI); our
sign-in page offers the Mastodon server, the Mastodon double's authorize page signs in, our consent
page names the app, and the code it hands back is exchanged for an access token that
`/account/whoami` answers for the user mapped from the Mastodon account: made on the first sign-in,
the same one on the second. A bot, refused by the rules, ends on our page saying why, which leads
back to the sign-in page (an app's browser tab may have no back button): no code, no account.
The server runs "Who may join"'s typical setup: password sign-up needs an invite, the Mastodon
server's users get in."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.e2e.test_invite_page import CHROMIUM, E2E, _node
from tests.e2e.test_mastodon_browser import control, mastodon_and_server  # noqa: F401 - the fixture
from tests.interop.server import RunningServer, http_json

REDIRECT = "io.element.elementx:/callback"  # a private-use scheme: the client URI's host reversed


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    return verifier, base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def available(server: RunningServer, localpart: str) -> bool:
    try:
        answer = http_json("GET", f"{server.base_url}/_matrix/client/v3/register/available?username={localpart}")
    except urllib.error.HTTPError as e:
        assert e.code == 400 and json.loads(e.read())["errcode"] == "M_USER_IN_USE"
        return False
    return bool(answer["available"])


def exchange(meta: dict[str, Any], client_id: str, code: str, verifier: str) -> dict[str, Any]:
    form = urlencode(
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": client_id,
            "code_verifier": verifier,
        }
    ).encode()
    request = urllib.request.Request(
        meta["token_endpoint"], data=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        tokens: dict[str, Any] = json.loads(resp.read())
    return tokens


def test_oauth_sign_in_with_mastodon_gives_a_working_token(
    mastodon_and_server: tuple[str, RunningServer],  # noqa: F811
    tmp_path: Path,
) -> None:
    mastodon, server = mastodon_and_server
    control(mastodon, "account?username=robot&bot=true")
    meta = http_json("GET", f"{server.base_url}/_matrix/client/v1/auth_metadata")
    client = {
        "client_name": "Element X",
        "client_uri": "https://element.io",
        "redirect_uris": [REDIRECT],
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
    }
    client_id = http_json("POST", meta["registration_endpoint"], client)["client_id"]
    assert available(server, "alice") and available(server, "robot")

    flows, verifiers = [], []
    for i, username in enumerate(["alice", "alice", "robot"]):
        verifier, challenge = pkce()
        verifiers.append(verifier)
        query = {
            "response_type": "code",
            "response_mode": "query",
            "client_id": client_id,
            "redirect_uri": REDIRECT,
            "scope": f"urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:EX{i}",
            "state": f"s{i}",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "prompt": "consent",
        }
        flows.append({"username": username, "authorizeUrl": f"{meta['authorization_endpoint']}?{urlencode(query)}"})
    artifacts = Path(os.environ.get("E2E_ARTIFACTS", E2E / "artifacts")) / "oauth-mastodon"
    artifacts.mkdir(parents=True, exist_ok=True)
    scenario = {
        "chromium": CHROMIUM,
        "artifacts": str(artifacts),
        "providerName": "Mastodon",
        "redirectPrefix": REDIRECT,
        "flows": flows,
    }
    path = tmp_path / "oauth-mastodon.json"
    path.write_text(json.dumps(scenario))
    proc = subprocess.run(
        [_node(), str(E2E / "oauth_mastodon.mjs"), str(path)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, f"{proc.stderr}\n--- server log ---\n{server.log_tail(30)}"
    results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])

    devices = []
    for i, (result, verifier) in enumerate(zip(results[:2], verifiers, strict=False)):
        assert result["signIn"]["h1"] == "Sign in to localhost" and "Mastodon" in result["signIn"]["buttons"]
        assert result["mastodon"]["url"].startswith(f"{mastodon}/oauth/authorize?")
        assert result["consent"]["h1"] == "Allow Element X to use your account?"
        assert "@alice:localhost" in result["consent"]["text"]
        assert result["redirect"].startswith(f"{REDIRECT}?")
        params = {k: v[0] for k, v in parse_qs(urlsplit(result["redirect"]).query).items()}
        assert params["state"] == f"s{i}" and "error" not in params
        tokens = exchange(meta, client_id, params["code"], verifier)
        assert tokens["token_type"].lower() == "bearer" and tokens["refresh_token"]
        me = http_json("GET", f"{server.base_url}/_matrix/client/v3/account/whoami", token=tokens["access_token"])
        assert me["user_id"] == "@alice:localhost" and not me["is_guest"]
        devices.append(me["device_id"])
    assert devices == ["EX0", "EX1"]  # the same account, a device per sign-in

    bot = results[2]
    assert "consent" not in bot and "redirect" not in bot
    assert bot["refused"]["h1"] == "Sign-in did not work"
    assert "bots cannot sign in" in bot["refused"]["text"]
    assert bot["back"]["h1"] == "Sign in to localhost" and "to continue to Element X" in bot["back"]["text"]
    assert available(server, "robot")  # nothing was created
