"""The invite page in a real browser (issue 13): an admin makes an invite with the CLI, a new person
opens the link at a phone-sized and a desktop-sized window (JavaScript off), signs up on the page,
then logs in with matrix-nio and finds themselves in the invite's room; the link once used up and an
expired one show their own pages. Screenshots of every page go to tests/e2e/artifacts/ (or
$E2E_ARTIFACTS).

Chromium is Debian's (/usr/bin/chromium) driven by playwright-core; scripts/setup-system installs
both (the test command runs it). Never a browser download.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nio import AsyncClient, AsyncClientConfig, JoinedRoomsResponse, LoginResponse

from tests.interop.server import REPO_ROOT, RunningServer, free_port, http_json, start_homeserver

E2E = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (E2E / "node_modules" / "playwright-core" / "package.json").is_file():
        pytest.fail("node or playwright-core is missing: run scripts/setup-system (the test command does)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup-system (it installs Debian's chromium)")
    return node


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    port = free_port()
    srv = start_homeserver(tmp_path / "hs", port=port, registration="token", public_baseurl=f"http://127.0.0.1:{port}")
    try:
        yield srv
    finally:
        srv.stop(timeout=5)


def _admin_token(server: RunningServer) -> str:
    nonce = http_json("GET", f"{server.base_url}/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(server.shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), b"admin", b"admin password", b"admin"]))
    body = {"nonce": nonce, "username": "admin", "password": "admin password", "admin": True, "mac": mac.hexdigest()}
    return str(http_json("POST", f"{server.base_url}/_synapse/admin/v1/register", body)["access_token"])


def _cli(server: RunningServer, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "homeserver", "invite", *args],
        cwd=REPO_ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _link(stdout: str, base_url: str) -> str:
    links = [line for line in stdout.splitlines() if line.startswith(f"{base_url}/invite/")]
    assert len(links) == 1, stdout  # the link is on a line of its own
    return links[0]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as e:
        return e.code


async def test_sign_up_on_the_invite_page_in_chromium(server: RunningServer, tmp_path: Path) -> None:
    node = _node()
    admin = _admin_token(server)
    room = http_json(
        "POST",
        f"{server.base_url}/_matrix/client/v3/createRoom",
        {"preset": "public_chat", "room_alias_name": "friends", "name": "Friends"},
        token=admin,
    )["room_id"]

    # the admin makes the invites with the CLI, the server stopped (the CLI opens the store)
    server.stop()
    out = _cli(server, "create", "--uses", "2", "--room", "#friends:localhost", "--note", "Welcome to our server!")
    link = _link(out, server.base_url)
    assert "█" in out or "▀" in out  # the terminal QR code
    expiring = _link(_cli(server, "create", "--expires", "1s", "--no-qr"), server.base_url)
    server.restart()
    deadline = time.monotonic() + 15
    while _status(expiring) != 410:
        assert time.monotonic() < deadline, "the 1-second invite never expired"
        time.sleep(0.1)

    artifacts = Path(os.environ.get("E2E_ARTIFACTS", E2E / "artifacts")) / "invite-page"
    artifacts.mkdir(parents=True, exist_ok=True)
    scenario = {
        "chromium": CHROMIUM,
        "artifacts": str(artifacts),
        "signups": [
            {"device": "phone", "link": link, "username": "phoebe", "password": PASSWORD},
            {"device": "desktop", "link": link, "username": "desmond", "password": PASSWORD},
        ],
        "visits": [
            {"device": "phone", "name": "used-up", "link": link},
            {"device": "desktop", "name": "expired", "link": expiring},
            {"device": "phone", "name": "unknown", "link": f"{server.base_url}/invite/nonsense"},
        ],
    }
    scenario_path = tmp_path / "scenario.json"
    scenario_path.write_text(json.dumps(scenario))
    proc = subprocess.run(
        [node, str(E2E / "invite.mjs"), str(scenario_path)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, f"{proc.stderr}\n--- server log ---\n{server.log_tail(30)}"
    seen: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])

    phone, desktop = seen["signups"]
    for signup, platform, user in ((phone, "android", "phoebe"), (desktop, "desktop", "desmond")):
        before, after = signup["before"], signup["after"]
        assert before["status"] == 200 and before["platform"] == platform and before["hasQr"] == 1
        assert before["unlabelled"] == [] and before["lang"] == "en"
        assert before["overflow"] <= 0, f"{signup['device']}: the page is wider than the window"
        assert before["h1"] == "You are invited to chat on localhost."
        assert after["status"] == 200 and after["overflow"] <= 0
        assert after["homeserverUrl"] == server.base_url
        assert f"sign in to localhost as @{user}:localhost" in after["text"]
    statuses = {s["name"]: (s["http"], s["status"]) for s in seen["statuses"]}
    assert statuses == {"used-up": (410, "used"), "expired": (410, "expired"), "unknown": (404, "unknown")}
    assert all(s["overflow"] <= 0 for s in seen["statuses"])
    for name in ("phone-1-invite", "phone-3-signed-up", "desktop-1-invite", "desktop-3-signed-up", "phone-used-up"):
        assert (artifacts / f"{name}.png").stat().st_size > 1000

    # the new person logs in from a real client and is in the invite's room
    client = AsyncClient(server.base_url, "phoebe", config=AsyncClientConfig(encryption_enabled=False))
    try:
        login = await client.login(PASSWORD)
        assert isinstance(login, LoginResponse), login
        joined = await client.joined_rooms()
        assert isinstance(joined, JoinedRoomsResponse) and room in joined.rooms
    finally:
        await client.close()
