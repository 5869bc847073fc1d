"""`python -m homeserver invite create|list|revoke` as the admin sees it: the link on a line of its
own, then a terminal QR code; listing and revoking; one-line errors for bad durations, unknown rooms,
and a store held by the running server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from storage.database import Database
from tests.e2e.test_invite_page import _admin_token as admin_token
from tests.interop.server import REPO_ROOT, free_port, start_homeserver

from .test_cli import assert_one_line_failure, homeserver

BASE = "https://chat.example.org"


def invite(where: Path, *args: str) -> tuple[int, str, str]:
    result = homeserver(
        "invite", *args, cwd=where, data_dir=where / "data", public_baseurl=BASE, server_name="example.org"
    )
    return result.returncode, result.stdout, result.stderr


def test_create_list_revoke(tmp_path: Path) -> None:
    status, out, err = invite(tmp_path, "create", "--uses", "3", "--expires", "12h", "--note", "for the club")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"{BASE}/invite/") and lines[0] == lines[0].strip()
    token = lines[0].rsplit("/", 1)[1]
    assert any("▄" in line or "█" in line for line in lines[1:])  # the QR code
    assert f"token {token}, uses 3, expires " in out

    status, out, _ = invite(tmp_path, "create", "--uses", "unlimited", "--expires", "never", "--admin", "--json")
    assert status == 0
    made = json.loads(out)
    assert made["uses_allowed"] is None and made["expiry_time"] is None and made["admin"] is True
    assert made["link"] == f"{BASE}/invite/{made['token']}"

    status, out, _ = invite(tmp_path, "list", "--json")
    listed = {row["token"]: row for row in json.loads(out)}
    assert set(listed) == {token, made["token"]} and listed[token]["note"] == "for the club"
    assert listed[token]["uses_allowed"] == 3 and listed[token]["status"] == "valid"

    status, out, _ = invite(tmp_path, "revoke", token)
    assert status == 0 and out.strip() == f"revoked {token}"
    status, out, _ = invite(tmp_path, "list")
    assert token not in out and made["token"] in out
    status, out, _ = invite(tmp_path, "list", "--all")
    assert f"{token}" in out and "revoked" in out


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    result = homeserver("invite", "create", "--room", "#nowhere:example.org", cwd=tmp_path, data_dir=tmp_path / "d")
    assert_one_line_failure(result, "no such room: #nowhere:example.org")
    result = homeserver("invite", "revoke", "missing", cwd=tmp_path, data_dir=tmp_path / "d")
    assert_one_line_failure(result, "no such")
    for args in (["--expires", "soon"], ["--expires", "-1d"], ["--uses", "0"]):
        result = homeserver("invite", "create", *args, cwd=tmp_path, data_dir=tmp_path / "d")
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr


def test_a_running_server_holds_the_store(tmp_path: Path) -> None:
    with Database(tmp_path / "data" / "db"):  # as a running server does
        result = homeserver("invite", "create", cwd=tmp_path, data_dir=tmp_path / "data")
    assert_one_line_failure(result, "the server is running", "access token")


def test_through_the_running_server_with_an_admin_token(tmp_path: Path) -> None:
    port = free_port()
    server = start_homeserver(tmp_path / "hs", port=port, public_baseurl=BASE)
    try:
        admin = admin_token(server)

        def run(*args: str, token: str | None = admin) -> subprocess.CompletedProcess[str]:
            env = dict(server.env or {})
            if token is not None:
                env["HOMESERVER_ACCESS_TOKEN"] = token
            return subprocess.run(
                [sys.executable, "-m", "homeserver", "invite", *args],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )

        made = run("create", "--uses", "2", "--expires", "never", "--note", "live")
        assert made.returncode == 0, made.stderr
        link = made.stdout.splitlines()[0]
        assert link.startswith(f"{BASE}/invite/")
        token = link.rsplit("/", 1)[1]
        listed = {r["token"]: r for r in json.loads(run("list", "--json").stdout)}
        assert (listed[token]["note"], listed[token]["expiry_time"], listed[token]["uses_allowed"]) == ("live", None, 2)
        assert listed[token]["creator"] == "@admin:localhost"
        assert run("revoke", token).stdout.strip() == f"revoked {token}"
        assert token not in {r["token"] for r in json.loads(run("list", "--json").stdout)}
        assert token in run("list", "--all").stdout
        # a token that is not an admin's is refused by the server, in one line
        assert_one_line_failure(run("create", token="not-a-token"), "the server answered 401")
    finally:
        server.stop(timeout=5)
