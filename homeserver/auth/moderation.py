"""Server admins' actions on local accounts: locking, suspending, and "who is" (spec:
client-server-api "Account locking", "Account suspension", GET /admin/whois/{userId})."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.auth.tokens import Requester, Tokens
from homeserver.errors import MatrixError
from homeserver.rooms.queries import RoomQueries
from storage.database import Database

# Events a suspended account may still send (spec: "Account suspension" — leave rooms, reject
# invites, redact its own events); everything else gets M_USER_SUSPENDED.
_ALWAYS_ALLOWED_MEMBERSHIPS = ("leave",)


def suspended() -> MatrixError:
    return MatrixError(403, "M_USER_SUSPENDED", "This account is suspended")


class Moderation:
    def __init__(
        self, db: Database, queries: RoomQueries, tokens: Tokens, server_name: str, clock: Callable[[], float]
    ) -> None:
        self.db = db
        self.queries = queries
        self.tokens = tokens
        self.server_name = server_name
        self.clock = clock
        self._suspended_users: set[str] | None = None  # read on first use, not at start

    @property
    def _suspended(self) -> set[str]:
        if self._suspended_users is None:
            self._suspended_users = {u for u, a in self.db.accounts.accounts() if a.get("suspended")}
        return self._suspended_users

    def _target(self, admin: Requester, user_id: str, *, changing: bool) -> dict[str, Any]:
        # spec: authorisation is checked before any account lookup (no user enumeration)
        if not admin.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        if not user_id.startswith("@") or user_id.split(":", 1)[-1] != self.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", "that user is not on this server")
        account = self.db.accounts.account(user_id)
        if account is None or account.get("deactivated"):
            raise MatrixError(404, "M_NOT_FOUND", "no such user")
        if changing and user_id == admin.user_id:
            raise MatrixError(403, "M_FORBIDDEN", "you cannot do this to your own account")
        if changing and account.get("admin"):
            raise MatrixError(403, "M_FORBIDDEN", "you cannot do this to another admin")
        return account

    def get_flag(self, admin: Requester, user_id: str, flag: str) -> bool:
        return bool(self._target(admin, user_id, changing=False).get(flag))

    async def set_flag(self, admin: Requester, user_id: str, flag: str, value: bool) -> None:
        account = self._target(admin, user_id, changing=True)
        batch = self.db.store.batch()
        with batch:
            self.db.accounts.put_account(user_id, {**account, flag: value}, batch)
            await batch.commit()
        if flag == "suspended":
            (self._suspended.add if value else self._suspended.discard)(user_id)
        self.tokens.forget(user_id=user_id)  # cached requesters carry the old flags

    def check_local_event(
        self, sender: str, event_type: str, content: dict[str, Any], state_key: str | None, redacts: str | None
    ) -> None:
        """Pipeline hook: a suspended account may leave rooms and redact its own events, nothing else."""
        if sender not in self._suspended:
            return
        if (
            event_type == "m.room.member"
            and state_key == sender
            and content.get("membership") in _ALWAYS_ALLOWED_MEMBERSHIPS
        ):
            return
        if redacts is None and isinstance(content.get("redacts"), str):
            redacts = content["redacts"]  # rooms v11+ carry it in content
        if event_type == "m.room.redaction" and redacts is not None:
            short = self.queries.event_short(redacts)
            target = self.queries.event(short) if short is not None else None
            if target is not None and target.sender == sender:
                return
        raise suspended()

    def check_requester(self, requester: Requester) -> None:
        if requester.is_suspended:
            raise suspended()

    def whois(self, requester: Requester, user_id: str) -> dict[str, Any]:
        """spec: GET /admin/whois — admins may ask about anyone; users about themselves."""
        if not requester.is_admin and requester.user_id != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "only admins may look up other users")
        if self.db.accounts.account(user_id) is None:
            raise MatrixError(404, "M_NOT_FOUND", "no such user")
        devices: dict[str, Any] = {}
        for device_id, device in self.db.accounts.devices(user_id):
            connection: dict[str, Any] = {}
            if device.get("last_seen_ip"):
                connection["ip"] = device["last_seen_ip"]
            if device.get("last_seen_ts"):
                connection["last_seen"] = device["last_seen_ts"]
            devices[device_id] = {"sessions": [{"connections": [connection] if connection else []}]}
        return {"user_id": user_id, "devices": devices}
