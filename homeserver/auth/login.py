"""Password login and the `m.login.password` UIA stage: identifiers, rate limits, deactivated users.

spec: client-server-api "Login" (legacy API), "Identifier types", UIA "Password-based".
"""

from __future__ import annotations

from typing import Any

from homeserver.auth.accounts import MAX_DEVICE_ID_LENGTH, Accounts, LoginOptions
from homeserver.auth.login_tokens import LoginTokens
from homeserver.auth.tokens import Session
from homeserver.auth.uia import PASSWORD, StageFailed, UiaSession, UserInteractiveAuth
from homeserver.errors import MatrixError
from homeserver.ratelimit import RateLimiter

MAX_PASSWORD_LENGTH = 512  # argon2 takes anything; a bound keeps hashing requests cheap to refuse

# spec: "Token-based" login: m.login.token is offered with get_token_supported when login/get_token works
LOGIN_FLOWS: list[dict[str, Any]] = [
    {"type": "m.login.password"},
    {"type": "m.login.token", "get_login_token": True},
]


class LoginResult:
    __slots__ = ("session", "user_id")

    user_id: str
    session: Session

    def __init__(self, user_id: str, session: Session) -> None:
        self.user_id = user_id
        self.session = session


def check_password_value(password: object, *, name: str = "password") -> str:
    if not isinstance(password, str):
        raise MatrixError(400, "M_BAD_JSON", f"{name} must be a string")
    if not password:
        raise MatrixError(400, "M_WEAK_PASSWORD", f"{name} must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} is longer than {MAX_PASSWORD_LENGTH} characters")
    return password


def check_device_id(device_id: object) -> str | None:
    if device_id is None:
        return None
    if not isinstance(device_id, str):
        raise MatrixError(400, "M_BAD_JSON", "device_id must be a string")
    if not device_id or len(device_id) > MAX_DEVICE_ID_LENGTH:
        raise MatrixError(400, "M_INVALID_PARAM", f"device_id must be 1-{MAX_DEVICE_ID_LENGTH} characters")
    return device_id


