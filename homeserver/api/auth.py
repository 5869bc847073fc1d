"""Who is calling, read from the HTTP request. The services below take plain values; this is the one
place that reads a request for them.

- The access token: `Authorization: Bearer`, or the deprecated `access_token` query parameter
  (spec: client-server-api "Using access tokens"), checked by the tokens service against the rules
  of the route that was called: whether it admits guests (marked at registration,
  `Router.add(..., guests=...)`) and whether a locked account may still call it.
- User-interactive re-authentication before a sensitive operation: the UIA session is bound to the
  request's method and path, and stages see the client's address.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from homeserver.api.http import access_token, guest_admitted
from homeserver.auth.tokens import Requester, Tokens
from homeserver.auth.uia import AuthRequired, UserInteractiveAuth
from homeserver.errors import MatrixError

# spec: "Account locking" — a locked account may still call /logout and /logout/all
LOCKED_MAY_CALL = ("/logout", "/logout/all")
# the one action an OAuth session confirms (with the `m.oauth` stage) rather than skipping UIA
CROSS_SIGNING_RESET = "replace your cross-signing keys"
OAUTH_STAGE = "m.oauth"


class RequestAuth:
    def __init__(self, tokens: Tokens, uia: UserInteractiveAuth) -> None:
        self.tokens = tokens
        self.uia = uia
        # set when the OAuth 2.0 API is wired: whether the user allowed a reset on the account page
        self.oauth_reset_allowed: Callable[[str], bool] = lambda user_id: False
        self.account_url = ""

    def requester(self, request: web.Request) -> Requester:
        """The caller; 401 `M_MISSING_TOKEN` without a token."""
        token = access_token(request)
        if token is None:
            raise MatrixError(401, "M_MISSING_TOKEN", "Missing access token")
        return self._admit(token, request)

    def optional_requester(self, request: web.Request) -> Requester | None:
        """The caller, or None for a request without a token (an invalid token is still a 401)."""
        token = access_token(request)
        return self._admit(token, request) if token is not None else None

    def _admit(self, token: str, request: web.Request) -> Requester:
        return self.tokens.authenticate(
            token,
            guests_admitted=guest_admitted(request),
            locked_admitted=request.path.endswith(LOCKED_MAY_CALL),
        )

    def refuse_oauth_uia(self, requester: Requester | None) -> None:
        """spec: "OAuth 2.0 API": endpoints that depend on user-interactive auth can't be used with an
        access token of the OAuth 2.0 API (only `/keys/device_signing/upload` has `m.oauth`): such
        sessions manage devices, the password and the account on the account page."""
        if requester is not None and requester.oauth_client is not None:
            raise MatrixError(
                403,
                "M_FORBIDDEN",
                f"this needs user-interactive auth, which sessions of the OAuth 2.0 API cannot use: "
                f"do it on the account page, {self.account_url}",
            )

    async def require(
        self, request: web.Request, requester: Requester, body: dict[str, Any], action: str, action_key: str = ""
    ) -> None:
        """Make the requester confirm `action` (password or single sign-on) before the route goes on
        (e.g. replacing cross-signing keys); `action_key` names it for the fallback page. Returns once
        authenticated; otherwise raises the 401.

        spec: "OAuth 2.0 API": UIA does not apply to sessions of the OAuth 2.0 API, except replacing
        cross-signing keys, confirmed with the `m.oauth` stage on the account page ("OAuth
        authentication")."""
        if requester.oauth_client is not None:
            if action != CROSS_SIGNING_RESET:
                self.refuse_oauth_uia(requester)
            if not self.oauth_reset_allowed(requester.user_id):
                url = f"{self.account_url}?{urlencode({'action': 'org.matrix.cross_signing_reset'})}"
                raise AuthRequired(
                    {
                        "flows": [{"stages": [OAUTH_STAGE]}],
                        "params": {OAUTH_STAGE: {"url": url}},
                        "session": secrets.token_urlsafe(16),
                    }
                )
            return
        await self.uia.confirm(
            requester, body, action, kind=f"{request.method} {request.path}", ip=request.remote, action_key=action_key
        )
