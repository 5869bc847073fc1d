"""Creating accounts and devices: the service that registration, login and admin tools call."""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from typing import Any

from homeserver.auth.passwords import Passwords
from homeserver.auth.tokens import Session, Tokens
from homeserver.errors import MatrixError
from homeserver.protocol.identifiers import is_valid_localpart
from storage.database import Database

_DEVICE_ALPHABET = string.ascii_uppercase


def new_device_id() -> str:
    return "".join(secrets.choice(_DEVICE_ALPHABET) for _ in range(10))


class Accounts:
    def __init__(
        self,
        db: Database,
        server_name: str,
        passwords: Passwords,
        tokens: Tokens,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.server_name = server_name
        self.passwords = passwords
        self.tokens = tokens
        self.clock = clock

    def user_id(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"

    def check_localpart(self, localpart: str) -> str:
        """Validate a requested username; returns the user id. spec: appendices "User Identifiers"."""
        if not localpart or not is_valid_localpart(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME", "usernames may only hold a-z, 0-9, . _ = - / +")
        user_id = self.user_id(localpart)
        if len(user_id.encode()) > 255:
            raise MatrixError(400, "M_INVALID_USERNAME", "the user id would be longer than 255 bytes")
        return user_id

    def exists(self, user_id: str) -> bool:
        return self.db.accounts.account(user_id) is not None

    async def create(
        self,
        localpart: str,
        password: str | None,
        *,
        admin: bool = False,
        guest: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Create an account (no device). Raises `M_USER_IN_USE` if taken."""
        user_id = self.check_localpart(localpart)
        password_hash = await self.passwords.hash(password) if password is not None else None
        if self.exists(user_id):  # checked after hashing too: the hash yields to other requests
            raise MatrixError(400, "M_USER_IN_USE", "that user id is taken")
        account: dict[str, Any] = {
            "created_ts": int(self.clock() * 1000),
            "password_hash": password_hash,
            "admin": admin,
            "guest": guest,
            "deactivated": False,
            **(extra or {}),
        }
        batch = self.db.store.batch()
        with batch:
            self.db.accounts.put_account(user_id, account, batch)
            await batch.commit()
        return user_id

    async def new_session(
        self,
        user_id: str,
        *,
        device_id: str | None = None,
        display_name: str | None = None,
        refreshable: bool = False,
        ip: str | None = None,
    ) -> Session:
        """Log a device in: create (or reuse) the device and issue its tokens."""
        device_id = device_id or new_device_id()
        batch = self.db.store.batch()
        with batch:
            existing = self.db.accounts.device(user_id, device_id)
            if existing is not None:
                # spec: login with an existing device_id invalidates that device's old tokens
                hashes = self.db.accounts.delete_device(user_id, device_id, batch)
                batch.on_commit.append(lambda: self.tokens.forget(hashes))
            device = dict(existing or {})
            device.setdefault("created_ts", int(self.clock() * 1000))
            if display_name is not None or "display_name" not in device:
                device["display_name"] = display_name
            device["last_seen_ts"] = int(self.clock() * 1000)
            device["last_seen_ip"] = ip
            self.db.accounts.put_device(user_id, device_id, device, batch)
            session = self.tokens.issue(user_id, device_id, batch, refreshable=refreshable)
            await batch.commit()
        return session
