"""A Mastodon server as a single-sign-on provider, configured by its URL alone.

Mastodon speaks OAuth 2 (Doorkeeper), not OpenID Connect: there is no ID token and no JWKS. Who
signed in is what the server itself says about the access token's owner. The steps
(docs.joinmastodon.org: methods/apps, methods/oauth, methods/accounts#verify_credentials,
spec/oauth):
  1. on first use the homeserver registers itself as an app (`POST /api/v1/apps`, our callback as
     `redirect_uris`) and keeps the client credentials in the store; a client the server later
     rejects (`invalid_client`, e.g. an app removed by an admin) is forgotten and registered again;
  2. the authorization code flow at `/oauth/authorize` with `state`, and PKCE S256 when the server's
     metadata (`/.well-known/oauth-authorization-server`, Mastodon 4.3+) lists it in
     `code_challenge_methods_supported`; without that document, the fixed endpoints and no PKCE;
     the scope is `profile` where listed in `scopes_supported` (4.3+), else `read:accounts`;
  3. the code is exchanged at `/oauth/token` (client_secret_post);
  4. the account from `GET /api/v1/accounts/verify_credentials` (the server refuses it with 403 for
     unconfirmed, unapproved, disabled or suspended logins), cross-checked against `/oauth/userinfo`
     when the metadata advertises it (4.4+): a userinfo naming another account stops the login;
     then the access token is revoked, it is not needed again;
  5. the subject is the account's `id` at that server (a rename keeps the Matrix account); the
     configured rules (bots, limited accounts, account age) are checked at every login.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson

from homeserver.auth.oidc import Identity, ProviderError
from homeserver.auth.pictures import fetch_picture, loopback_url
from homeserver.config import MastodonProviderConfig
from homeserver.http_body import read_at_most
from storage.external_ids import ExternalIdStore

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 15
MAX_RESPONSE_BYTES = 256 * 1024
METADATA_TTL_S = 3600
CLIENT_CHECK_S = 86_400  # how often the stored app is shown to still work (a client_credentials grant)
APP_NAME = "Matrix homeserver"


class AccountRefused(ProviderError):
    """The Mastodon account may not sign in here: `rule` is bot, restricted or young."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def check_rules(account: dict[str, Any], config: MastodonProviderConfig, now: float) -> None:
    """The configured rules on an account (Mastodon's Account entity); raises AccountRefused.
    `suspended` and `limited` are extra attributes Mastodon sets only when true."""
    if account.get("suspended") is True:
        raise AccountRefused("restricted", "the account is suspended")
    if account.get("limited") is True and not config.allow_limited:
        raise AccountRefused("restricted", "the account is limited by the server's moderators")
    if account.get("bot") is True and not config.allow_bots:
        raise AccountRefused("bot", "the account is a bot")
    if config.min_account_age_days > 0:
        created = account.get("created_at")
        try:
            created_s = datetime.fromisoformat(str(created).replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise AccountRefused("young", f"the account's age is unknown ({created!r})") from None
        if now - created_s < config.min_account_age_days * 86_400:
            raise AccountRefused("young", "the account is too new")


class MastodonProvider:
    def __init__(
        self,
        config: MastodonProviderConfig,
        clients: ExternalIdStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.id = config.id
        self.url = config.url
        self.clients = clients
        self.clock = clock
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._registering = asyncio.Lock()  # one registration at a time: concurrent first logins share it
        self._revoking: set[asyncio.Task[None]] = set()

    # -- talking to the server ---------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        url: str,
        *,
        data: dict[str, str] | None = None,
        token: str | None = None,
        limit: int = MAX_RESPONSE_BYTES,
    ) -> tuple[int, str, bytes]:
        """(status, content type, body): https only (loopback aside), no redirects followed, a
        deadline on the whole exchange and a cap on the body."""
        if urlsplit(url).scheme != "https" and not loopback_url(url):
            raise ProviderError(f"{self.id}: refusing a non-https URL {url}")
        headers = {"Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(method, url, data=data, headers=headers, allow_redirects=False) as resp,
            ):
                body = await read_at_most(resp.content, limit)
                status, content_type = resp.status, resp.content_type
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ProviderError(f"{self.id}: {url} could not be reached ({type(e).__name__})") from None
        if len(body) > limit:
            raise ProviderError(f"{self.id}: {url} answered too much")
        return status, content_type, body

    async def _json(
        self, method: str, url: str, *, data: dict[str, str] | None = None, token: str | None = None
    ) -> tuple[int, dict[str, Any] | None]:
        """(status, the JSON object answered or None when the body is not one)."""
        status, _, body = await self._request(method, url, data=data, token=token)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            return status, None
        return status, parsed if isinstance(parsed, dict) else None

    async def metadata(self) -> dict[str, Any]:
        """The server's OAuth metadata (RFC 8414, Mastodon 4.3+), or {} when it has none."""
        now = self.clock()
        if self._metadata is not None and self._metadata[0] > now:
            return self._metadata[1]
        status, doc = await self._json("GET", f"{self.url}/.well-known/oauth-authorization-server")
        if status != 200 or doc is None:
            doc = {}  # an older Mastodon: the fixed endpoints, no PKCE
        for key in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "revocation_endpoint"):
            endpoint = doc.get(key)
            if endpoint is not None and (not isinstance(endpoint, str) or _origin(endpoint) != self.url):
                raise ProviderError(f"{self.id}: the metadata's {key} is not on {self.url}")
        self._metadata = (now + METADATA_TTL_S, doc)
        return doc

    def _endpoint(self, doc: dict[str, Any], key: str, default_path: str) -> str:
        value = doc.get(key)
        return value if isinstance(value, str) else f"{self.url}{default_path}"

    @staticmethod
    def _pkce(doc: dict[str, Any]) -> bool:
        methods = doc.get("code_challenge_methods_supported")
        return isinstance(methods, list) and "S256" in methods

    @staticmethod
    def _scope(doc: dict[str, Any]) -> str:
        scopes = doc.get("scopes_supported")
        # `profile` (4.3+) reads only one's own account; older servers: read:accounts
        return "profile" if isinstance(scopes, list) and "profile" in scopes else "read:accounts"

    # -- the app ----------------------------------------------------------------------------------

    def _due(self, record: dict[str, Any]) -> bool:
        checked = record.get("checked_ts")
        return not isinstance(checked, int) or checked + CLIENT_CHECK_S * 1000 <= self.clock() * 1000

    def _stored_client(self, redirect_uri: str) -> dict[str, Any] | None:
        record = self.clients.client(self.id)
        if record is None or record.get("url") != self.url or record.get("redirect_uri") != redirect_uri:
            return None  # another server or another callback (public_baseurl changed): a new app
        return record

    async def client(self, redirect_uri: str) -> dict[str, Any]:
        """The app registered at the server for this callback: registered on first use, once even
        when several logins start together, written in one batch."""
        record = self._stored_client(redirect_uri)
        if record is not None and not self._due(record):
            return record
        async with self._registering:
            record = self._stored_client(redirect_uri)
            if record is not None and self._due(record):
                record = await self._recheck(record)
            if record is None:
                record = await self._register(redirect_uri)
            return record

    async def _register(self, redirect_uri: str) -> dict[str, Any]:
        doc = await self.metadata()
        scope = self._scope(doc)
        form = {"client_name": APP_NAME, "redirect_uris": redirect_uri, "scopes": scope}
        website = _origin(redirect_uri)
        if website.startswith("https://"):
            form["website"] = website
        status, app = await self._json("POST", f"{self.url}/api/v1/apps", data=form)
        if status != 200 or app is None:
            raise ProviderError(f"{self.id}: registering the app answered {status}")
        client_id, client_secret = app.get("client_id"), app.get("client_secret")
        if not isinstance(client_id, str) or not client_id or not isinstance(client_secret, str) or not client_secret:
            raise ProviderError(f"{self.id}: registering the app gave no client credentials")
        now_ms = int(self.clock() * 1000)
        record = {
            "url": self.url,
            "redirect_uri": redirect_uri,
            "client_id": client_id,
            "client_secret": client_secret,
            "scope": scope,
            "registered_ts": now_ms,
            "checked_ts": now_ms,
        }
        await self._write(record)
        log.info("registered as an app at %s (%s)", self.url, self.id)
        return record

    async def _recheck(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """Whether the server still knows the app (a client_credentials grant, which also keeps an
        app alive on Mastodon before 4.3): None when it answers `invalid_client`; any other answer
        keeps the app until the next check (the login itself will tell)."""
        doc = await self.metadata()
        form = {
            "grant_type": "client_credentials",
            "client_id": record["client_id"],
            "client_secret": record["client_secret"],
            "scope": record["scope"],
        }
        status, body = await self._json("POST", self._endpoint(doc, "token_endpoint", "/oauth/token"), data=form)
        if status == 401 or (body is not None and body.get("error") == "invalid_client"):
            log.info("%s no longer knows our app: registering again", self.url)
            return None
        record = {**record, "checked_ts": int(self.clock() * 1000)}
        await self._write(record)
        return record

    async def _write(self, record: dict[str, Any]) -> None:
        batch = self.clients.store.batch()
        with batch:
            self.clients.put_client(self.id, record, batch)
            await batch.commit()

    async def forget_client(self) -> None:
        batch = self.clients.store.batch()
        with batch:
            self.clients.delete_client(self.id, batch)
            await batch.commit()

    # -- the flow ----------------------------------------------------------------------------------

    async def authorization_url(self, redirect_uri: str, state: str, nonce: str, code_challenge: str) -> str:
        """Where to send the browser (`nonce` is OpenID Connect's: Mastodon has none)."""
        doc = await self.metadata()
        app = await self.client(redirect_uri)
        query = {
            "response_type": "code",
            "client_id": app["client_id"],
            "redirect_uri": redirect_uri,
            "scope": app["scope"],
            "state": state,
        }
        if self._pkce(doc):
            query["code_challenge"] = code_challenge
            query["code_challenge_method"] = "S256"
        endpoint = self._endpoint(doc, "authorization_endpoint", "/oauth/authorize")
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)

    async def exchange(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> Identity:
        """Trade the code for an access token and return the account it belongs to."""
        doc = await self.metadata()
        app = self._stored_client(redirect_uri)
        if app is None:
            raise ProviderError(f"{self.id}: no app registered for this login")
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "client_id": app["client_id"],
            "client_secret": app["client_secret"],
            "redirect_uri": redirect_uri,
            "scope": app["scope"],
        }
        if self._pkce(doc):
            form["code_verifier"] = code_verifier
        status, tokens = await self._json("POST", self._endpoint(doc, "token_endpoint", "/oauth/token"), data=form)
        error = tokens.get("error") if tokens is not None else None
        if status == 401 or error == "invalid_client":
            await self.forget_client()  # the next login registers again
            raise ProviderError(f"{self.id}: the server no longer knows our app")
        if status != 200 or tokens is None:
            said = error if isinstance(error, str) else "?"
            raise ProviderError(f"{self.id}: the token endpoint answered {status} ({said:.100})")
        access_token = tokens.get("access_token")
        if not isinstance(access_token, str) or not access_token:
            raise ProviderError(f"{self.id}: the token response has no access_token")
        try:
            account = await self._account(doc, access_token)
        finally:
            self._revoke_later(doc, app, access_token)
        check_rules(account, self.config, self.clock())
        claims: dict[str, Any] = {"preferred_username": account["username"]}
        if isinstance(account.get("display_name"), str) and account["display_name"].strip():
            claims["name"] = account["display_name"].strip()
        avatar = account.get("avatar_static") or account.get("avatar")
        if isinstance(avatar, str) and not urlsplit(avatar).path.endswith("/missing.png"):
            claims["picture"] = avatar
        return Identity(self.id, account["id"], claims)

    async def _account(self, doc: dict[str, Any], access_token: str) -> dict[str, Any]:
        url = f"{self.url}/api/v1/accounts/verify_credentials"
        status, account = await self._json("GET", url, token=access_token)
        if status == 403:
            # Mastodon: unconfirmed e-mail, pending approval, disabled or suspended login
            message = account.get("error") if account is not None else None
            raise AccountRefused("restricted", f"the server refuses the account ({message!s:.100})")
        if status != 200 or account is None:
            raise ProviderError(f"{self.id}: verify_credentials answered {status}")
        account_id, username = account.get("id"), account.get("username")
        if not isinstance(account_id, str) or not account_id or len(account_id) > 255:
            raise ProviderError(f"{self.id}: the account has no usable id")
        if not isinstance(username, str) or not username:
            raise ProviderError(f"{self.id}: the account has no username")
        userinfo_url = doc.get("userinfo_endpoint")
        if isinstance(userinfo_url, str):
            # a second opinion only: verify_credentials decides; a userinfo that cannot be read is
            # logged, one that names another account stops the login
            status, info = await self._json("GET", userinfo_url, token=access_token)
            if status != 200 or info is None:
                log.info("%s: userinfo answered %s; going by verify_credentials", self.id, status)
            elif info.get("preferred_username", username) != username:
                raise ProviderError(f"{self.id}: userinfo and verify_credentials name different accounts")
        return account

    def _revoke_later(self, doc: dict[str, Any], app: dict[str, Any], access_token: str) -> None:
        """Revoke the access token in the background: it was only needed to read the account."""
        form = {"client_id": app["client_id"], "client_secret": app["client_secret"], "token": access_token}
        url = self._endpoint(doc, "revocation_endpoint", "/oauth/revoke")

        async def revoke() -> None:
            try:
                await self._request("POST", url, data=form)
            except ProviderError as e:
                log.info("could not revoke a token at %s: %s", self.url, e)

        task = asyncio.get_running_loop().create_task(revoke())
        self._revoking.add(task)
        task.add_done_callback(self._revoking.discard)

    async def fetch_avatar(self, url: str) -> tuple[bytes, str] | None:
        """The account's picture (bytes, content type), or None when it cannot be had: a missing
        avatar never stops a sign-up."""
        return await fetch_picture(self.id, url)
