"""Registration tokens: one-time or N uses, expiry, pending and completed counts, an admin flag, and
what makes a token an invite: a note, rooms (and spaces) the new account joins, who made it, and a
revocation that keeps the record (so the invite page can say "revoked" rather than "unknown").

spec: client-server-api "Token-authenticated registration". The admin API follows Synapse's
documented shape (`/_synapse/admin/v1/registration_tokens`).

A token is "pending" for a UIA session from the moment the session passes the
`m.login.registration_token` stage until the registration completes (then it counts as
"completed") or the session expires. Every read-modify-write of a token holds `lock`, and its
write is one batch, so N parallel registrations with a one-use token let exactly one through.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import string
import time
from collections.abc import Callable, Sequence
from typing import Any

from homeserver.errors import MatrixError
from storage.database import Database
from storage.engine import Batch

# spec: appendices "Opaque Identifiers", at most 64 characters for registration tokens
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]{1,64}")
_GENERATED_ALPHABET = string.ascii_letters + string.digits + "-_"
DEFAULT_LENGTH = 16

_UNSET: Any = object()


def is_valid_token(token: object) -> bool:
    return isinstance(token, str) and TOKEN_PATTERN.fullmatch(token) is not None


class RegistrationTokens:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock
        self.lock = asyncio.Lock()

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- reading -----------------------------------------------------------------------------------

    def _live_pending(self, record: dict[str, Any], now_ms: int) -> dict[str, int]:
        return {sid: exp for sid, exp in record.get("pending", {}).items() if exp > now_ms}

    def status(self, record: dict[str, Any], now_ms: int | None = None) -> str:
        """ "valid", or why not: "revoked", "expired" or "used" (completed and pending uses fill it)."""
        now_ms = self._now_ms() if now_ms is None else now_ms
        if record.get("revoked_ts") is not None:
            return "revoked"
        expiry = record.get("expiry_time")
        if expiry is not None and expiry <= now_ms:
            return "expired"
        allowed = record.get("uses_allowed")
        used = record.get("completed", 0) + len(self._live_pending(record, now_ms))
        return "valid" if allowed is None or used < allowed else "used"

    def is_valid(self, record: dict[str, Any], now_ms: int | None = None) -> bool:
        """Usable now: not revoked or expired, and uses left after completed and pending ones."""
        return self.status(record, now_ms) == "valid"

    @staticmethod
    def _admitted(record: dict[str, Any], admin_only: bool, admin_allowed: bool) -> bool:
        """Admin tokens (the first account's) only while `admin_allowed`; with `admin_only`, nothing else."""
        if record.get("admin"):
            return admin_allowed
        return not admin_only

    def check(self, token: str, *, admin_only: bool = False, admin_allowed: bool = True) -> bool:
        """spec: GET /v1/register/m.login.registration_token/validity (unknown tokens are invalid)."""
        if not is_valid_token(token):
            return False
        record = self.db.registration_tokens.get(token)
        if record is None or not self._admitted(record, admin_only, admin_allowed):
            return False
        return self.is_valid(record)

    def render(self, token: str, record: dict[str, Any]) -> dict[str, Any]:
        """The admin API's registration token object, exactly Synapse's fields (admin tools compare them)."""
        return {
            "token": token,
            "uses_allowed": record.get("uses_allowed"),
            "pending": len(self._live_pending(record, self._now_ms())),
            "completed": record.get("completed", 0),
            "expiry_time": record.get("expiry_time"),
        }

    def render_invite(self, token: str, record: dict[str, Any]) -> dict[str, Any]:
        """The token as an invite: Synapse's fields, the invite's own, and its status."""
        return {
            **self.render(token, record),
            "note": record.get("note"),
            "rooms": list(record.get("rooms", [])),
            "admin": bool(record.get("admin")),
            "creator": record.get("creator"),
            "created_ts": record.get("created_ts"),
            "status": self.status(record),
        }

    def get(self, token: str) -> dict[str, Any] | None:
        return self.db.registration_tokens.get(token) if is_valid_token(token) else None

    def list(
        self, valid: bool | None = None, *, creator: str | None = None, invites: bool = False
    ) -> list[dict[str, Any]]:
        """Every token (or only valid or invalid ones; or only those `creator` made), rendered for the
        admin API or, with `invites`, as invites."""
        now = self._now_ms()
        render = self.render_invite if invites else self.render
        return [
            render(token, record)
            for token, record in self.db.registration_tokens.all()
            if (valid is None or self.is_valid(record, now) == valid)
            and (creator is None or record.get("creator") == creator)
        ]

    def count_valid_by(self, creator: str) -> int:
        now = self._now_ms()
        return sum(
            1 for _, r in self.db.registration_tokens.all() if r.get("creator") == creator and self.is_valid(r, now)
        )

    # -- registration --------------------------------------------------------------------------------

    async def reserve(
        self, token: str, session_id: str, until_ms: int, *, admin_only: bool = False, admin_allowed: bool = True
    ) -> bool:
        """Count a pending use of `token` for a UIA session until `until_ms`; False if it is not usable."""
        if not is_valid_token(token):
            return False
        async with self.lock:
            record = self.db.registration_tokens.get(token)
            if record is None or not self._admitted(record, admin_only, admin_allowed):
                return False
            now = self._now_ms()
            pending = self._live_pending(record, now)
            if session_id not in pending:
                if not self.is_valid(record, now):
                    return False
                pending[session_id] = until_ms
            batch = self.db.store.batch()
            with batch:
                self.db.registration_tokens.put(token, {**record, "pending": pending}, batch)
                await batch.commit()
        return True

    def complete_in(self, batch: Batch, token: str, session_id: str) -> dict[str, Any] | None:
        """Turn a session's pending use into a completed one, written by `batch`. Hold `lock` from
        reading the record until the batch is committed. None if the token is gone (deleted by an admin)."""
        assert self.lock.locked()
        record = self.db.registration_tokens.get(token)
        if record is None:
            return None
        pending = self._live_pending(record, self._now_ms())
        pending.pop(session_id, None)
        record = {**record, "pending": pending, "completed": record.get("completed", 0) + 1}
        self.db.registration_tokens.put(token, record, batch)
        return record

    # -- administration ------------------------------------------------------------------------------

    async def create(
        self,
        token: str | None = None,
        *,
        length: int = DEFAULT_LENGTH,
        uses_allowed: int | None = None,
        expiry_time: int | None = None,
        admin: bool = False,
        note: str | None = None,
        rooms: Sequence[str] = (),
        creator: str | None = None,
    ) -> dict[str, Any]:
        """A new token (random of `length` if `token` is None); 400 `M_INVALID_PARAM` if it exists.
        `rooms` are room ids or aliases the account joins on sign-up; `creator` the user who made it."""
        self._check_limits(uses_allowed, expiry_time)
        if token is not None and not is_valid_token(token):
            raise MatrixError(400, "M_INVALID_PARAM", "token must be 1-64 characters of A-Z a-z 0-9 . _ ~ -")
        if not 1 <= length <= 64:
            raise MatrixError(400, "M_INVALID_PARAM", "length must be between 1 and 64")
        async with self.lock:
            if token is None:
                token = self._generate(length)
            elif self.db.registration_tokens.get(token) is not None:
                raise MatrixError(400, "M_INVALID_PARAM", "that token already exists")
            record: dict[str, Any] = {
                "uses_allowed": uses_allowed,
                "expiry_time": expiry_time,
                "completed": 0,
                "pending": {},
                "created_ts": self._now_ms(),
            }
            if admin:
                record["admin"] = True
            if note:
                record["note"] = note
            if rooms:
                record["rooms"] = list(rooms)
            if creator is not None:
                record["creator"] = creator
            batch = self.db.store.batch()
            with batch:
                self.db.registration_tokens.put(token, record, batch)
                await batch.commit()
        return self.render(token, record)

    def _generate(self, length: int) -> str:
        for _ in range(100):  # short lengths run out (62 tokens of length 1): never loop for ever
            # never a leading "-": `homeserver invite revoke -kS2…` would read it as an option
            first = secrets.choice(_GENERATED_ALPHABET[:-2])
            token = first + "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(length - 1))
            if self.db.registration_tokens.get(token) is None:
                return token
        raise MatrixError(400, "M_INVALID_PARAM", f"no unused token of length {length} was found: ask for a longer one")

    def _check_limits(self, uses_allowed: Any, expiry_time: Any) -> None:
        if uses_allowed is not None and uses_allowed is not _UNSET and uses_allowed < 0:
            raise MatrixError(400, "M_INVALID_PARAM", "uses_allowed must be a non-negative integer or null")
        if expiry_time is not None and expiry_time is not _UNSET and expiry_time < self._now_ms():
            raise MatrixError(400, "M_INVALID_PARAM", "expiry_time must not be in the past")

    async def update(self, token: str, *, uses_allowed: Any = _UNSET, expiry_time: Any = _UNSET) -> dict[str, Any]:
        """Change uses allowed and/or expiry (None: unlimited / never); omitted fields stay."""
        self._check_limits(uses_allowed, expiry_time)
        async with self.lock:
            record = self.get(token)
            if record is None:
                raise MatrixError(404, "M_NOT_FOUND", f"no such registration token: {token}")
            if uses_allowed is not _UNSET:
                record["uses_allowed"] = uses_allowed
            if expiry_time is not _UNSET:
                record["expiry_time"] = expiry_time
            batch = self.db.store.batch()
            with batch:
                self.db.registration_tokens.put(token, record, batch)
                await batch.commit()
        return self.render(token, record)

    async def revoke(self, token: str) -> dict[str, Any]:
        """Stop a token working, keeping its record so the invite page can say it was revoked."""
        async with self.lock:
            record = self.get(token)
            if record is None:
                raise MatrixError(404, "M_NOT_FOUND", f"no such registration token: {token}")
            if record.get("revoked_ts") is None:
                record = {**record, "revoked_ts": self._now_ms(), "pending": {}}
                batch = self.db.store.batch()
                with batch:
                    self.db.registration_tokens.put(token, record, batch)
                    await batch.commit()
        return self.render_invite(token, record)

    async def delete(self, token: str) -> None:
        async with self.lock:
            if self.get(token) is None:
                raise MatrixError(404, "M_NOT_FOUND", f"no such registration token: {token}")
            batch = self.db.store.batch()
            with batch:
                self.db.registration_tokens.delete(token, batch)
                await batch.commit()

    async def first_account_token(self) -> str:
        """The one-time token that makes the first account an admin: the unused one, or a new one."""
        now = self._now_ms()
        for token, record in self.db.registration_tokens.all():
            if record.get("admin") and record.get("completed", 0) == 0 and self.is_valid(record, now):
                return token
        created = await self.create(length=24, uses_allowed=1, admin=True)
        return str(created["token"])

    async def retire_first_account_tokens(self) -> None:
        """Delete unused first-account tokens once an account exists (made some other way)."""
        async with self.lock:
            unused = [t for t, r in self.db.registration_tokens.all() if r.get("admin") and not r.get("completed")]
            if not unused:
                return
            batch = self.db.store.batch()
            with batch:
                for token in unused:
                    self.db.registration_tokens.delete(token, batch)
                await batch.commit()
