"""Log in with Mastodon in Chromium: the client's button (the `m.login.sso` identity provider the
server lists) -> the Mastodon server's authorize page (the documented OAuth flow, served by the
double in tests/e2e/mastodon_double.py, run as its own process) -> our confirmation page -> the
client with a loginToken, which matrix-nio logs in with. A second login is the same account, and so
is a login after the Mastodon account was renamed (accounts are keyed by the Mastodon account id);
a bot is refused with a page saying why, and Deny at Mastodon comes back as a cancelled sign-in.
The server runs the typical setup: password sign-up needs an invite, Mastodon users get in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.e2e.test_invite_page import CHROMIUM, E2E, _node
from tests.e2e.test_sso_browser import login_with
from tests.interop.server import REPO_ROOT, RunningServer, free_port, http_json, start_homeserver

CLIENT_URL = "https://client.example/logged-in"


@pytest.fixture
def mastodon_and_server(tmp_path: Path) -> Iterator[tuple[str, RunningServer]]:
    port, hs_port = free_port(), free_port()
    double = subprocess.Popen(
        [sys.executable, "-m", "tests.e2e.mastodon_double", str(port)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert double.stdout is not None and double.stdout.readline().strip() == "ready"
        base = f"http://127.0.0.1:{hs_port}"
        server = start_homeserver(tmp_path / "hs", port=hs_port, public_baseurl=base, registration="token")
        try:
            assert server.env is not None
            mastodon = f"http://127.0.0.1:{port}"
            server.env["HOMESERVER_SSO__MASTODON"] = f'[{{url = "{mastodon}", id = "masto", name = "Mastodon"}}]'
            server.restart()
            yield mastodon, server
        finally:
            server.stop(timeout=5)
    finally:
        double.terminate()
        double.wait(10)


def mastodon_button(server: RunningServer) -> str:
    """What a client does with the login flows: the redirect URL of the provider named Mastodon."""
    flows = http_json("GET", f"{server.base_url}/_matrix/client/v3/login")
    (sso,) = [f for f in flows["flows"] if f["type"] == "m.login.sso"]
    (idp,) = [p for p in sso["identity_providers"] if p["name"] == "Mastodon"]
    return f"{server.base_url}/_matrix/client/v3/login/sso/redirect/{idp['id']}?redirectUrl={quote(CLIENT_URL)}"


def browse(server: RunningServer, tmp_path: Path, name: str, *logins: dict[str, str]) -> list[dict[str, Any]]:
    artifacts = Path(os.environ.get("E2E_ARTIFACTS", E2E / "artifacts")) / f"mastodon-{name}"
    artifacts.mkdir(parents=True, exist_ok=True)
    scenario = {
        "chromium": CHROMIUM,
        "artifacts": str(artifacts),
        "clientUrl": CLIENT_URL,
        "loginUrl": mastodon_button(server),
        "logins": list(logins),
    }
    path = tmp_path / f"mastodon-{name}.json"
    path.write_text(json.dumps(scenario))
    proc = subprocess.run([_node(), str(E2E / "mastodon.mjs"), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{proc.stderr}\n--- server log ---\n{server.log_tail(30)}"
    results: list[dict[str, Any]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def control(mastodon: str, what: str) -> None:
    with urllib.request.urlopen(f"{mastodon}/_double/{what}", timeout=10) as resp:
        assert resp.status == 200


async def test_log_in_with_mastodon_in_chromium(mastodon_and_server: tuple[str, RunningServer], tmp_path: Path) -> None:
    mastodon, server = mastodon_and_server
    first, second = browse(server, tmp_path, "first", {"username": "alice"}, {"username": "alice"})
    assert first["authorize"]["h1"] == "Authorization required"
    assert first["authorize"]["url"].startswith(f"{mastodon}/oauth/authorize?")
    assert "Matrix homeserver" in first["authorize"]["text"]
    assert first["landed"]["h1"] == "Continue to client.example?"
    assert "@alice:localhost" in first["landed"]["text"]
    assert await login_with(server, first["loginToken"]) == "@alice:localhost"
    assert await login_with(server, second["loginToken"]) == "@alice:localhost"

    control(mastodon, "rename?from=alice&to=alicia")
    (renamed,) = browse(server, tmp_path, "renamed", {"username": "alicia"})
    assert await login_with(server, renamed["loginToken"]) == "@alice:localhost"

    control(mastodon, "account?username=robot&bot=true")
    bot, denied = browse(server, tmp_path, "refused", {"username": "robot"}, {"username": "bob", "decision": "deny"})
    assert bot["loginToken"] is None and "bots cannot sign in" in bot["landed"]["text"]
    assert denied["loginToken"] is None and "cancelled" in denied["landed"]["text"]

    with urllib.request.urlopen(f"{mastodon}/_double/stats", timeout=10) as resp:
        stats = json.load(resp)
    assert stats["registrations"] == 1  # the app, registered on first use, once
    assert all(r.get("code_challenge_method") == "S256" for r in stats["authorize"])
