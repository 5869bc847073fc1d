"""`python -m homeserver invite create|list|revoke` as the admin sees it: the link on a line of its
own, then a terminal QR code; listing and revoking; one-line errors for bad durations, unknown rooms,
and a store held by the running server."""

from __future__ import annotations

import json
from pathlib import Path

from storage.database import Database

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
    assert_one_line_failure(result, "the server is running", "admin API")
