"""Access tokens and refresh tokens, and the `Requester` every authenticated route receives.

spec: client-server-api "Client Authentication", "Refreshing access tokens".
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from homeserver.errors import MatrixError
from storage.accounts import token_hash
from storage.cache import LruCache
from storage.database import Database
from storage.engine import Batch

log = logging.getLogger(__name__)

# Access tokens of sessions that asked for a refresh token expire; others live until logout.
REFRESHABLE_TOKEN_LIFETIME_MS = 5 * 60 * 1000


class Requester:
    __slots__ = (
        "device_id",
        "is_admin",
        "is_guest",
        "is_locked",
        "is_suspended",
        "oauth_client",
        "token_hash",
        "user_id",
    )

    user_id: Final[str]
    device_id: Final[str]
    token_hash: Final[bytes]
    is_guest: Final[bool]
    is_admin: Final[bool]
    is_locked: Final[bool]
    is_suspended: Final[bool]
    oauth_client: Final[str | None]  # the OAuth client the token was issued to; None for legacy logins

    def __init__(
        self,
        user_id: str,
        device_id: str,
        token_hash: bytes,
        is_guest: bool = False,
        is_admin: bool = False,
        is_locked: bool = False,
        is_suspended: bool = False,
        oauth_client: str | None = None,
    ) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.token_hash = token_hash
        self.is_guest = is_guest
        self.is_admin = is_admin
        self.is_locked = is_locked
        self.is_suspended = is_suspended
        self.oauth_client = oauth_client


class OAuthGrant:
    """What an OAuth 2.0 session was granted: the client and the scope (spec: OAuth 2.0 API "Scope")."""

    __slots__ = ("client_id", "scope")

    def __init__(self, client_id: str, scope: str) -> None:
        self.client_id = client_id
        self.scope = scope


class RefreshReplayed(Exception):
    """An OAuth refresh token was used again after its grace period: the session must end."""

    def __init__(self, user_id: str, device_id: str) -> None:
        super().__init__(f"refresh token replayed for {user_id} {device_id}")
        self.user_id = user_id
        self.device_id = device_id


class Session:
    __slots__ = ("access_token", "device_id", "expires_in_ms", "refresh_token")

    access_token: Final[str]
    device_id: Final[str]
    refresh_token: Final[str | None]
    expires_in_ms: Final[int | None]

    def __init__(
        self, access_token: str, device_id: str, refresh_token: str | None = None, expires_in_ms: int | None = None
    ) -> None:
        self.access_token = access_token
        self.device_id = device_id
        self.refresh_token = refresh_token
        self.expires_in_ms = expires_in_ms


def new_token(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


class Tokens:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], float] = time.time,
        *,
        oauth_lifetime_ms: int = REFRESHABLE_TOKEN_LIFETIME_MS,
        oauth_grace_ms: int = 60_000,
    ) -> None:
        self.db = db
        self.clock = clock
        self.oauth_lifetime_ms = oauth_lifetime_ms
        self.oauth_grace_ms = oauth_grace_ms
        self._cache: LruCache[bytes, tuple[Requester, int | None]] = db.caches.lru("auth.tokens", "auth.tokens")
        self._tasks: set[asyncio.Task[None]] = set()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def issue(
        self,
        user_id: str,
        device_id: str,
        batch: Batch,
        *,
        refreshable: bool,
        prev_refresh: bytes | None = None,
        oauth: OAuthGrant | None = None,
    ) -> Session:
        """New tokens for a device, written by `batch`. `prev_refresh`: the refresh token these replace,
        revoked once the new ones are used (spec: "Refreshing access tokens"). `oauth`: tokens of an
        OAuth 2.0 session, always refreshable, with the OAuth access-token lifetime."""
        token = new_token("mat")
        lifetime = self.oauth_lifetime_ms if oauth is not None else REFRESHABLE_TOKEN_LIFETIME_MS
        refreshable = refreshable or oauth is not None
        expires_at = self._now_ms() + lifetime if refreshable else None
        info: dict[str, object] = {"user_id": user_id, "device_id": device_id, "created_ts": self._now_ms()}
        if expires_at is not None:
            info["expires_at"] = expires_at
        if prev_refresh is not None and oauth is None:
            info["prev_refresh"] = prev_refresh.hex()
        if oauth is not None:
            info["oauth"] = oauth.client_id
            info["scope"] = oauth.scope
        self.db.accounts.put_access_token(token_hash(token), info, batch)
        refresh = None
        if refreshable:
            refresh = new_token("mar")
            refresh_info = {"user_id": user_id, "device_id": device_id, "access_token": token_hash(token).hex()}
            if prev_refresh is not None:
                refresh_info["prev"] = prev_refresh.hex()
            if oauth is not None:
                refresh_info["oauth"] = oauth.client_id
                refresh_info["scope"] = oauth.scope
            self.db.accounts.put_refresh_token(token_hash(refresh), refresh_info, batch)
        return Session(token, device_id, refresh, lifetime if refreshable else None)

    async def refresh_oauth(self, refresh_token: str, client_id: str) -> tuple[Session, str]:
        """spec: OAuth 2.0 API "Refresh token grant": new access and refresh tokens; (session, scope).

        The used refresh token is kept as spent. Used again within the grace period (the client lost
        the answer), the tokens that answer carried are revoked and new ones issued; used again later,
        the session is taken as compromised: `RefreshReplayed`. Unknown tokens, tokens of another
        client or of a deactivated account: `LookupError`.
        """
        h = token_hash(refresh_token)
        info = self.db.accounts.refresh_token(h)
        if info is None or info.get("oauth") != client_id:
            raise LookupError("unknown refresh token")
        user_id, device_id = info["user_id"], info["device_id"]
        account = self.db.accounts.account(user_id) or {}
        if account.get("deactivated"):
            raise LookupError("deactivated account")
        now = self._now_ms()
        dropped: list[bytes] = []
        batch = self.db.store.batch()
        with batch:
            successor = info.get("next")
            if successor is not None:
                if now - int(info.get("used_ts", 0)) > self.oauth_grace_ms:
                    raise RefreshReplayed(user_id, device_id)
                nxt = self.db.accounts.refresh_token(bytes.fromhex(successor))
                if nxt is not None:  # the answer the client lost: its tokens go
                    dropped.append(bytes.fromhex(nxt["access_token"]))
                    self.db.accounts.delete_access_token(dropped[-1], user_id, device_id, batch)
                    self.db.accounts.delete_refresh_token(bytes.fromhex(successor), user_id, device_id, batch)
            else:
                dropped.append(bytes.fromhex(info["access_token"]))
                self.db.accounts.delete_access_token(dropped[-1], user_id, device_id, batch)
                previous = info.pop("prev", None)
                if previous is not None:  # two steps back: no longer kept to detect replays
                    self.db.accounts.delete_refresh_token(bytes.fromhex(previous), user_id, device_id, batch)
                info["used_ts"] = now
            grant = OAuthGrant(client_id, str(info.get("scope", "")))
            session = self.issue(user_id, device_id, batch, refreshable=True, prev_refresh=h, oauth=grant)
            assert session.refresh_token is not None
            info["next"] = token_hash(session.refresh_token).hex()
            self.db.accounts.put_refresh_token(h, info, batch)
            await batch.commit()
        self.forget(dropped)
        return session, grant.scope

    def token_owner(self, token: str) -> tuple[str, str] | None:
        """(user id, device id) of an access or refresh token, for revocation; None if unknown."""
        h = token_hash(token)
        info = self.db.accounts.access_token(h) or self.db.accounts.refresh_token(h)
        if info is None:
            return None
        return str(info["user_id"]), str(info["device_id"])

    async def refresh(self, refresh_token: str) -> Session:
        """New access and refresh tokens for a refresh token (spec: POST /refresh).

        The old access token dies at once. The old refresh token stays usable until the new tokens
        are used, so a client that lost the answer can repeat the refresh; repeating it revokes the
        tokens the earlier attempt handed out.
        """
        h = token_hash(refresh_token)
        info = self.db.accounts.refresh_token(h)
        if info is None or "oauth" in info:  # OAuth sessions refresh at the OAuth token endpoint
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Unknown refresh token", soft_logout=False)
        user_id, device_id = info["user_id"], info["device_id"]
        account = self.db.accounts.account(user_id) or {}
        if account.get("deactivated"):
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "This account has been deactivated", soft_logout=False)
        dropped = [bytes.fromhex(info["access_token"])]
        batch = self.db.store.batch()
        with batch:
            self.db.accounts.delete_access_token(dropped[0], user_id, device_id, batch)
            successor = info.get("next")
            if successor is not None:  # an earlier refresh whose answer the client never used
                nxt = self.db.accounts.refresh_token(bytes.fromhex(successor))
                if nxt is not None:
                    dropped.append(bytes.fromhex(nxt["access_token"]))
                    self.db.accounts.delete_access_token(dropped[-1], user_id, device_id, batch)
                    self.db.accounts.delete_refresh_token(bytes.fromhex(successor), user_id, device_id, batch)
            previous = info.pop("prev", None)
            if previous is not None:  # this token is in use now: the one it replaced is done
                self.db.accounts.delete_refresh_token(bytes.fromhex(previous), user_id, device_id, batch)
            session = self.issue(user_id, device_id, batch, refreshable=True, prev_refresh=h)
            assert session.refresh_token is not None
            info["next"] = token_hash(session.refresh_token).hex()
            self.db.accounts.put_refresh_token(h, info, batch)
            await batch.commit()
        self.forget(dropped)
        return session

    async def _retire_refresh_token(self, access_hash: bytes, info: dict[str, object]) -> None:
        """The first use of a refreshed access token revokes the refresh token it replaced."""
        prev = info.get("prev_refresh")
        if not isinstance(prev, str):
            return
        user_id, device_id = str(info["user_id"]), str(info["device_id"])
        batch = self.db.store.batch()
        with batch:
            if self.db.accounts.access_token(access_hash) is None:
                return  # logged out meanwhile
            self.db.accounts.delete_refresh_token(bytes.fromhex(prev), user_id, device_id, batch)
            self.db.accounts.put_access_token(
                access_hash, {k: v for k, v in info.items() if k != "prev_refresh"}, batch
            )
            await batch.commit()

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
                is_locked=bool(account.get("locked")),
                is_suspended=bool(account.get("suspended")),
                oauth_client=info.get("oauth"),
            )
            cached = (requester, info.get("expires_at"))
            if "prev_refresh" in info:
                self._schedule(self._retire_refresh_token(h, info))
            self._cache.put(h, cached)
        requester, expires_at = cached
        if expires_at is not None and self._now_ms() >= expires_at:
            # spec: an expired access token gets M_UNKNOWN_TOKEN with soft_logout: the client refreshes
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "Access token has expired", soft_logout=True)
        return requester

    def _schedule(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a tool reading tokens): the next lookup in the server does it
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("revoking a used refresh token failed", exc_info=task.exception())

    def forget(self, hashes: list[bytes] | None = None, user_id: str | None = None) -> None:
        """Drop cached requesters after tokens were deleted (by hash, or all of a user's)."""
        if hashes:
            for h in hashes:
                self._cache.discard(h)
        if user_id is not None:
            for h in self._cache.list_keys():
                found = self._cache.peek(h)
                if found is not None and found[0].user_id == user_id:
                    self._cache.discard(h)

    def authenticate(self, token: str, *, guests_admitted: bool, locked_admitted: bool) -> Requester:
        """The requester a token belongs to, if its account may call the route: `guests_admitted`,
        whether the route lets guest accounts call it; `locked_admitted`, whether a locked account
        still may (logging out)."""
        requester = self.lookup(token)
        # spec: "Account locking" — a locked account gets 401 M_USER_LOCKED with soft_logout, except
        # on /logout and /logout/all, which it may still call
        if requester.is_locked and not locked_admitted:
            raise MatrixError(401, "M_USER_LOCKED", "This account has been locked", soft_logout=True)
        # spec: modules/guest_access.md — guests may call only the endpoints it lists
        if requester.is_guest and not guests_admitted:
            raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "Guest accounts cannot use this endpoint")
        return requester
