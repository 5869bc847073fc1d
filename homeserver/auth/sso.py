"""Single sign-on (`m.login.sso`) with upstream providers, and the hand-off back to the client.

spec: client-server-api "Client login via SSO":
  1. the client sends the browser to GET /login/sso/redirect[/{idpId}]?redirectUrl=…;
  2. we send it on to the provider, remembering the attempt: a random `state` (in the URL) bound
     to a random cookie (in the browser), a `nonce` and a PKCE verifier, single use, ten minutes;
  3. the provider sends it back to our callback with `code` and `state`: the state must be known,
     unused, fresh and the cookie must match; the code is exchanged and the ID token validated;
  4. the account: the one linked to (provider, subject); else, with `allow_existing_users`, the
     user of the same localpart (then linked); else a new one under the provider's `registration`
     policy, its localpart from the configured claim (Mastodon: the username), a number added when
     taken, its display name and (Mastodon) avatar imported, created with its link in one batch;
  5. a single-use, short-lived login token is added to `redirectUrl` (`loginToken`), which the
     client spends with `POST /login` `m.login.token`. Unless its host is in `sso.client_hosts`
     the user confirms first on a page of ours, so a crafted link cannot send their login away.

An attempt started with a `purpose` skips 4-5: the upstream identity, checked the same way, goes to
the handler registered for that purpose (`add_identity_handler`: it receives the provider id, the
subject and the attempt's context), e.g. completing the `m.login.sso` stage of a user-interactive
auth session (homeserver/auth/uia_sso.py) instead of logging in.

Providers: OpenID Connect (oidc.py) and Mastodon servers (mastodon.py), the same steps for both.

Registration policy, one per path (the password path is `registration` at the top of the config:
token, open or closed; each provider has its own `registration`, never affected by the password's):
  open    anyone with an account there gets one here (an invite, if brought along, is used too:
          its rooms are joined);
  invite  a new account needs an invite (a registration token: the same ones `token` asks for),
          brought from the invite page's button for the provider (`org.homeserver.invite`);
  closed  no new accounts through this provider: only accounts already linked (or, with
          `allow_existing_users`, the user of the same localpart) sign in.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from homeserver.auth.accounts import Accounts
from homeserver.auth.login_tokens import LoginTokens
from homeserver.auth.mastodon import AccountRefused, MastodonProvider
from homeserver.auth.oidc import Identity, OidcProvider, ProviderError, pkce_pair
from homeserver.auth.registration import Registration
from homeserver.config import Config, MastodonProviderConfig, OidcProviderConfig
from homeserver.errors import MatrixError
from storage.engine import Batch
from storage.external_ids import ExternalIdStore

ATTEMPT_LIFETIME_S = 600
MAX_ATTEMPTS = 10_000
MAX_REDIRECT_URL = 2048
CALLBACK_PATH = "/_homeserver/sso/callback"
INVITE_PARAM = "org.homeserver.invite"  # on /login/sso/redirect: sign up with this invite


class Upstream(Protocol):
    """What the hand-off needs of a provider (OpenID Connect or Mastodon)."""

    async def authorization_url(self, redirect_uri: str, state: str, nonce: str, code_challenge: str) -> str: ...

    async def exchange(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> Identity: ...

    async def fetch_avatar(self, url: str) -> tuple[bytes, str] | None: ...


# (user id, picture bytes, content type) -> the mxc:// URI it is stored at (the media repository)
AvatarStore = Callable[[str, bytes, str], Awaitable[str]]


class SsoFailed(Exception):
    """A login that cannot go on; `reason` picks the page's words, `status` its HTTP status."""

    def __init__(self, reason: str, status: int = 400, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason
        self.status = status
        self.detail = detail
        self.redirect_url = ""  # the failed attempt's redirectUrl, once the attempt is known to be this browser's


@dataclass(frozen=True)
class Attempt:
    provider: str
    cookie: str
    nonce: str
    verifier: str
    redirect_url: str
    invite: str | None
    expires: float
    purpose: str | None = None  # not a login: the identity goes to this purpose's handler
    context: str = ""  # what the handler needs to know (e.g. the UIA session id)


@dataclass(frozen=True)
class Completed:
    user_id: str
    redirect_to: str  # redirectUrl with the login token
    confirm: bool  # show the confirmation page first
    client_host: str
    welcome: bool = False  # signed up from the invite page: show its welcome page, no login token
    page: str = ""  # an identity handler's result page to show instead of the hand-off (e.g. "uia_done")


# (provider id, subject, the attempt's context) -> what the callback shows; raises SsoFailed to refuse
IdentityHandler = Callable[[str, str, str], Awaitable[Completed]]


def check_redirect_url(url: object) -> str:
    """spec: `redirectUrl` is required; we hand tokens only to absolute http(s) URLs."""
    if not isinstance(url, str) or not url:
        raise MatrixError(400, "M_MISSING_PARAM", "redirectUrl is required")
    parts = urlsplit(url)
    if len(url) > MAX_REDIRECT_URL or parts.scheme not in ("http", "https") or not parts.hostname:
        raise MatrixError(400, "M_INVALID_PARAM", "redirectUrl must be an absolute http(s) URL")
    return url


def _localpart_from(value: object) -> str | None:
    """A claim as a localpart: lower-cased, characters outside the grammar replaced."""
    if not isinstance(value, str) or not value.strip():
        return None
    local = re.sub(r"[^a-z0-9._=/+-]", "_", value.strip().lower().split("@")[0])
    return local[:64].strip("_") or None


class SingleSignOn:
    def __init__(
        self,
        config: Config,
        accounts: Accounts,
        registration: Registration,
        login_tokens: LoginTokens,
        external_ids: ExternalIdStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.accounts = accounts
        self.registration = registration
        self.login_tokens = login_tokens
        self.external_ids = external_ids
        self.clock = clock
        self.providers: dict[str, Upstream] = {p.id: OidcProvider(p, clock) for p in config.sso.oidc}
        self.providers.update({p.id: MastodonProvider(p, external_ids, clock) for p in config.sso.mastodon})
        self._configs: dict[str, OidcProviderConfig | MastodonProviderConfig] = {p.id: p for p in config.sso.oidc}
        self._configs.update({p.id: p for p in config.sso.mastodon})
        self.store_avatar: AvatarStore | None = None  # set at wiring: the media repository's upload
        self._attempts: OrderedDict[str, Attempt] = OrderedDict()  # state -> attempt
        self._handlers: dict[str, IdentityHandler] = {}

    def add_identity_handler(self, purpose: str, handler: IdentityHandler) -> None:
        """Send the identities of attempts started with `purpose` to `handler` instead of logging in."""
        self._handlers[purpose] = handler

    @property
    def enabled(self) -> bool:
        return bool(self.providers)

    def identity_providers(self) -> list[dict[str, Any]]:
        """spec: the `identity_providers` of the m.login.sso flow."""
        out = []
        for p in self._configs.values():
            entry: dict[str, Any] = {"id": p.id, "name": p.name}
            if p.icon:
                entry["icon"] = p.icon
            out.append(entry)
        return out

    def base_url(self) -> str:
        return (self.config.public_baseurl or f"http://{self.config.listen}").rstrip("/")

    def invite_page(self, token: str) -> str:
        return f"{self.base_url()}/invite/{token}"

    def signup_links(self, invite: str) -> list[tuple[str, str]]:
        """(provider name, URL) to sign up with each provider from the invite page (not those whose
        registration is closed)."""
        back = quote(self.invite_page(invite), safe="")
        return [
            (p.name, f"/_matrix/client/v3/login/sso/redirect/{p.id}?redirectUrl={back}&{INVITE_PARAM}={quote(invite)}")
            for p in self._configs.values()
            if p.registration != "closed"
        ]

    def callback_url(self, provider: str) -> str:
        return f"{self.base_url()}{CALLBACK_PATH}/{provider}"

    # -- 1-2: off to the provider ------------------------------------------------------------------

    async def start(
        self,
        provider: str | None,
        redirect_url: object,
        invite: str | None = None,
        *,
        purpose: str | None = None,
        context: str = "",
        cookie: str | None = None,
    ) -> tuple[str, str]:
        """(the provider's authorization URL, the cookie value binding this attempt to the browser).

        With `purpose` (a registered identity handler) there is no `redirectUrl`; `cookie` lets one
        page offer several providers under the one cookie it sets."""
        url = check_redirect_url(redirect_url) if purpose is None else ""
        if provider is None:
            if len(self.providers) != 1:
                raise MatrixError(400 if self.providers else 404, "M_NOT_FOUND", "choose an identity provider")
            provider = next(iter(self.providers))
        upstream = self.providers.get(provider)
        if upstream is None:
            raise MatrixError(404, "M_NOT_FOUND", f"unknown identity provider {provider}")
        now = self.clock()
        while self._attempts and (
            len(self._attempts) >= MAX_ATTEMPTS or next(iter(self._attempts.values())).expires <= now
        ):
            self._attempts.popitem(last=False)
        state, new_cookie, nonce = (secrets.token_urlsafe(24) for _ in range(3))
        cookie = cookie or new_cookie
        verifier, challenge = pkce_pair()
        try:
            auth_url = await upstream.authorization_url(self.callback_url(provider), state, nonce, challenge)
        except ProviderError as e:
            raise MatrixError(502, "M_UNKNOWN", f"the identity provider is unavailable: {e}") from None
        self._attempts[state] = Attempt(
            provider, cookie, nonce, verifier, url, invite, now + ATTEMPT_LIFETIME_S, purpose, context
        )
        return auth_url, cookie

    # -- 3-5: back from the provider ---------------------------------------------------------------

    async def finish(self, provider: str, query: dict[str, str], cookie: str | None) -> Completed:
        state = query.get("state", "")
        attempt = self._attempts.pop(state, None)  # single use, whatever happens next
        if attempt is None or attempt.provider != provider or attempt.expires <= self.clock():
            raise SsoFailed("state", 400, "unknown, used or expired state")
        if not cookie or not secrets.compare_digest(cookie, attempt.cookie):
            raise SsoFailed("state", 400, "the state is not this browser's")
        try:
            return await self._complete(provider, query, attempt)
        except SsoFailed as e:
            e.redirect_url = attempt.redirect_url  # where the page may offer to go back to
            raise

    async def _complete(self, provider: str, query: dict[str, str], attempt: Attempt) -> Completed:
        if "error" in query:
            reason = "denied" if query["error"] == "access_denied" else "provider"
            raise SsoFailed(reason, 403 if reason == "denied" else 502, query["error"][:100])
        code = query.get("code")
        if not code:
            raise SsoFailed("provider", 400, "no code")
        try:
            identity = await self.providers[provider].exchange(
                code, self.callback_url(provider), attempt.verifier, attempt.nonce
            )
        except AccountRefused as e:
            raise SsoFailed(f"account_{e.rule}", 403, str(e)) from None
        except ProviderError as e:
            raise SsoFailed("provider", 502, str(e)) from None
        if attempt.purpose is not None:
            return await self._handlers[attempt.purpose](identity.provider, identity.subject, attempt.context)
        user_id = await self._account_for(identity, attempt.invite)
        if attempt.invite is not None and attempt.redirect_url == self.invite_page(attempt.invite):
            return Completed(user_id, "", False, "", welcome=True)
        token, _ = self.login_tokens.issue(user_id)
        sep = "&" if urlsplit(attempt.redirect_url).query else "?"
        fragment_free, hash_sign, fragment = attempt.redirect_url.partition("#")
        redirect_to = f"{fragment_free}{sep}loginToken={token}{hash_sign}{fragment}"
        host = urlsplit(attempt.redirect_url).hostname or ""
        return Completed(user_id, redirect_to, host not in self.config.sso.client_hosts, host)

    async def _account_for(self, identity: Identity, invite: str | None) -> str:
        linked = self.external_ids.get(identity.provider, identity.subject)
        if linked is not None:
            return str(linked["user_id"])
        settings = self._configs[identity.provider]
        localpart_claim, display_claim = "preferred_username", "name"  # Mastodon's, as mastodon.py names them
        if isinstance(settings, OidcProviderConfig):
            localpart_claim, display_claim = settings.localpart_claim, settings.display_name_claim
        localpart = _localpart_from(identity.claims.get(localpart_claim)) or _localpart_from(
            identity.claims.get("preferred_username")
        )
        if settings.allow_existing_users and localpart is not None:
            user_id = self.accounts.user_id(localpart)
            if self.accounts.exists(user_id):
                await self._link(identity, user_id)
                return user_id
        if settings.registration == "closed":
            raise SsoFailed("no_account", 403, "this provider does not create accounts")
        if settings.registration == "invite" and invite is None:
            raise SsoFailed("invite_needed", 403, "an invite is needed")
        display = identity.claims.get(display_claim)
        return await self._create(identity, localpart, display if isinstance(display, str) else None, invite)

    async def _link(self, identity: Identity, user_id: str) -> None:
        batch = self.external_ids.store.batch()
        with batch:
            self.external_ids.put(identity.provider, identity.subject, self._record(user_id), batch)
            await batch.commit()

    def _record(self, user_id: str) -> dict[str, Any]:
        return {"user_id": user_id, "linked_ts": int(self.clock() * 1000)}

    async def _create(self, identity: Identity, localpart: str | None, display: str | None, invite: str | None) -> str:
        """A new account linked to the identity in the same batch (with the invite used, if any)."""
        candidates: list[str | None] = [None]  # none from the claims: a generated localpart
        if localpart:
            candidates = [localpart, *(f"{localpart}{n}" for n in range(2, 10))]
        avatar = await self._import_avatar(identity, candidates[0])
        for candidate in candidates:
            if candidate is not None:
                try:
                    self.accounts.check_available(candidate)
                except MatrixError:
                    continue

            def link(batch: Batch, user_id: str) -> None:
                self.external_ids.put(identity.provider, identity.subject, self._record(user_id), batch)

            try:
                return await self.registration.register_upstream(candidate, display, link, invite, avatar_url=avatar)
            except MatrixError as e:
                if e.errcode == "M_FORBIDDEN":
                    raise SsoFailed("invite_needed", 403, e.message) from None
                if e.errcode != "M_USER_IN_USE":
                    raise SsoFailed("provider", 400, e.message) from None
        raise SsoFailed("username", 409, "no free username for this account")

    async def _import_avatar(self, identity: Identity, localpart: str | None) -> str | None:
        """The upstream picture copied into our media repository, before the account is made so
        that it is created with it; None when there is none or it cannot be had."""
        upstream = self.providers.get(identity.provider)
        settings = self._configs[identity.provider]
        claim = settings.picture_claim if isinstance(settings, OidcProviderConfig) else "picture"
        picture = identity.claims.get(claim) if claim else None
        if self.store_avatar is None or upstream is None or not isinstance(picture, str):
            return None
        fetched = await upstream.fetch_avatar(picture)
        if fetched is None:
            return None
        uploader = self.accounts.user_id(localpart) if localpart else f"@{identity.provider}:{self.config.server_name}"
        try:
            return await self.store_avatar(uploader, *fetched)
        except MatrixError:
            return None  # too large for this server, say: the account comes without a picture
