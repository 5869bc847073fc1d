"""The OAuth 2.0 authorization server: authorization requests and codes, the token endpoint's
grants, revocation, and the device authorization grant.

spec: client-server-api "OAuth 2.0 API":
  - authorization code grant (RFC 6749 4.1) with PKCE S256 (RFC 7636), `response_mode` query or
    fragment; an unknown client or a redirect URI that is not registered is shown as a page, never
    redirected to (RFC 6749 4.1.2.1); every other error goes back to the client with `state`;
  - codes live `code_lifetime_s`, are used once, and a second use revokes what the first issued
    (RFC 6749 4.1.2);
  - the device is created on the first token, with the id the scope allocated;
  - refresh token grant: rotating refresh tokens (Tokens.refresh_oauth); a replay after the grace
    period ends the session;
  - revocation (RFC 7009): any access or refresh token ends its session (device and tokens); an
    unknown token is still 200;
  - device authorization grant (RFC 8628): a device code for the client, a user code for the
    person, polling answered `authorization_pending`, `slow_down`, `access_denied`,
    `expired_token`.
Requests, codes and device codes are short-lived and kept in memory: a restart voids the few in
flight, and the client starts again.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from homeserver.auth.accounts import Accounts
from homeserver.auth.oauth.clients import (
    AUTHORIZATION_CODE,
    DEVICE_CODE,
    GRANT_TYPES,
    REFRESH_TOKEN,
    OAuthClients,
    redirect_matches,
)
from homeserver.auth.oauth.errors import OAuthError
from homeserver.auth.oauth.scopes import Grant, parse_scope
from homeserver.auth.tokens import OAuthGrant, RefreshReplayed, Session, Tokens
from homeserver.config import OAuthConfig
from homeserver.errors import MatrixError

REQUEST_LIFETIME_S = 30 * 60
MAX_PENDING = 10_000
_PKCE_VERIFIER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # RFC 8628 6.1: no vowels, no look-alikes
SLOW_DOWN_STEP_S = 5  # RFC 8628 3.5: the interval grows by 5 seconds on slow_down

V = TypeVar("V")


class NotRedirectable(Exception):
    """An authorization request that must not go back to the client (unknown client, bad redirect
    URI): the page says why. `reason` picks the words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class AuthRequest:
    id: str
    client_id: str
    client_name: str
    redirect_uri: str
    response_mode: str
    state: str | None
    code_challenge: str
    grant: Grant
    prompt: str | None
    login_hint: str | None
    expires: float


@dataclass
class Code:
    client_id: str
    redirect_uri: str
    code_challenge: str
    grant: Grant
    user_id: str
    expires: float
    spent_by: tuple[str, str] | None = None  # (user, device) once exchanged: a second use revokes it


@dataclass
class DeviceRequest:
    device_code: str
    user_code: str
    client_id: str
    client_name: str
    grant: Grant
    expires: float
    interval: int
    last_poll: float = 0.0
    user_id: str | None = None  # set when approved
    denied: bool = False


@dataclass(frozen=True)
class TokenAnswer:
    """A token endpoint answer (RFC 6749 5.1)."""

    session: Session
    scope: str

    def to_json(self) -> dict[str, Any]:
        expires_ms = self.session.expires_in_ms or 0
        return {
            "access_token": self.session.access_token,
            "token_type": "Bearer",
            "expires_in": expires_ms // 1000,
            "refresh_token": self.session.refresh_token,
            "scope": self.scope,
        }


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def _bounded_put(table: OrderedDict[str, V], key: str, value: V, now: float, expiry: Callable[[V], float]) -> None:
    while table and (len(table) >= MAX_PENDING or expiry(next(iter(table.values()))) <= now):
        table.popitem(last=False)
    table[key] = value


def add_params(uri: str, params: dict[str, str], mode: str) -> str:
    """`uri` with the response parameters in its query or its fragment (spec: "Callback")."""
    encoded = urlencode(params)
    if mode == "fragment":
        return f"{uri}#{encoded}"
    return f"{uri}{'&' if urlsplit(uri).query else '?'}{encoded}"


