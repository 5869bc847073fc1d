"""Single sign-on through a real OpenID provider (npm `oidc-provider`, certified) on loopback, in
Chromium: the provider's login and consent pages, our confirmation page, the login token handed to
the client, and matrix-nio logging in with it; a second login maps to the same account, and so does
a login after the upstream account was renamed (accounts are keyed by the provider's subject). Then
user-interactive auth by single sign-on: the account, which has no password, confirms deleting a
device at the provider through the fallback page opened in a popup."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from nio import AsyncClient, AsyncClientConfig, LoginResponse

from tests.e2e.test_invite_page import CHROMIUM, E2E, _node
from tests.interop.server import RunningServer, free_port, start_homeserver

CLIENT_URL = "https://client.example/logged-in"


@pytest.fixture
def provider_and_server(tmp_path: Path) -> Iterator[tuple[str, RunningServer]]:
    node = _node()
    op_port, hs_port = free_port(), free_port()
    base = f"http://127.0.0.1:{hs_port}"
    callback = f"{base}/_homeserver/sso/callback/op"
    op = subprocess.Popen(
        [node, str(E2E / "oidc_provider.mjs"), str(op_port), callback],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert op.stdout is not None and op.stdout.readline().strip() == "ready"
        server = start_homeserver(tmp_path / "hs", port=hs_port, public_baseurl=base)
        try:
            assert server.env is not None
            issuer = f"http://127.0.0.1:{op_port}"
            provider = f'id = "op", name = "Test OP", issuer = "{issuer}", client_id = "matrix"'
            server.env["HOMESERVER_SSO__OIDC"] = f'[{{{provider}, client_secret = "s3cret"}}]'

            server.restart()
            yield issuer, server
        finally:
            server.stop(timeout=5)
    finally:
        op.terminate()
        op.wait(10)


def browse(node: str, server: RunningServer, tmp_path: Path, subject: str, name: str) -> dict[str, Any]:
    artifacts = Path(os.environ.get("E2E_ARTIFACTS", E2E / "artifacts")) / f"sso-{name}"
    artifacts.mkdir(parents=True, exist_ok=True)
    scenario = {
        "chromium": CHROMIUM,
        "artifacts": str(artifacts),
        "clientUrl": CLIENT_URL,
        "loginUrl": f"{server.base_url}/_matrix/client/v3/login/sso/redirect/op?redirectUrl={CLIENT_URL}",
        "logins": [{"subject": subject}],
    }
    path = tmp_path / f"sso-{name}.json"
    path.write_text(json.dumps(scenario))
    proc = subprocess.run([node, str(E2E / "sso.mjs"), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{proc.stderr}\n--- server log ---\n{server.log_tail(30)}"
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])[0]
    return result


async def login_with(server: RunningServer, token: str) -> str:
    client = AsyncClient(server.base_url, config=AsyncClientConfig(encryption_enabled=False))
    try:
        resp = await client.login(token=token)
        assert isinstance(resp, LoginResponse), resp
        return str(resp.user_id)
    finally:
        await client.close()


async def test_sso_through_oidc_provider_in_chromium(
    provider_and_server: tuple[str, RunningServer], tmp_path: Path
) -> None:
    issuer, server = provider_and_server
    node = _node()
    first = browse(node, server, tmp_path, "alice", "first")
    assert first["confirm"]["h1"] == "Continue to client.example?"
    assert "@alice:localhost" in first["confirm"]["text"]
    assert await login_with(server, first["loginToken"]) == "@alice:localhost"

    second = browse(node, server, tmp_path, "alice", "second")
    assert await login_with(server, second["loginToken"]) == "@alice:localhost"

    with urllib.request.urlopen(f"{issuer}/rename?sub=alice&to=alicia", timeout=10) as resp:
        assert resp.status == 200
    renamed = browse(node, server, tmp_path, "alice", "renamed")
    assert await login_with(server, renamed["loginToken"]) == "@alice:localhost"

    other = browse(node, server, tmp_path, "bob", "other")
    assert await login_with(server, other["loginToken"]) == "@bob:localhost"


async def login_device(server: RunningServer, token: str) -> tuple[str, str, str]:
    """(user id, device id, access token) of a new login with an SSO login token."""
    client = AsyncClient(server.base_url, config=AsyncClientConfig(encryption_enabled=False))
    try:
        resp = await client.login(token=token)
        assert isinstance(resp, LoginResponse), resp
        return str(resp.user_id), str(resp.device_id), str(resp.access_token)
    finally:
        await client.close()


async def delete_device(server: RunningServer, token: str, device_id: str, auth: Any = None) -> tuple[int, Any]:
    body = {} if auth is None else {"auth": auth}
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as http:
        url = f"{server.base_url}/_matrix/client/v3/devices/{device_id}"
        async with http.delete(url, json=body, headers=headers) as resp:
            return resp.status, await resp.json()


async def test_sso_only_user_confirms_a_device_deletion_with_the_provider_in_chromium(
    provider_and_server: tuple[str, RunningServer], tmp_path: Path
) -> None:
    """spec: UIA "Single Sign-On" and "Fallback": an account made through the provider has no
    password; deleting a device asks for m.login.sso, the client opens the fallback page in a popup,
    the user signs in at the provider again, the page posts "authDone" and the retry succeeds."""
    _, server = provider_and_server
    node = _node()
    user_id, phone, phone_token = await login_device(
        server, browse(node, server, tmp_path, "erin", "uia-1")["loginToken"]
    )
    assert user_id == "@erin:localhost"
    again, laptop, _ = await login_device(server, browse(node, server, tmp_path, "erin", "uia-2")["loginToken"])
    assert again == user_id and laptop != phone

    status, body = await delete_device(server, phone_token, laptop)
    assert status == 401 and body["flows"] == [{"stages": ["m.login.sso"]}], body
    session = body["session"]

    artifacts = Path(os.environ.get("E2E_ARTIFACTS", E2E / "artifacts")) / "sso-uia"
    artifacts.mkdir(parents=True, exist_ok=True)
    scenario = {
        "chromium": CHROMIUM,
        "artifacts": str(artifacts),
        "clientUrl": "https://client.example/app",
        "fallbackUrl": f"{server.base_url}/_matrix/client/v3/auth/m.login.sso/fallback/web?session={session}",
        "continueText": "Continue with Test OP",
        "subject": "erin",
    }
    path = tmp_path / "sso-uia.json"
    path.write_text(json.dumps(scenario))
    proc = subprocess.run([node, str(E2E / "uia_sso.mjs"), str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{proc.stderr}\n--- server log ---\n{server.log_tail(30)}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["confirm"]["h1"] == "Confirm it is you"
    assert "@erin:localhost asks to sign out and remove one of your devices" in result["confirm"]["text"]
    assert result["done"]["url"].startswith(f"{server.base_url}/_homeserver/sso/callback/op?")
    assert result["done"]["h1"] == "Confirmed"
    # the spec's script ran in the popup and reached the client's page
    assert [m["data"] for m in result["messages"]] == ["authDone"]
    assert result["messages"][0]["origin"] == server.base_url

    status, body = await delete_device(server, phone_token, laptop, {"session": session})
    assert status == 200, body
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {phone_token}"}
        async with http.get(f"{server.base_url}/_matrix/client/v3/devices", headers=headers) as resp:
            devices = [d["device_id"] for d in (await resp.json())["devices"]]
    assert devices == [phone]
