"""An upstream OpenID Connect provider: discovery, the authorization URL (code flow with PKCE S256,
`state`, `nonce`), the code exchange, and ID-token validation with joserfc (a maintained JOSE
library).

OpenID Connect Core 1.0 §3.1.3.7 "ID Token Validation", in order:
  2. `iss` MUST exactly match the issuer of the discovery document;
  3. `aud` MUST contain our client id (and `azp`, when there are several audiences, MUST be it);
  6. the signature MUST verify with the provider's keys (JWKS) and an algorithm we accept;
  9. `exp` MUST be in the future (a little clock skew allowed);
  11. `nonce` MUST equal the one we sent.
Discovery (OpenID Connect Discovery 1.0 §4.3): the document's `issuer` MUST equal the configured one.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from homeserver.auth.pictures import fetch_picture, loopback_url
from homeserver.config import OidcProviderConfig

if TYPE_CHECKING:
    from joserfc.jwk import KeySet
from homeserver.http_body import read_at_most

ACCEPTED_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]
CLOCK_SKEW_S = 120
METADATA_TTL_S = 3600
HTTP_TIMEOUT_S = 15
MAX_RESPONSE_BYTES = 256 * 1024


class ProviderError(Exception):
    """The provider failed or answered something we must not trust; the message is for the log and
    the error page (never includes secrets)."""


@dataclass(frozen=True)
class Identity:
    provider: str
    subject: str
    claims: dict[str, Any]


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge): RFC 7636 §4.1-4.2."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class OidcProvider:
    def __init__(self, config: OidcProviderConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.id = config.id
        self.clock = clock
        self._metadata: tuple[float, dict[str, Any]] | None = None
        self._keys: KeySet | None = None

    # -- talking to the provider -------------------------------------------------------------------

    async def fetch_avatar(self, url: str) -> tuple[bytes, str] | None:
        """The picture the provider's claim names (bytes, content type), or None."""
        return await fetch_picture(self.id, url)

    async def _get_json(self, url: str, *, data: dict[str, str] | None = None) -> dict[str, Any]:
        if urlsplit(url).scheme != "https" and not loopback_url(url):
            raise ProviderError(f"{self.id}: refusing a non-https provider URL {url}")
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                method = "POST" if data is not None else "GET"
                async with session.request(method, url, data=data, headers={"Accept": "application/json"}) as resp:
                    body = await read_at_most(resp.content, MAX_RESPONSE_BYTES)
                    status = resp.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ProviderError(f"{self.id}: {url} could not be reached ({type(e).__name__})") from None
        if len(body) > MAX_RESPONSE_BYTES:
            raise ProviderError(f"{self.id}: {url} answered too much")
        import json

        try:
            parsed = json.loads(body)
        except ValueError:
            raise ProviderError(f"{self.id}: {url} answered {status} with no JSON") from None
        if not isinstance(parsed, dict):
            raise ProviderError(f"{self.id}: {url} answered {status} with no JSON object")
        if status != 200:
            error = parsed.get("error")
            raise ProviderError(f"{self.id}: {url} answered {status} ({error if isinstance(error, str) else '?'})")
        return parsed

    async def metadata(self) -> dict[str, Any]:
        now = self.clock()
        if self._metadata is not None and self._metadata[0] > now:
            return self._metadata[1]
        issuer = self.config.issuer.rstrip("/")
        doc = await self._get_json(f"{issuer}/.well-known/openid-configuration")
        # Discovery §4.3: the issuer in the document MUST be the one we asked
        if doc.get("issuer") not in (self.config.issuer, issuer):
            raise ProviderError(f"{self.id}: discovery names issuer {doc.get('issuer')!r}, not {self.config.issuer!r}")
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            if not isinstance(doc.get(key), str):
                raise ProviderError(f"{self.id}: discovery has no {key}")
        self._metadata = (now + METADATA_TTL_S, doc)
        return doc

    async def _key_set(self, refresh: bool = False) -> KeySet:
        # joserfc (with cryptography, some 15 MiB) is loaded when a provider is first used, not at start
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        if self._keys is None or refresh:
            doc = await self.metadata()
            raw = await self._get_json(doc["jwks_uri"])
            try:
                self._keys = KeySet.import_key_set(raw)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError) as e:
                raise ProviderError(f"{self.id}: unusable JWKS ({e})") from None
        return self._keys

    # -- the flow ----------------------------------------------------------------------------------

    async def authorization_url(self, redirect_uri: str, state: str, nonce: str, code_challenge: str) -> str:
        doc = await self.metadata()
        query = {
            "response_type": "code",
            "client_id": self.config.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(dict.fromkeys(["openid", *self.config.scopes])),
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        endpoint: str = doc["authorization_endpoint"]
        return endpoint + ("&" if "?" in endpoint else "?") + urlencode(query)

    async def exchange(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> Identity:
        """Trade the code for tokens and return the validated ID token's identity."""
        doc = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
            "client_id": self.config.client_id,
        }
        if self.config.client_secret is not None:
            form["client_secret"] = self.config.client_secret  # client_secret_post
        tokens = await self._get_json(doc["token_endpoint"], data=form)
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise ProviderError(f"{self.id}: the token response has no id_token")
        claims = await self.validate_id_token(id_token, nonce)
        return Identity(self.id, str(claims["sub"]), claims)

    async def validate_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        """OpenID Connect Core §3.1.3.7 (see the module docstring)."""
        from joserfc import jwt
        from joserfc.errors import JoseError

        doc = await self.metadata()
        try:
            token = jwt.decode(id_token, await self._key_set(), algorithms=ACCEPTED_ALGORITHMS)
        except JoseError:
            # a key we do not know yet (rotation): fetch the key set once more before refusing
            try:
                token = jwt.decode(id_token, await self._key_set(refresh=True), algorithms=ACCEPTED_ALGORITHMS)
            except (JoseError, ValueError) as e:
                raise ProviderError(
                    f"{self.id}: the ID token's signature does not verify ({type(e).__name__})"
                ) from None
        except ValueError as e:
            raise ProviderError(f"{self.id}: the ID token is malformed ({e})") from None
        claims = dict(token.claims)
        if claims.get("iss") != doc["issuer"]:
            raise ProviderError(f"{self.id}: the ID token's issuer {claims.get('iss')!r} is wrong")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if self.config.client_id not in audiences:
            raise ProviderError(f"{self.id}: the ID token is not for us (aud)")
        if len(audiences) > 1 and claims.get("azp") != self.config.client_id:
            raise ProviderError(f"{self.id}: the ID token's azp is not us")
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp + CLOCK_SKEW_S < self.clock():
            raise ProviderError(f"{self.id}: the ID token has expired")
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], nonce):
            raise ProviderError(f"{self.id}: the ID token's nonce does not match")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub or len(sub) > 255:
            raise ProviderError(f"{self.id}: the ID token has no usable subject")
        return claims
