"""OpenID tokens: short-lived proof of identity a user hands to a third party (a widget, an
integration manager), which then asks this server over federation whose token it is.

spec: client-server-api "OpenID" (POST /user/{userId}/openid/request_token); server-server-api
"OpenID" (GET /openid/userinfo answers with the token's user while it has not expired).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import Final

from storage.openid import OpenIdStore

OPENID_TOKEN_LIFETIME_S = 3600


class OpenIdToken:
    __slots__ = ("access_token", "expires_in", "matrix_server_name")

    access_token: Final[str]
    matrix_server_name: Final[str]
    expires_in: Final[int]  # seconds

    def __init__(self, access_token: str, matrix_server_name: str, expires_in: int) -> None:
        self.access_token = access_token
        self.matrix_server_name = matrix_server_name
        self.expires_in = expires_in


class OpenIdTokens:
    def __init__(self, tokens: OpenIdStore, server_name: str, clock: Callable[[], float] = time.time) -> None:
        self._tokens = tokens
        self.server_name = server_name
        self.clock = clock

    async def issue(self, user_id: str) -> OpenIdToken:
        token = secrets.token_urlsafe(32)
        expires_at = int(self.clock() * 1000) + OPENID_TOKEN_LIFETIME_S * 1000
        batch = self._tokens.store.batch()
        with batch:
            self._tokens.put(token, user_id, expires_at, batch)
            await batch.commit()
        return OpenIdToken(token, self.server_name, OPENID_TOKEN_LIFETIME_S)

    def owner(self, token: str) -> str | None:
        """The user a token was issued to, while it has not expired."""
        found = self._tokens.get(token)
        if found is None:
            return None
        user_id, expires_at = found
        return user_id if int(self.clock() * 1000) < expires_at else None
