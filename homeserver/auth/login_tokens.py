"""Single-use login tokens: POST /login/get_token hands one out, `m.login.token` login spends it.

spec: client-server-api "Token-based" login and POST /_matrix/client/v1/login/get_token. Tokens
live two minutes, in memory only: a restart simply voids the few that are outstanding.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from homeserver.errors import MatrixError

LOGIN_TOKEN_LIFETIME_MS = 120_000
_MAX_OUTSTANDING = 10_000


class LoginTokens:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._tokens: dict[str, tuple[str, int]] = {}  # token -> (user id, expiry ms)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def issue(self, user_id: str) -> tuple[str, int]:
        now = self._now_ms()
        for token in [t for t, (_, exp) in self._tokens.items() if exp <= now]:
            del self._tokens[token]
        if len(self._tokens) >= _MAX_OUTSTANDING:
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "too many outstanding login tokens", retry_after_ms=1000)
        token = "mlt_" + secrets.token_urlsafe(24)
        self._tokens[token] = (user_id, now + LOGIN_TOKEN_LIFETIME_MS)
        return token, LOGIN_TOKEN_LIFETIME_MS

    def spend(self, token: object) -> str:
        """The user a token logs in as; the token is gone afterwards. 403 for an unknown or old one."""
        if not isinstance(token, str):
            raise MatrixError(400, "M_BAD_JSON", "token must be a string")
        found = self._tokens.pop(token, None)
        if found is None or found[1] <= self._now_ms():
            raise MatrixError(403, "M_FORBIDDEN", "Invalid or expired login token")
        return found[0]
