"""Access tokens and refresh tokens, and the `Requester` every authenticated route receives.

spec: client-server-api "Client Authentication", "Refreshing access tokens".
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from homeserver.api.http import access_token
from homeserver.errors import MatrixError
from storage.accounts import token_hash
from storage.database import Database
from storage.engine import Batch

# Access tokens of sessions that asked for a refresh token expire; others live until logout.
REFRESHABLE_TOKEN_LIFETIME_MS = 5 * 60 * 1000


@dataclass(frozen=True, slots=True)
class Requester:
    user_id: str
    device_id: str
    token_hash: bytes
    is_guest: bool = False
    is_admin: bool = False


@dataclass(frozen=True, slots=True)
class Session:
    access_token: str
    device_id: str
    refresh_token: str | None = None
    expires_in_ms: int | None = None


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


class Tokens:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self._cache: OrderedDict[bytes, tuple[Requester, int | None]] = OrderedDict()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def issue(self, user_id: str, device_id: str, batch: Batch, *, refreshable: bool) -> Session:
        """New tokens for a device, written by `batch`."""
        token = new_token("mat")
        expires_at = self._now_ms() + REFRESHABLE_TOKEN_LIFETIME_MS if refreshable else None
        info: dict[str, object] = {"user_id": user_id, "device_id": device_id, "created_ts": self._now_ms()}
        if expires_at is not None:
            info["expires_at"] = expires_at
        self.db.accounts.put_access_token(token_hash(token), info, batch)
        refresh = None
        if refreshable:
            refresh = new_token("mar")
            self.db.accounts.put_refresh_token(
                token_hash(refresh),
                {"user_id": user_id, "device_id": device_id, "access_token": token_hash(token).hex()},
                batch,
            )
        return Session(token, device_id, refresh, REFRESHABLE_TOKEN_LIFETIME_MS if refreshable else None)

    def lookup(self, token: str) -> Requester:
        """The requester a token belongs to; 401 `M_UNKNOWN_TOKEN` otherwise."""
        h = token_hash(token)
        cached = self._cache.get(h)
        if cached is None:
            info = self.db.accounts.access_token(h)
            if info is None:
                raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unrecognised access token", soft_logout=False)
            account = self.db.accounts.account(info["user_id"]) or {}
            if account.get("deactivated"):
                raise MatrixError(401, "M_UNKNOWN_TOKEN", "This account has been deactivated", soft_logout=False)
            requester = Requester(
                info["user_id"],
                info["device_id"],
                h,
                is_guest=bool(account.get("guest")),
                is_admin=bool(account.get("admin")),
            )
            cached = (requester, info.get("expires_at"))
            self._cache[h] = cached
            if len(self._cache) > 10_000:
                self._cache.popitem(last=False)
        requester, expires_at = cached
        if expires_at is not None and self._now_ms() >= expires_at:
            # spec: an expired access token gets M_UNKNOWN_TOKEN with soft_logout: the client refreshes
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token has expired", soft_logout=True)
        return requester

    def forget(self, hashes: list[bytes] | None = None, user_id: str | None = None) -> None:
        """Drop cached requesters after tokens were deleted (by hash, or all of a user's)."""
        if hashes:
            for h in hashes:
                self._cache.pop(h, None)
        if user_id is not None:
            for h in [h for h, (r, _) in self._cache.items() if r.user_id == user_id]:
                del self._cache[h]

    def requester(self, request: web.Request) -> Requester:
        token = access_token(request)
        if token is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        return self.lookup(token)

    def optional_requester(self, request: web.Request) -> Requester | None:
        token = access_token(request)
        return self.lookup(token) if token is not None else None
