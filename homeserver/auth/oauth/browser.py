"""The browser side of the OAuth 2.0 API: who is signed in to our pages, signing in and signing up
there, and the user's go-ahead for a cross-signing reset.

- A browser session is a random cookie value mapped to a user id, for `web_session_lifetime_s`
  (in memory: a restart signs browsers out, never clients). It lets the login, consent, device and
  account pages know the user without asking for the password again.
- Sign-in with a password goes through the login service (its rate limits and identifier rules);
  sign-up through the registration service: with an invite (the invite page's code path, the invite
  used in the account's batch) or, when registration is open, without one.
- spec: client-server-api "OAuth authentication" (`m.oauth`): a client of an OAuth session that
  replaces its cross-signing keys sends the user to the account page; once the user confirms
  there, the replacement is allowed for `CROSS_SIGNING_RESET_WINDOW_S`.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable

from homeserver.auth.accounts import Accounts
from homeserver.auth.login import Login, check_password_value
from homeserver.auth.registration import Registration
from homeserver.config import Config
from homeserver.errors import MatrixError
from homeserver.ratelimit import RateLimiter

CROSS_SIGNING_RESET_WINDOW_S = 10 * 60
MAX_BROWSER_SESSIONS = 50_000


class BrowserAccounts:
    def __init__(
        self,
        config: Config,
        accounts: Accounts,
        login: Login,
        registration: Registration,
        ratelimiter: RateLimiter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.login = login
        self.registration = registration
        self.ratelimiter = ratelimiter
        self.clock = clock
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()  # cookie -> (user id, until)
        self._cross_signing: dict[str, float] = {}  # user id -> reset allowed until

    # -- browser sessions ------------------------------------------------------------------------

    def start(self, user_id: str) -> str:
        now = self.clock()
        while self._sessions and (
            len(self._sessions) >= MAX_BROWSER_SESSIONS or next(iter(self._sessions.values()))[1] <= now
        ):
            self._sessions.popitem(last=False)
        cookie = secrets.token_urlsafe(32)
        self._sessions[cookie] = (user_id, now + self.config.oauth.web_session_lifetime_s)
        return cookie

    def user(self, cookie: str | None) -> str | None:
        """The user a browser is signed in as (an account still active), else None."""
        found = self._sessions.get(cookie or "")
        if found is None:
            return None
        user_id, until = found
        account = self.accounts.account(user_id)
        if until <= self.clock() or account is None or account.get("deactivated"):
            self._sessions.pop(cookie or "", None)
            return None
        return user_id

    def end(self, cookie: str | None) -> None:
        self._sessions.pop(cookie or "", None)

    # -- signing in and up -----------------------------------------------------------------------

    async def password_login(self, username: str, password: str, ip: str | None) -> str:
        """The user id for a username (localpart or full id) and password; `MatrixError` otherwise."""
        if ip is not None:
            self.ratelimiter.check("login", f"ip:{ip}")
        if not username or not password:
            raise MatrixError(403, "M_FORBIDDEN", "Invalid username or password")
        user_id = self.login.user_of(username.strip())
        await self.login.verify(user_id, password, ip)
        return user_id

    def signup_open(self) -> bool:
        """Whether a new account can be made on the pages at all (with an invite or without)."""
        return self.config.registration != "closed" or not self.accounts.has_accounts()

    def invite_required(self) -> bool:
        return self.config.registration != "open"

    async def sign_up(self, username: str, password: str, invite: str | None) -> str:
        """A new account with a password: with `invite` through the invite page's sign-up, else only
        when registration is open. `MatrixError` as the invite page knows them."""
        if invite:
            return await self.registration.register_with_invite(invite, username, password)
        if self.invite_required():
            raise MatrixError(403, "M_FORBIDDEN", "an invite is needed to sign up")
        check_password_value(password)
        return await self.accounts.create(self.registration.localpart_for(username), password)

    # -- m.oauth: cross-signing reset ------------------------------------------------------------

    def allow_cross_signing_reset(self, user_id: str) -> None:
        now = self.clock()
        self._cross_signing = {u: t for u, t in self._cross_signing.items() if t > now}
        self._cross_signing[user_id] = now + CROSS_SIGNING_RESET_WINDOW_S

    def cross_signing_reset_allowed(self, user_id: str) -> bool:
        return self._cross_signing.get(user_id, 0.0) > self.clock()
