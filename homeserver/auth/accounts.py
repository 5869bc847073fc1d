"""Accounts and devices: the service that registration, login, admin tools and account management call.

Every operation is one atomic batch. Other services hook in with listeners that add their own
writes to the same batch (a profile on account creation, device keys removed with a device), so
nothing is half-done if the server stops in between.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable, Iterator
from typing import Any

from homeserver.auth.passwords import Passwords
from homeserver.auth.tokens import OAuthGrant, Session, Tokens
from homeserver.errors import MatrixError
from homeserver.protocol.identifiers import is_valid_localpart
from storage.database import Database
from storage.engine import Batch

_DEVICE_ALPHABET = string.ascii_uppercase
_LOCALPART_ALPHABET = string.ascii_lowercase + string.digits
MAX_DEVICE_ID_LENGTH = 255
# A device's name is re-sent to everyone who shares a room (keys/query `unsigned`); Synapse caps it
# at 100 characters too. Checked wherever a name is set: login, registration, PUT /devices.
MAX_DEVICE_NAME_CHARS = 100

# (user id, fields such as {"displayname": ...}, batch): called while an account is created
AccountCreatedListener = Callable[[str, dict[str, Any], Batch], None]
# (user id, device ids, batch): called while devices are deleted (device keys go with them)
DevicesDeletedListener = Callable[[str, list[str], Batch], None]


def new_device_id() -> str:
    return "".join(secrets.choice(_DEVICE_ALPHABET) for _ in range(10))


def new_localpart() -> str:
    """A random localpart for registrations without a username (spec: the server MUST generate one)."""
    return "u" + "".join(secrets.choice(_LOCALPART_ALPHABET) for _ in range(11))


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
        self.account_created_listeners: list[AccountCreatedListener] = []
        self.devices_deleted_listeners: list[DevicesDeletedListener] = []
        self.device_renamed_listeners: list[Callable[[str, str, Batch], None]] = []
        # user ids being created right now: the existence check and the write are apart by an await
        self._creating: set[str] = set()
        self._dummy_hash: str | None = None

    def add_account_created_listener(self, listener: AccountCreatedListener) -> None:
        """At wiring time: `listener` is called after every account creation commits."""
        self.account_created_listeners.append(listener)

    def add_device_renamed_listener(self, listener: Callable[[str, str, Batch], None]) -> None:
        """At wiring time: `listener(user, device, batch)` is called in the batch that renames a device."""
        self.device_renamed_listeners.append(listener)

    def add_devices_deleted_listener(self, listener: DevicesDeletedListener) -> None:
        """At wiring time: `listener` is called after devices were deleted."""
        self.devices_deleted_listeners.append(listener)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- user ids --------------------------------------------------------------------------------

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

    def check_available(self, localpart: str) -> str:
        """The user id for `localpart` if it is valid and free; `M_INVALID_USERNAME`/`M_USER_IN_USE` if not."""
        user_id = self.check_localpart(localpart)
        if self.exists(user_id) or user_id in self._creating:
            raise MatrixError(400, "M_USER_IN_USE", "that user id is taken")
        return user_id

    def localpart_of(self, user_id: str) -> str | None:
        """The localpart of a user id of this server, else None."""
        if not user_id.startswith("@"):
            return None
        localpart, sep, server = user_id[1:].partition(":")
        return localpart if sep and server == self.server_name else None

    def exists(self, user_id: str) -> bool:
        return self.db.accounts.account(user_id) is not None

    def account(self, user_id: str) -> dict[str, Any] | None:
        return self.db.accounts.account(user_id)

    def has_accounts(self) -> bool:
        return self.db.accounts.has_accounts()

    # -- creating accounts -----------------------------------------------------------------------

    async def create(
        self,
        localpart: str,
        password: str | None,
        *,
        admin: bool = False,
        guest: bool = False,
        extra: dict[str, Any] | None = None,
        displayname: str | None = None,
    ) -> str:
        """Create an account (no device). Raises `M_USER_IN_USE` if taken."""
        self.check_available(localpart)  # cheap refusal before the costly hash
        password_hash = await self.passwords.hash(password) if password is not None else None
        user_id, _ = await self.register(
            localpart, password_hash, admin=admin, guest=guest, extra=extra, displayname=displayname
        )
        return user_id

    async def register(
        self,
        localpart: str,
        password_hash: str | None,
        *,
        admin: bool = False,
        guest: bool = False,
        extra: dict[str, Any] | None = None,
        displayname: str | None = None,
        avatar_url: str | None = None,
        login: LoginOptions | None = None,
        also: Callable[[Batch], None] | None = None,
    ) -> tuple[str, Session | None]:
        """Create an account and, with `login`, its first device, in one batch with `also`'s writes.

        Raises `M_USER_IN_USE` if the id is taken (also by a creation still in flight).
        """
        user_id = self.check_available(localpart)
        self._creating.add(user_id)
        try:
            batch = self.db.store.batch()
            with batch:
                account: dict[str, Any] = {
                    "created_ts": self._now_ms(),
                    "password_hash": password_hash,
                    "admin": admin,
                    "guest": guest,
                    "deactivated": False,
                    **(extra or {}),
                }
                self.db.accounts.put_account(user_id, account, batch)
                fields = {"displayname": displayname if displayname is not None else localpart}
                if avatar_url is not None:
                    fields["avatar_url"] = avatar_url
                for listener in self.account_created_listeners:
                    listener(user_id, fields, batch)
                if also is not None:
                    also(batch)
                session = self._start_session(batch, user_id, login) if login is not None else None
                await batch.commit()
        finally:
            self._creating.discard(user_id)
        return user_id, session

    async def upgrade_guest(
        self, user_id: str, password_hash: str, *, login: LoginOptions | None, also: Callable[[Batch], None] | None
    ) -> Session | None:
        """Turn a guest account into a full one (spec: guest_access "upgrade their account")."""
        batch = self.db.store.batch()
        with batch:
            account = self.db.accounts.account(user_id)
            if account is None or not account.get("guest") or account.get("deactivated"):
                raise MatrixError(403, "M_FORBIDDEN", "only an active guest account can be upgraded")
            account = {**account, "guest": False, "password_hash": password_hash}
            self.db.accounts.put_account(user_id, account, batch)
            if also is not None:
                also(batch)
            session = self._start_session(batch, user_id, login) if login is not None else None
            await batch.commit()
        self.tokens.forget(user_id=user_id)  # cached requesters still say "guest"
        return session

    # -- sessions and devices --------------------------------------------------------------------

    async def new_session(
        self,
        user_id: str,
        *,
        device_id: str | None = None,
        display_name: str | None = None,
        refreshable: bool = False,
        ip: str | None = None,
        oauth: OAuthGrant | None = None,
    ) -> Session:
        """Log a device in: create (or reuse) the device and issue its tokens (`oauth`: of an OAuth
        2.0 session, which Requester.oauth_client then names)."""
        batch = self.db.store.batch()
        with batch:
            account = self.db.accounts.account(user_id) if oauth is not None else {}
            if account is None or account.get("deactivated"):  # checked in the batch: no device for a gone account
                raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
            options = LoginOptions(device_id, display_name, refreshable, ip)
            options.oauth = oauth
            session = self._start_session(batch, user_id, options)
            await batch.commit()
        return session

    def _start_session(self, batch: Batch, user_id: str, login: LoginOptions) -> Session:
        device_id = login.device_id or new_device_id()
        now = self._now_ms()
        existing = self.db.accounts.device(user_id, device_id)
        if existing is not None:
            # spec: "Relationship between access tokens and devices": a given device_id invalidates
            # the tokens previously assigned to that device
            hashes = self.db.accounts.delete_device(user_id, device_id, batch)
            batch.on_commit.append(lambda: self.tokens.forget(hashes))
            device = dict(existing)  # spec: initial_device_display_name is ignored for a known device
        else:
            device = {"created_ts": now}
            if login.display_name is not None:
                device["display_name"] = checked_device_name(login.display_name)
        device["last_seen_ts"] = now
        if login.ip is not None:
            device["last_seen_ip"] = login.ip
        self.db.accounts.put_device(user_id, device_id, device, batch)
        return self.tokens.issue(user_id, device_id, batch, refreshable=login.refreshable, oauth=login.oauth)

    def devices(self, user_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        return self.db.accounts.devices(user_id)

    def device(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        return self.db.accounts.device(user_id, device_id)

    async def update_device(self, user_id: str, device_id: str, display_name: str | None) -> bool:
        """Set a device's display name (None: leave it). False if the user has no such device."""
        batch = self.db.store.batch()
        with batch:
            device = self.db.accounts.device(user_id, device_id)
            if device is None:
                return False
            if display_name is not None:
                device["display_name"] = checked_device_name(display_name)
                self.db.accounts.put_device(user_id, device_id, device, batch)
                for listener in self.device_renamed_listeners:
                    listener(user_id, device_id, batch)
                await batch.commit()
        return True

    def _delete_devices_in(self, batch: Batch, user_id: str, device_ids: list[str]) -> None:
        hashes: list[bytes] = []
        present = [d for d in device_ids if self.db.accounts.device(user_id, d) is not None]
        for device_id in device_ids:  # also sweeps tokens of a device whose record is already gone
            hashes.extend(self.db.accounts.delete_device(user_id, device_id, batch))
        if present:
            for listener in self.devices_deleted_listeners:
                listener(user_id, present, batch)
        batch.on_commit.append(lambda: self.tokens.forget(hashes))

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        """Delete devices and every token they hold (unknown ids are ignored)."""
        batch = self.db.store.batch()
        with batch:
            self._delete_devices_in(batch, user_id, list(dict.fromkeys(device_ids)))
            await batch.commit()

    async def delete_all_devices(self, user_id: str, *, keep: str | None = None) -> None:
        """Log out everywhere (but on the device `keep`)."""
        batch = self.db.store.batch()
        with batch:
            self._delete_devices_in(batch, user_id, self._device_ids(user_id, keep))
            await batch.commit()

    def _device_ids(self, user_id: str, keep: str | None = None) -> list[str]:
        return [d for d, _ in self.db.accounts.devices(user_id) if d != keep]

    # -- passwords -------------------------------------------------------------------------------

    async def check_password(self, user_id: str, password: str) -> bool:
        """Whether `password` is the user's. Unknown users cost the same time as known ones."""
        account = self.db.accounts.account(user_id)
        stored = account.get("password_hash") if account is not None else None
        if not stored:
            if self._dummy_hash is None:
                self._dummy_hash = await self.passwords.hash(secrets.token_hex(16))
            await self.passwords.verify(self._dummy_hash, password)
            return False
        return await self.passwords.verify(stored, password)

    async def set_password(self, user_id: str, new_password: str, *, logout_devices: bool, keep: str | None) -> None:
        """Change a password; with `logout_devices`, log out every device but `keep`."""
        password_hash = await self.passwords.hash(new_password)
        batch = self.db.store.batch()
        with batch:
            account = self.db.accounts.account(user_id)
            if account is None or account.get("deactivated"):
                raise MatrixError(403, "M_FORBIDDEN", "this account cannot change its password")
            self.db.accounts.put_account(user_id, {**account, "password_hash": password_hash}, batch)
            if logout_devices:
                self._delete_devices_in(batch, user_id, self._device_ids(user_id, keep))
            await batch.commit()

    # -- deactivation ----------------------------------------------------------------------------

    async def deactivate(self, user_id: str, *, erase: bool = False) -> None:
        """Mark the account deactivated, forget its password, delete its devices and tokens.

        The user id stays reserved forever (spec: user ids must not be reused).
        """
        batch = self.db.store.batch()
        with batch:
            account = self.db.accounts.account(user_id)
            if account is None:
                raise MatrixError(404, "M_NOT_FOUND", "no such account")
            account = {**account, "deactivated": True, "password_hash": None, "deactivated_ts": self._now_ms()}
            if erase:
                account["erased"] = True
            self.db.accounts.put_account(user_id, account, batch)
            self._delete_devices_in(batch, user_id, self._device_ids(user_id))
            await batch.commit()
        self.tokens.forget(user_id=user_id)


class LoginOptions:
    """What a new session asks for: the device (new or reused), its name, refresh support, the client ip."""

    __slots__ = ("device_id", "display_name", "ip", "oauth", "refreshable")

    def __init__(
        self,
        device_id: str | None = None,
        display_name: str | None = None,
        refreshable: bool = False,
        ip: str | None = None,
    ) -> None:
        self.device_id = device_id
        self.display_name = display_name
        self.refreshable = refreshable
        self.ip = ip
        self.oauth: OAuthGrant | None = None


def checked_device_name(name: str) -> str:
    if len(name) > MAX_DEVICE_NAME_CHARS:
        limit = MAX_DEVICE_NAME_CHARS
        raise MatrixError(400, "M_INVALID_PARAM", f"a device's display name is at most {limit} characters")
    return name