class OAuthServer:
    def __init__(
        self,
        settings: OAuthConfig,
        clients: OAuthClients,
        accounts: Accounts,
        tokens: Tokens,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.accounts = accounts
        self.tokens = tokens
        self.clock = clock
        self._requests: OrderedDict[str, AuthRequest] = OrderedDict()
        self._codes: OrderedDict[str, Code] = OrderedDict()
        self._device_codes: OrderedDict[str, DeviceRequest] = OrderedDict()
        self._user_codes: dict[str, str] = {}  # user code -> device code

    # -- authorization requests (RFC 6749 4.1.1) ---------------------------------------------------

    def authorization_request(self, query: dict[str, str]) -> AuthRequest:
        """Check an authorization request. `NotRedirectable` when the client or redirect URI cannot
        be trusted; `RedirectError` (an OAuthError with where to send it) for the rest."""
        client = self.clients.get(query.get("client_id"))
        if client is None:
            raise NotRedirectable("unknown_client")
        redirect_uri = query.get("redirect_uri", "")
        if not redirect_uri or not redirect_matches(client.get("redirect_uris", []), redirect_uri):
            raise NotRedirectable("bad_redirect")
        state = query.get("state")
        mode = query.get("response_mode") or "query"
        if mode not in ("query", "fragment"):
            raise RedirectError("invalid_request", "response_mode is query or fragment", redirect_uri, "query", state)
        if query.get("response_type") != "code" or AUTHORIZATION_CODE not in client.get("grant_types", []):
            raise RedirectError("unsupported_response_type", "the response type is code", redirect_uri, mode, state)
        challenge = query.get("code_challenge", "")
        if query.get("code_challenge_method") != "S256" or not 43 <= len(challenge) <= 128:
            raise RedirectError("invalid_request", "PKCE with S256 is required", redirect_uri, mode, state)
        try:
            grant = parse_scope(query.get("scope"))
        except OAuthError as e:
            raise RedirectError(e.error, e.description, redirect_uri, mode, state) from None
        prompt = query.get("prompt")
        if prompt is not None and not set(prompt.split()) <= {"create", "consent", "login", "none"}:
            raise RedirectError("invalid_request", "unsupported prompt value", redirect_uri, mode, state)
        if prompt == "none":  # OIDC: no page may be shown, and ours always asks for consent
            raise RedirectError("consent_required", "the user must consent", redirect_uri, mode, state)
        now = self.clock()
        request = AuthRequest(
            id=secrets.token_urlsafe(18),
            client_id=str(query["client_id"]),
            client_name=self.clients.name(client),
            redirect_uri=redirect_uri,
            response_mode=mode,
            state=state,
            code_challenge=challenge,
            grant=grant,
            prompt=prompt,
            login_hint=query.get("login_hint"),
            expires=now + REQUEST_LIFETIME_S,
        )
        _bounded_put(self._requests, request.id, request, now, lambda r: r.expires)
        return request

    def pending(self, request_id: str | None) -> AuthRequest | None:
        request = self._requests.get(request_id or "")
        if request is None or request.expires <= self.clock():
            return None
        return request

    def approve(self, request_id: str, user_id: str) -> str:
        """The user consented: the redirect with a fresh code (RFC 6749 4.1.2)."""
        request = self._requests.pop(request_id, None)
        if request is None or request.expires <= self.clock():
            raise NotRedirectable("expired")
        now = self.clock()
        code = secrets.token_urlsafe(32)
        grant = Code(
            request.client_id,
            request.redirect_uri,
            request.code_challenge,
            request.grant,
            user_id,
            now + self.settings.code_lifetime_s,
        )
        _bounded_put(self._codes, code, grant, now, lambda c: c.expires)
        params = {"code": code}
        if request.state is not None:
            params["state"] = request.state
        return add_params(request.redirect_uri, params, request.response_mode)

    def deny(self, request_id: str) -> str:
        request = self._requests.pop(request_id, None)
        if request is None:
            raise NotRedirectable("expired")
        params = {"error": "access_denied", "error_description": "The user declined the request."}
        if request.state is not None:
            params["state"] = request.state
        return add_params(request.redirect_uri, params, request.response_mode)

    # -- the token endpoint (RFC 6749 section 3.2) -------------------------------------------------

    async def token(self, form: dict[str, str]) -> dict[str, Any]:
        grant_type = form.get("grant_type")
        client_id = form.get("client_id")
        client = self.clients.get(client_id)
        if client is None or client_id is None:
            raise OAuthError("invalid_client", "unknown client", 401)
        if grant_type not in GRANT_TYPES:
            raise OAuthError("unsupported_grant_type", "grant types: authorization_code, refresh_token, device_code")
        if grant_type not in client.get("grant_types", []) and grant_type != REFRESH_TOKEN:
            raise OAuthError("unauthorized_client", f"the client did not register the {grant_type} grant")
        if grant_type == AUTHORIZATION_CODE:
            return (await self._code_grant(form, client_id, client)).to_json()
        if grant_type == REFRESH_TOKEN:
            return (await self._refresh_grant(form, client_id)).to_json()
        return (await self._device_grant(form, client_id, client)).to_json()

    async def _code_grant(self, form: dict[str, str], client_id: str, client: dict[str, Any]) -> TokenAnswer:
        code = self._codes.get(form.get("code", ""))
        if code is None:
            raise OAuthError("invalid_grant", "unknown or expired code")
        if code.spent_by is not None:
            # RFC 6749 4.1.2: a code used twice; what it issued is revoked
            del self._codes[form["code"]]
            user_id, device_id = code.spent_by
            await self.accounts.delete_devices(user_id, [device_id])
            raise OAuthError("invalid_grant", "the code was already used")
        if code.expires <= self.clock():
            del self._codes[form["code"]]
            raise OAuthError("invalid_grant", "the code has expired")
        if code.client_id != client_id or code.redirect_uri != form.get("redirect_uri"):
            raise OAuthError("invalid_grant", "the code was issued to another client or redirect URI")
        verifier = form.get("code_verifier", "")
        if not 43 <= len(verifier) <= 128 or not set(verifier) <= _PKCE_VERIFIER:
            raise OAuthError("invalid_grant", "code_verifier is missing or malformed")
        if not secrets.compare_digest(s256(verifier), code.code_challenge):
            raise OAuthError("invalid_grant", "code_verifier does not match the code challenge")
        code.spent_by = (code.user_id, code.grant.device_id)  # before the await: a racing second use fails
        tokens = await self._first_tokens(code.user_id, code.grant, client_id, client)
        return tokens

    async def _first_tokens(self, user_id: str, grant: Grant, client_id: str, client: dict[str, Any]) -> TokenAnswer:
        try:
            session = await self.accounts.new_session(
                user_id,
                device_id=grant.device_id,
                display_name=self.clients.name(client),
                oauth=OAuthGrant(client_id, grant.scope),
            )
        except MatrixError:
            raise OAuthError("invalid_grant", "the account is no longer active") from None
        return TokenAnswer(session, grant.scope)

    async def _refresh_grant(self, form: dict[str, str], client_id: str) -> TokenAnswer:
        token = form.get("refresh_token")
        if not token:
            raise OAuthError("invalid_request", "refresh_token is required")
        try:
            session, scope = await self.tokens.refresh_oauth(token, client_id)
        except LookupError:
            raise OAuthError("invalid_grant", "unknown refresh token") from None
        except RefreshReplayed as e:
            # spec: "Refresh token grant" — an old refresh token used again: the session is revoked
            await self.accounts.delete_devices(e.user_id, [e.device_id])
            raise OAuthError("invalid_grant", "the refresh token was already used; the session has ended") from None
        return TokenAnswer(session, scope)

    # -- revocation (RFC 7009) ---------------------------------------------------------------------

    async def revoke(self, form: dict[str, str]) -> None:
        """spec: "Token revocation": the access and refresh tokens of the session both go (the
        device is logged out); unknown tokens are fine."""
        token = form.get("token")
        if not token:
            raise OAuthError("invalid_request", "token is required")
        hint = form.get("token_type_hint")
        if hint is not None and hint not in ("access_token", "refresh_token"):
            raise OAuthError("unsupported_token_type", "token_type_hint is access_token or refresh_token")
        owner = self.tokens.token_owner(token)
        if owner is not None:
            await self.accounts.delete_devices(owner[0], [owner[1]])

    # -- the device authorization grant (RFC 8628) -------------------------------------------------

    def device_authorization(self, form: dict[str, str], verification_uri: str) -> dict[str, Any]:
        client_id = form.get("client_id")
        client = self.clients.get(client_id)
        if client is None or client_id is None:
            raise OAuthError("invalid_client", "unknown client", 401)
        if DEVICE_CODE not in client.get("grant_types", []):
            raise OAuthError("unauthorized_client", "the client did not register the device_code grant")
        grant = parse_scope(form.get("scope"))
        now = self.clock()
        device_code = secrets.token_urlsafe(32)
        while True:
            raw = "".join(secrets.choice(_USER_CODE_ALPHABET) for _ in range(8))
            user_code = f"{raw[:4]}-{raw[4:]}"
            if user_code not in self._user_codes:
                break
        request = DeviceRequest(
            device_code,
            user_code,
            client_id,
            self.clients.name(client),
            grant,
            now + self.settings.device_code_lifetime_s,
            self.settings.device_poll_interval_s,
        )

        def expiry(r: DeviceRequest) -> float:
            return r.expires

        while self._device_codes and (
            len(self._device_codes) >= MAX_PENDING or next(iter(self._device_codes.values())).expires <= now
        ):
            _, old = self._device_codes.popitem(last=False)
            self._user_codes.pop(old.user_code, None)
        _bounded_put(self._device_codes, device_code, request, now, expiry)
        self._user_codes[user_code] = device_code
        return {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": f"{verification_uri}?{urlencode({'user_code': user_code})}",
            "expires_in": self.settings.device_code_lifetime_s,
            "interval": request.interval,
        }

    def device_request(self, user_code: str) -> DeviceRequest | None:
        """The waiting device request a user typed the code of (any case, with or without the dash)."""
        cleaned = "".join(c for c in user_code.upper() if c.isalnum())
        device_code = self._user_codes.get(f"{cleaned[:4]}-{cleaned[4:]}")
        request = self._device_codes.get(device_code or "")
        if request is None or request.expires <= self.clock() or request.user_id is not None or request.denied:
            return None
        return request

    def device_decide(self, user_code: str, user_id: str, approve: bool) -> bool:
        request = self.device_request(user_code)
        if request is None:
            return False
        if approve:
            request.user_id = user_id
        else:
            request.denied = True
        self._user_codes.pop(request.user_code, None)
        return True

    async def _device_grant(self, form: dict[str, str], client_id: str, client: dict[str, Any]) -> TokenAnswer:
        request = self._device_codes.get(form.get("device_code", ""))
        if request is None or request.client_id != client_id:
            raise OAuthError("invalid_grant", "unknown device code")
        now = self.clock()
        if request.expires <= now:
            self._device_codes.pop(request.device_code, None)
            self._user_codes.pop(request.user_code, None)
            raise OAuthError("expired_token", "the device code has expired")
        if request.denied:
            self._device_codes.pop(request.device_code, None)
            raise OAuthError("access_denied", "the user declined the request")
        if request.user_id is None:
            too_soon = now - request.last_poll < request.interval
            request.last_poll = now
            if too_soon:
                request.interval += SLOW_DOWN_STEP_S
                raise OAuthError("slow_down", f"poll at most every {request.interval} seconds")
            raise OAuthError("authorization_pending", "the user has not answered yet")
        self._device_codes.pop(request.device_code, None)  # one use
        return await self._first_tokens(request.user_id, request.grant, client_id, client)


class RedirectError(OAuthError):
    """An authorization request error sent back to the client's redirect URI (RFC 6749 4.1.2.1)."""

    def __init__(self, error: str, description: str, redirect_uri: str, mode: str, state: str | None) -> None:
        super().__init__(error, description)
        params = {"error": error, "error_description": description}
        if state is not None:
            params["state"] = state
        self.location = add_params(redirect_uri, params, mode)