class Login:
    def __init__(
        self,
        accounts: Accounts,
        ratelimiter: RateLimiter,
        uia: UserInteractiveAuth,
        login_tokens: LoginTokens | None = None,
    ) -> None:
        self.accounts = accounts
        self.ratelimiter = ratelimiter
        self.login_tokens = login_tokens
        uia.add_stage(PASSWORD, self._password_stage)
        uia.add_user_stage(PASSWORD, self.has_password)

    # -- identifiers ---------------------------------------------------------------------------------

    def user_of(self, user: str) -> str:
        """A user id from `m.id.user`'s `user`: a localpart or a full id (spec: "Matrix User ID")."""
        if user.startswith("@"):
            localpart = self.accounts.localpart_of(user)
            if localpart is None:
                raise MatrixError(403, "M_FORBIDDEN", "Invalid username or password")  # not one of ours
        else:
            localpart = user
        user_id = self.accounts.user_id(localpart)
        if not self.accounts.exists(user_id) and localpart != localpart.lower():
            user_id = self.accounts.user_id(localpart.lower())  # registration lower-cases usernames
        return user_id

    def identify(self, body: dict[str, Any]) -> str:
        """The user a login or `m.login.password` auth dict names, from `identifier` or the legacy fields."""
        identifier = body.get("identifier")
        if identifier is None:
            if "user" in body:
                identifier = {"type": "m.id.user", "user": body["user"]}
            elif "medium" in body or "address" in body:
                identifier = {"type": "m.id.thirdparty", "medium": body.get("medium"), "address": body.get("address")}
            else:
                raise MatrixError(400, "M_MISSING_PARAM", "identifier is required")
        if not isinstance(identifier, dict):
            raise MatrixError(400, "M_BAD_JSON", "identifier must be an object")
        kind = identifier.get("type")
        if not isinstance(kind, str):
            raise MatrixError(400, "M_BAD_JSON" if "type" in identifier else "M_MISSING_PARAM", "identifier.type")
        if kind == "m.id.user":
            user = identifier.get("user")
            if not isinstance(user, str):
                code = "M_BAD_JSON" if "user" in identifier else "M_MISSING_PARAM"
                raise MatrixError(400, code, "identifier.user must be a string")
            if not user:
                raise MatrixError(400, "M_INVALID_PARAM", "identifier.user must not be empty")
            return self.user_of(user)
        if kind in ("m.id.thirdparty", "m.id.phone"):
            # spec: a 3PID the homeserver does not know gets 403; this server keeps none
            raise MatrixError(403, "M_FORBIDDEN", "no account has that third-party identifier")
        raise MatrixError(400, "M_UNKNOWN", f"unknown identifier type {kind}")

    # -- password checks -----------------------------------------------------------------------------

    def has_password(self, user_id: str) -> bool:
        """Whether the user can confirm with a password (accounts made by single sign-on have none)."""
        account = self.accounts.account(user_id)
        return account is not None and bool(account.get("password_hash"))

    async def verify(self, user_id: str, password: str, ip: str | None) -> None:
        """403 `M_FORBIDDEN` unless `password` is the user's; `M_USER_DEACTIVATED` for deactivated ones."""
        self.ratelimiter.check("login", f"user:{user_id}")
        if not await self.accounts.check_password(user_id, password):
            account = self.accounts.account(user_id)
            if account is not None and account.get("deactivated"):
                raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
            raise MatrixError(403, "M_FORBIDDEN", "Invalid username or password")

    async def token_login(self, body: dict[str, Any], ip: str | None) -> LoginResult:
        """spec: POST /login with `m.login.token` (a token from POST /login/get_token)."""
        if ip is not None:
            self.ratelimiter.check("login", f"ip:{ip}")
        if self.login_tokens is None:
            raise MatrixError(400, "M_UNKNOWN", "token login is not available")
        options = self._session_options(body, ip)  # checked first: a malformed body does not spend the token
        user_id = self.login_tokens.spend(body.get("token"))
        account = self.accounts.account(user_id)
        if account is None or account.get("deactivated"):
            raise MatrixError(403, "M_USER_DEACTIVATED", "This account has been deactivated")
        return LoginResult(user_id, await self.accounts.new_session(user_id, **options))

    @staticmethod
    def _session_options(body: dict[str, Any], ip: str | None) -> dict[str, Any]:
        """The device and session a login asks for (spec: POST /login request fields), checked."""
        device_id = check_device_id(body.get("device_id"))
        name = body.get("initial_device_display_name")
        if name is not None and not isinstance(name, str):
            raise MatrixError(400, "M_BAD_JSON", "initial_device_display_name must be a string")
        refresh = body.get("refresh_token", False)
        if not isinstance(refresh, bool):
            raise MatrixError(400, "M_BAD_JSON", "refresh_token must be a boolean")
        return {"device_id": device_id, "display_name": name, "refreshable": refresh, "ip": ip}

    async def password_login(self, body: dict[str, Any], ip: str | None) -> LoginResult:
        """spec: POST /login with `m.login.password`."""
        if ip is not None:
            self.ratelimiter.check("login", f"ip:{ip}")
        password = body.get("password")
        if password is None:
            raise MatrixError(400, "M_MISSING_PARAM", "password is required")
        if not isinstance(password, str):
            raise MatrixError(400, "M_BAD_JSON", "password must be a string")
        options = self._session_options(body, ip)
        user_id = self.identify(body)
        await self.verify(user_id, password, ip)
        return LoginResult(user_id, await self.accounts.new_session(user_id, **options))

    async def _password_stage(self, session: UiaSession, auth: dict[str, Any], ip: str | None) -> None:
        """spec: UIA "Password-based": the identifier is optional when the session knows the user."""
        password = auth.get("password")
        if not isinstance(password, str):
            raise StageFailed("M_MISSING_PARAM" if password is None else "M_BAD_JSON", "password must be a string")
        if "identifier" in auth or "user" in auth or "medium" in auth:
            try:
                user_id = self.identify(auth)
            except MatrixError as e:
                raise StageFailed(e.errcode, e.message) from None
            if session.user_id is not None and user_id != session.user_id:
                raise StageFailed("M_FORBIDDEN", "you can only authenticate as yourself")
        elif session.user_id is not None:
            user_id = session.user_id
        else:
            raise StageFailed("M_MISSING_PARAM", "identifier is required")
        try:
            await self.verify(user_id, password, ip)
        except MatrixError as e:
            if e.status == 429:
                raise
            raise StageFailed(e.errcode, "Invalid password" if e.errcode == "M_FORBIDDEN" else e.message) from None
        session.user_id = user_id


__all__ = ["LOGIN_FLOWS", "Login", "LoginOptions", "LoginResult", "check_device_id", "check_password_value"]
