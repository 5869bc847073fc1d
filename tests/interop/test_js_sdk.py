"""matrix-js-sdk (the SDK under Element) against a real server process.

Each test runs one scenario of `js/scenario.mjs` in Node and asserts on the JSON it prints: what the
SDK's clients received. `scripts/setup-system` installs Node (if missing) and the pinned SDK.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .conftest import CREATE_ROOM, JOIN, LOGIN, MESSAGES, REGISTER, SEND, SYNC, require
from .server import RunningServer

JS_DIR = Path(__file__).resolve().parent / "js"
SCENARIO = JS_DIR / "scenario.mjs"
SCENARIO_TIMEOUT_S = 120

# What `MatrixClient.startClient` needs before its first sync completes.
START_CLIENT = (
    SYNC,
    "GET /_matrix/client/v3/pushrules/",
    "POST /_matrix/client/v3/user/{userId}/filter",
)
WHOAMI = "GET /_matrix/client/v3/account/whoami"
LOGIN_FLOWS = "GET /_matrix/client/v3/login"


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run scripts/setup-system (the test command does)")
    if not (JS_DIR / "node_modules" / "matrix-js-sdk" / "package.json").exists():
        pytest.fail("matrix-js-sdk is not installed: scripts/setup-system runs npm ci in tests/interop/js")
    return node


def run_scenario(server: RunningServer, name: str, script: Path = SCENARIO) -> dict[str, Any]:
    """Run one scenario of a script in `js/`; its result JSON, or a failure showing the SDK's and
    the server's logs."""
    node = _node()
    proc = subprocess.run(
        [node, str(script), server.base_url, name],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT_S,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT@@ ")]
    result: dict[str, Any] = json.loads(lines[-1].split(" ", 1)[1]) if lines else {"error": "no result line"}
    if proc.returncode != 0 or "error" in result:
        stderr = "\n".join(proc.stderr.splitlines()[-30:])
        pytest.fail(
            f"js-sdk scenario {name!r} failed (exit {proc.returncode}): {result.get('error')}\n"
            f"errcode={result.get('errcode')} http_status={result.get('http_status')}\n"
            f"--- node stderr ---\n{stderr}\n--- {server.kind} log ---\n{server.log_tail(20)}"
        )
    return result


def test_register_login_whoami(server: RunningServer) -> None:
    require(server, REGISTER, LOGIN, LOGIN_FLOWS, WHOAMI)
    r = run_scenario(server, "login")
    user_id = r["registered_user_id"]
    assert user_id.startswith("@alice-") and user_id.endswith(f":{server.server_name}")
    assert ["m.login.dummy"] in r["register_flows"]
    assert "m.login.password" in r["login_flows"]
    assert r["login"]["user_id"] == user_id and r["login"]["has_token"] and r["login"]["device_id"]
    assert r["whoami"]["user_id"] == user_id
    assert r["whoami"]["device_id"] == r["login"]["device_id"]
    assert "v1.1" in r["versions"]


def test_create_room_send_receive_and_paginate(server: RunningServer) -> None:
    require(server, REGISTER, LOGIN, CREATE_ROOM, JOIN, SEND, MESSAGES, *START_CLIENT)
    r = run_scenario(server, "chat")
    received = r["received"]
    assert received["event_id"] == r["sent_event_id"]
    assert received["type"] == "m.room.message" and received["body"].startswith("hello from js-sdk")
    assert received["sender"].startswith("@alice-")
    assert r["room_name"] == "js interop"
    assert len(r["members"]) == 2
    # Paging back 10 at a time through /messages gives every message, newest first.
    expected = [f"history {i}" for i in range(23, -1, -1)] + [received["body"]]
    assert r["history"] == expected
    assert r["pages"][0] == 10


def test_account_data(server: RunningServer) -> None:
    require(
        server,
        REGISTER,
        LOGIN,
        CREATE_ROOM,
        *START_CLIENT,
        "PUT /_matrix/client/v3/user/{userId}/account_data/{type}",
        "GET /_matrix/client/v3/user/{userId}/account_data/{type}",
        "PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}",
        "GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}",
    )
    r = run_scenario(server, "account_data")
    assert r["from_sync"] == r["sent"]
    assert r["from_server"] == r["sent"]
    assert r["room_account_data"] == {"pinned": True}


def test_sync_long_poll_wakes_up(server: RunningServer) -> None:
    require(server, REGISTER, LOGIN, CREATE_ROOM, JOIN, SEND, *START_CLIENT)
    r = run_scenario(server, "longpoll")
    # The client's /sync waits up to 30 s; an event must end the wait at once, not at the timeout.
    assert len(r["latencies_ms"]) == 3
    assert max(r["latencies_ms"]) < 3000, r


def test_profile_and_room_state(server: RunningServer) -> None:
    require(
        server,
        REGISTER,
        LOGIN,
        CREATE_ROOM,
        JOIN,
        *START_CLIENT,
        "PUT /_matrix/client/v3/profile/{userId}/{keyName}",
        "GET /_matrix/client/v3/profile/{userId}",
        "PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
        "GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
        "GET /_matrix/client/v3/rooms/{roomId}/joined_members",
    )
    r = run_scenario(server, "profile_state")
    assert r["profile"]["displayname"] == "Alice Interop"
    # Written as `state/m.room.topic/` (js-sdk's trailing slash for an empty state key).
    assert r["topic_in_room_state"] == "set by js-sdk"
    assert r["topic_from_server"] == "set by js-sdk"
    assert r["alice_name_in_room"] == "Alice Interop"
    assert len(r["joined_members"]) == 2


def test_room_and_user_directory(server: RunningServer) -> None:
    require(
        server,
        REGISTER,
        LOGIN,
        CREATE_ROOM,
        JOIN,
        "GET /_matrix/client/v3/directory/room/{roomAlias}",
        "GET /_matrix/client/v3/publicRooms",
        "POST /_matrix/client/v3/user_directory/search",
        "GET /_matrix/client/v3/directory/list/room/{roomId}",
    )
    r = run_scenario(server, "directory")
    assert r["resolved"]["room_id"] == r["room_id"]
    assert server.server_name in r["resolved"]["servers"]
    lobby = [room for room in r["public_rooms"] if room["room_id"] == r["room_id"]]
    assert lobby == [
        {
            "room_id": r["room_id"],
            "name": "Public lobby",
            "topic": "all welcome",
            "canonical_alias": r["alias"],
            "num_joined_members": 1,
        }
    ]
    assert r["joined_room_id"] == r["room_id"]
    assert {"user_id": r["alice"], "display_name": "Directory Alice"} in r["people"]
    assert r["visibility"] == "public"


def test_media_and_relations(server: RunningServer) -> None:
    require(
        server,
        REGISTER,
        LOGIN,
        CREATE_ROOM,
        JOIN,
        SEND,
        "POST /_matrix/media/v3/upload",
        "GET /_matrix/client/v1/media/download/{serverName}/{mediaId}",
        "GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}",
        "GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}",
    )
    r = run_scenario(server, "media_relations")
    assert r["content_uri"].startswith(f"mxc://{server.server_name}/")
    assert "/_matrix/client/v1/media/download/" in r["download_url"]
    assert r["download_status"] == 200 and r["same_bytes"]
    assert r["download_type"].startswith("text/plain")
    assert r["by_rel_type"] == [r["reaction_event_id"]]
    assert len(r["relations"]) == 1
    assert r["relations"][0]["event_id"] == r["reaction_event_id"] and r["relations"][0]["key"] == "🎉"
