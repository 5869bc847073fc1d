"""matrix-js-sdk's own OAuth 2.0 client (issue 14) against a real server process, the pages driven in
Chromium by playwright-core: dynamic registration, sign-up with an invite (`prompt=create`), the code
exchange, a /sync on the OAuth token, refresh with rotation, a second login through the sign-in page,
the device authorization grant, and revocation."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_invite_page import CHROMIUM, _admin_token
from tests.e2e.test_invite_page import _node as _browser_node

from .server import RunningServer, free_port, http_json, start_homeserver
from .test_js_sdk import JS_DIR
from .test_js_sdk import _node as _sdk_node

PASSWORD = "correct horse battery"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    port = free_port()
    srv = start_homeserver(tmp_path / "hs", port=port, registration="token", public_baseurl=f"http://127.0.0.1:{port}")
    try:
        yield srv
    finally:
        srv.stop(timeout=5)


def run_scenario(node: str, scenario: dict[str, Any], tmp_path: Path, server: RunningServer) -> dict[str, Any]:
    path = tmp_path / "oauth-scenario.json"
    path.write_text(json.dumps(scenario))
    proc = subprocess.run(
        [node, str(JS_DIR / "oauth.mjs"), str(path)], cwd=JS_DIR, capture_output=True, text=True, timeout=180
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT@@ ")]
    assert proc.returncode == 0 and lines, f"{proc.stderr[-4000:]}\n--- server log ---\n{server.log_tail(30)}"
    result: dict[str, Any] = json.loads(lines[-1][len("@@RESULT@@ ") :])
    return result


def test_js_sdk_oauth_client_signs_up_logs_in_refreshes_syncs_and_revokes(
    server: RunningServer, tmp_path: Path
) -> None:
    _browser_node()
    node = _sdk_node()
    admin = _admin_token(server)
    invite = http_json(
        "POST", f"{server.base_url}/_synapse/admin/v1/registration_tokens/new", {"uses_allowed": 1}, token=admin
    )["token"]
    artifacts = Path(os.environ.get("E2E_ARTIFACTS", Path(__file__).resolve().parents[1] / "e2e" / "artifacts"))
    (artifacts / "oauth-js").mkdir(parents=True, exist_ok=True)
    scenario = {
        "base": server.base_url,
        "chromium": CHROMIUM,
        "artifacts": str(artifacts / "oauth-js"),
        "invite": invite,
        "password": PASSWORD,
    }
    r = run_scenario(node, scenario, tmp_path, server)
    assert r["metadataValid"] is True and r["cors"] == "*"
    assert r["clientId"].startswith("oc_")
    assert r["signupState"] == "state-1"
    assert r["signupWhoami"] == {
        "status": 200,
        "body": {"user_id": "@jsuser:localhost", "device_id": "JSDEVICE1", "is_guest": False},
    }
    assert r["tokenType"] == "Bearer"
    assert r["scope"] == "urn:matrix:client:api:* urn:matrix:client:device:JSDEVICE1"
    assert r["syncedMessage"] is True
    assert (r["refreshedWhoami"], r["oldAfterRefresh"], r["rotated"]) == (200, 401, True)
    assert r["loginWhoami"]["body"]["device_id"] == "JSDEVICE2"
    assert r["devicePage"] == "Your device is connected"
    assert r["deviceWhoami"]["body"] == {"user_id": "@jsuser:localhost", "device_id": "JSDEVICE3", "is_guest": False}
    assert (r["afterRevoke"], r["othersAfterRevoke"]) == (401, 200)
    # the invite was used by the sign-up
    token = http_json("GET", f"{server.base_url}/_synapse/admin/v1/registration_tokens/{invite}", token=admin)
    assert token["completed"] == 1
