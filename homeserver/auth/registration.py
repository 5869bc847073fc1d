"""Account registration: which flows the config offers, the registration-token stage, guests,
shared-secret registration by admin tools, and the first account's admin token.

spec: client-server-api "Account registration" (POST /register), "Token-authenticated
registration", guest_access module.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.auth.accounts import Accounts, LoginOptions, new_localpart
from homeserver.auth.login import check_password_value
from homeserver.auth.passwords import Passwords
from homeserver.auth.registration_tokens import RegistrationTokens
from homeserver.auth.tokens import Session, Tokens
from homeserver.auth.uia import DUMMY, REGISTRATION_TOKEN, StageFailed, UiaSession, UserInteractiveAuth
from homeserver.config import Config
from homeserver.errors import MatrixError
from storage.engine import Batch

NONCE_LIFETIME_S = 60
MAX_NONCES = 1000

# called after an account made with a registration token exists: (user id, the token's record)
TokenSignupListener = Callable[[str, dict[str, Any]], Awaitable[None]]


class Registered:
    __slots__ = ("session", "user_id")

    user_id: str
    session: Session | None  # None with inhibit_login

    def __init__(self, user_id: str, session: Session | None) -> None:
        self.user_id = user_id
        self.session = session


class Registration:
    def __init__(
        self,
        config: Config,
        accounts: Accounts,
        passwords: Passwords,
        tokens: Tokens,
        registration_tokens: RegistrationTokens,
        uia: UserInteractiveAuth,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.passwords = passwords
        self.tokens = tokens
        self.registration_tokens = registration_tokens
        self.uia = uia
        self.clock = clock
        self._nonces: OrderedDict[str, float] = OrderedDict()
        self._token_signup_listeners: list[TokenSignupListener] = []
        uia.add_stage(REGISTRATION_TOKEN, self._token_stage)

    def add_token_signup_listener(self, listener: TokenSignupListener) -> None:
        """At wiring time: `listener` runs after each account made with a token (invites join rooms)."""
        self._token_signup_listeners.append(listener)

    async def _signed_up_with(self, user_id: str, record: dict[str, Any]) -> None:
        for listener in self._token_signup_listeners:
            await listener(user_id, record)

    # -- what is offered -------------------------------------------------------------------------

    def _bootstrapping(self) -> bool:
        """No account yet: the first account's admin token is accepted even when registration is closed."""
        return not self.accounts.has_accounts()

    def flows(self) -> list[list[str]]:
        """spec: UIA flows for /register, by `config.registration`; 403 when closed."""
        mode = self.config.registration
        # The token stage is followed by m.login.dummy, as Synapse offers it: matrix-nio's
        # register_with_token expects a 401 after the token stage and finishes with the dummy stage.
        if mode == "open":
            return [[DUMMY], [REGISTRATION_TOKEN, DUMMY]]
        if mode == "token" or self._bootstrapping():
            return [[REGISTRATION_TOKEN, DUMMY]]
        raise MatrixError(403, "M_FORBIDDEN", "Registration is disabled on this server")

    def _admin_tokens_only(self) -> bool:
        return self.config.registration == "closed"

    def token_valid(self, token: str) -> bool:
        """spec: GET /v1/register/m.login.registration_token/validity."""
        if self.config.registration == "closed" and not self._bootstrapping():
            raise MatrixError(403, "M_FORBIDDEN", "Registration is disabled on this server")
        return self.registration_tokens.check(
            token, admin_only=self._admin_tokens_only(), admin_allowed=self._bootstrapping()
        )

    async def _token_stage(self, session: UiaSession, auth: dict[str, Any], ip: str | None) -> None:
        """spec: "Token-authenticated registration": the token counts as pending for this session."""
        if session.kind != "register":
            raise StageFailed("M_FORBIDDEN", "registration tokens are only valid on /register")
        token = auth.get("token")
        if not isinstance(token, str):
            raise StageFailed("M_MISSING_PARAM" if token is None else "M_BAD_JSON", "token must be a string")
        until_ms = int(session.expires_at * 1000)
        # the first account's admin token works only while there is no account
        if not await self.registration_tokens.reserve(
            token, session.id, until_ms, admin_only=self._admin_tokens_only(), admin_allowed=self._bootstrapping()
        ):
            raise StageFailed("M_FORBIDDEN", "Invalid registration token")
        session.data["registration_token"] = token

    # -- usernames ---------------------------------------------------------------------------------

    @staticmethod
    def localpart_for(username: str) -> str:
        """spec: the server maps `username` onto a localpart "in a logical manner": lower-cased, like Synapse;
        anything else outside the grammar is refused with `M_INVALID_USERNAME`."""
        return username.lower()

    def check_username(self, username: str) -> str:
        """The user id `username` would get; `M_INVALID_USERNAME` or `M_USER_IN_USE` if it cannot."""
        return self.accounts.check_available(self.localpart_for(username))

    def guest_to_upgrade(self, guest_access_token: str, username: str | None) -> str:
        """spec: guest_access — a guest upgrades by registering with its token and its own localpart."""
        requester = self.tokens.lookup(guest_access_token)
        if not requester.is_guest:
            raise MatrixError(403, "M_FORBIDDEN", "guest_access_token is not a guest's token")
        if username is None:
            raise MatrixError(400, "M_MISSING_PARAM", "username is required to upgrade a guest account")
        if self.accounts.user_id(self.localpart_for(username)) != requester.user_id:
            raise MatrixError(400, "M_INVALID_USERNAME", "username must be the guest account's localpart")
        return requester.user_id

    def _free_localpart(self) -> str:
        while True:
            localpart = new_localpart()
            if not self.accounts.exists(self.accounts.user_id(localpart)):
                return localpart

    # -- registering -------------------------------------------------------------------------------

    async def register(
        self,
        session: UiaSession,
        *,
        username: str | None,
        password: str,
        login: LoginOptions | None,
        guest_user_id: str | None = None,
    ) -> Registered:
        """Create the account a completed UIA session authorised, counting its registration token as
        used in the same batch (an admin token makes the account an admin)."""
        password_hash = await self.passwords.hash(password)
        token = session.data.get("registration_token")
        lock = self.registration_tokens.lock if token is not None else contextlib.nullcontext()
        record: dict[str, Any] | None = None
        async with lock:
            admin = False
            also: Callable[[Batch], None] | None = None
            if token is not None:
                record = self.registration_tokens.get(token)
                if record is None or record.get("revoked_ts") is not None:
                    raise MatrixError(403, "M_FORBIDDEN", "the registration token was revoked")
                admin = bool(record.get("admin"))
                also = self._token_completion(token, session.id)
            if guest_user_id is not None:
                user_id = guest_user_id
                new_session = await self.accounts.upgrade_guest(user_id, password_hash, login=login, also=also)
            else:
                localpart = self.localpart_for(username) if username is not None else self._free_localpart()
                user_id, new_session = await self.accounts.register(
                    localpart, password_hash, admin=admin, login=login, also=also
                )
        self.uia.forget(session)
        if record is not None:
            await self._signed_up_with(user_id, record)
        return Registered(user_id, new_session)

    def invite_usable(self, token: str) -> bool:
        """Whether `token` may create an account now by some path (the invite page): password sign-up
        under `registration`, or a single-sign-on provider whose own policy creates accounts."""
        if self.password_invite_usable(token):
            return True
        sso = self.config.sso
        if all(p.registration == "closed" for p in sso.oidc) and all(p.registration == "closed" for p in sso.mastodon):
            return False
        return self.registration_tokens.check(token, admin_allowed=self._bootstrapping())

    def password_invite_usable(self, token: str) -> bool:
        """Whether `token` may create an account with a password now (the invite page's form)."""
        if self.config.registration == "closed" and not self._bootstrapping():
            return False
        return self.registration_tokens.check(
            token, admin_only=self._admin_tokens_only(), admin_allowed=self._bootstrapping()
        )

    async def register_with_invite(self, token: str, username: str, password: str) -> str:
        """The invite page's sign-up: check and use `token` and create the account in one batch under
        the tokens' lock, so of two people using the last use at the same instant exactly one wins."""
        localpart = self.localpart_for(username)
        self.accounts.check_available(localpart)
        check_password_value(password)
        password_hash = await self.passwords.hash(password)
        async with self.registration_tokens.lock:
            if not self.password_invite_usable(token):
                raise MatrixError(403, "M_FORBIDDEN", "This invite cannot be used any more")
            record = self.registration_tokens.get(token)
            assert record is not None  # invite_usable found it, and the lock is held
            user_id, _ = await self.accounts.register(
                localpart,
                password_hash,
                admin=bool(record.get("admin")),
                also=self._token_completion(token, ""),
            )
        await self._signed_up_with(user_id, record)
        return user_id

    async def register_upstream(
        self,
        localpart: str | None,
        displayname: str | None,
        link: Callable[[Batch, str], None],
        invite: str | None,
        *,
        avatar_url: str | None = None,
    ) -> str:
        """An account for a single-sign-on identity: no password, `link` writes the external id in
        the account's batch; with `invite`, the invite is used in the same batch (and its rooms joined)."""
        if localpart is None:
            localpart = self._free_localpart()
        user_id = self.accounts.check_available(localpart)
        lock = self.registration_tokens.lock if invite is not None else contextlib.nullcontext()
        record: dict[str, Any] | None = None
        async with lock:
            admin = False
            complete: Callable[[Batch], None] | None = None
            if invite is not None:
                # the provider's own policy admitted an invite; password registration's does not apply
                if not self.registration_tokens.check(invite, admin_allowed=self._bootstrapping()):
                    raise MatrixError(403, "M_FORBIDDEN", "This invite cannot be used any more")
                record = self.registration_tokens.get(invite)
                assert record is not None
                admin = bool(record.get("admin"))
                complete = self._token_completion(invite, "")

            def also(batch: Batch) -> None:
                link(batch, user_id)
                if complete is not None:
                    complete(batch)

            await self.accounts.register(
                localpart, None, admin=admin, displayname=displayname, avatar_url=avatar_url, also=also
            )
        if record is not None:
            await self._signed_up_with(user_id, record)
        return user_id

    def _token_completion(self, token: str, session_id: str) -> Callable[[Batch], None]:
        def complete(batch: Batch) -> None:
            self.registration_tokens.complete_in(batch, token, session_id)

        return complete

    async def register_guest(self, display_name: str | None, ip: str | None) -> Registered:
        """spec: POST /register?kind=guest — no UIA, every parameter but the device name ignored."""
        if self.config.registration != "open":
            raise MatrixError(403, "M_FORBIDDEN", "Guest access is disabled on this server")
        user_id, session = await self.accounts.register(
            self._free_localpart(), None, guest=True, login=LoginOptions(None, display_name, False, ip)
        )
        return Registered(user_id, session)

    # -- shared-secret registration (Synapse's admin API) -------------------------------------------

    def new_nonce(self) -> str:
        if not self.config.registration_shared_secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        now = self.clock()
        while self._nonces and (len(self._nonces) >= MAX_NONCES or next(iter(self._nonces.values())) <= now):
            self._nonces.popitem(last=False)
        nonce = secrets.token_hex(32)
        self._nonces[nonce] = now + NONCE_LIFETIME_S
        return nonce

    async def register_with_shared_secret(
        self,
        *,
        nonce: str,
        username: str,
        password: str,
        admin: bool,
        mac: str,
        user_type: str | None,
        displayname: str | None,
    ) -> Registered:
        """Synapse's `POST /_synapse/admin/v1/register`: HMAC-SHA1 over nonce, user, password,
        "admin"/"notadmin" (and the user type), NUL-separated, keyed with the shared secret."""
        secret = self.config.registration_shared_secret
        if not secret:
            raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
        expires = self._nonces.pop(nonce, None)  # one use, even when the mac is wrong
        if expires is None or expires <= self.clock():
            raise MatrixError(400, "M_UNKNOWN", "unrecognised nonce")
        parts = [nonce, username, password, "admin" if admin else "notadmin"]
        if user_type:
            parts.append(user_type)
        want = hmac.new(secret.encode(), "\x00".join(parts).encode(), hashlib.sha1).hexdigest()
        if not hmac.compare_digest(want, mac.lower()):
            raise MatrixError(403, "M_FORBIDDEN", "HMAC incorrect")
        localpart = self.localpart_for(username)
        self.accounts.check_available(localpart)
        password_hash = await self.passwords.hash(password)
        extra = {"user_type": user_type} if user_type else None
        user_id, session = await self.accounts.register(
            localpart, password_hash, admin=admin, extra=extra, displayname=displayname, login=LoginOptions()
        )
        return Registered(user_id, session)

    # -- the first account -------------------------------------------------------------------------

    async def first_account_notice(self, base_url: str) -> str | None:
        """While no account exists: the text that hands the admin the first account's one-time token."""
        if self.accounts.has_accounts():
            await self.registration_tokens.retire_first_account_tokens()
            return None
        token = await self.registration_tokens.first_account_token()
        rule = "=" * 78
        return "\n".join(
            [
                rule,
                "  No accounts yet. Create the first account (it becomes a server admin) with this",
                "  one-time registration token:",
                "",
                f"      {token}",
                "",
                "  Open this invite link in a browser to sign up there:",
                "",
                f"      {base_url.rstrip('/')}/invite/{token}",
                "",
                f"  or register on {base_url} in a Matrix client (e.g. Element) and enter the token",
                "  when asked. It works once; this message is shown at every start until then.",
                rule,
            ]
        )
