"""`inspect user`: an account, its devices and their tokens (masked), and its rooms; secrets never shown."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from homeserver.auth.accounts import Accounts
from homeserver.auth.passwords import Passwords
from homeserver.auth.tokens import Tokens
from storage.accounts import token_hash
from storage.database import Database

ROOT = Path(__file__).resolve().parents[2]


def test_user_shows_devices_with_masked_tokens(tmp_path: Path) -> None:
    with Database(tmp_path / "db") as db:
        tokens = Tokens(db)
        accounts = Accounts(db, "hs.test", Passwords("low"), tokens)

        async def fill() -> tuple[str, str, str]:
            user_id = await accounts.create("alice", "secret password", admin=True)
            session = await accounts.new_session(user_id, display_name="Alice's laptop", refreshable=True)
            assert session.refresh_token is not None
            return session.access_token, session.refresh_token, session.device_id

        access, refresh, device_id = asyncio.run(fill())
        account = db.accounts.account("@alice:hs.test")
        assert account is not None
        password_hash = account["password_hash"]

    cmd = [sys.executable, "-m", "homeserver", "inspect", "--data-dir", str(tmp_path)]
    text = subprocess.run([*cmd, "user", "@alice:hs.test"], cwd=ROOT, capture_output=True, text=True, check=True)
    raw = subprocess.run(
        [*cmd, "--json", "user", "@alice:hs.test"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    scan = subprocess.run([*cmd, "--json", "scan", "accounts"], cwd=ROOT, capture_output=True, text=True, check=True)
    for out in (text.stdout, raw.stdout, scan.stdout):
        assert access not in out and refresh not in out and password_hash not in out
    data = json.loads(raw.stdout)
    assert data["account"]["admin"] is True and "password_hash" not in data["account"]
    (device,) = data["devices"]
    assert device["device_id"] == device_id and device["display_name"] == "Alice's laptop"
    kinds = sorted(t["kind"] for t in device["tokens"])
    assert kinds == ["access", "refresh"]
    masked = {t["token"] for t in device["tokens"]}
    assert f"sha256:{token_hash(access).hex()[:8]}…" in masked
    assert device_id in text.stdout and "Alice's laptop" in text.stdout
