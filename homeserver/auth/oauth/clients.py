"""Dynamic client registration (RFC 7591) with the Matrix rules on client metadata.

spec: client-server-api "Client registration", "Client metadata", "Redirect URI validation":
  - public clients only: `token_endpoint_auth_method` is `none` (no secrets are issued);
  - `client_uri` is required, https, without user or password; `logo_uri`, `tos_uri`, `policy_uri`
    must share its host (or be a subdomain of it) and are dropped otherwise;
  - no redirect URI has a fragment;
  - `web` clients (the default): https redirect URIs on the client URI's host or a subdomain, no
    user or password;
  - `native` clients: a private-use scheme that is the client URI's host in reverse-DNS order (or
    starts with it followed by a dot), with no authority (`com.example.app:/cb`, `com.example:cb`);
    `http` on `localhost`, `127.0.0.1` or `[::1]` without a port (any port is then accepted when
    authorizing); or a claimed https URI under the web rules.
The client id is a hash of the accepted metadata: identical registrations share one client (the
spec's note on de-duplication), and registering cannot grow the store without bound.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

from homeserver.auth.oauth.errors import OAuthError
from storage.oauth_clients import OAuthClientStore

AUTHORIZATION_CODE = "authorization_code"
REFRESH_TOKEN = "refresh_token"
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
GRANT_TYPES = (AUTHORIZATION_CODE, REFRESH_TOKEN, DEVICE_CODE)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
MAX_URIS = 20
MAX_URI_LENGTH = 2048
MAX_NAME_LENGTH = 200
_HUMAN_URIS = ("logo_uri", "tos_uri", "policy_uri")


def _bad(message: str, error: str = "invalid_client_metadata") -> OAuthError:
    return OAuthError(error, message)


def _host_within(host: str | None, base: str) -> bool:
    return host is not None and (host == base or host.endswith("." + base))


def _https_uri(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_URI_LENGTH:
        raise _bad(f"{what} must be a URI")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise _bad(f"{what} is not a valid URI") from None
    if parts.scheme != "https" or not parts.hostname:
        raise _bad(f"{what} must be an https URI")
    if parts.username is not None or parts.password is not None:
        raise _bad(f"{what} must not carry a user or password")
    return value


def check_redirect_uri(uri: object, client_host: str, application_type: str) -> str:
    """One registered redirect URI, checked against the spec's rules; `invalid_redirect_uri` if not."""
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_LENGTH:
        raise _bad("a redirect URI must be a non-empty string", "invalid_redirect_uri")
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise _bad(f"{uri} is not a valid URI", "invalid_redirect_uri") from None
    if "#" in uri:
        raise _bad("a redirect URI must not have a fragment", "invalid_redirect_uri")
    if parts.scheme == "https":
        if parts.username is not None or parts.password is not None:
            raise _bad("a redirect URI must not carry a user or password", "invalid_redirect_uri")
        if not _host_within(parts.hostname, client_host):
            raise _bad(f"{uri} is not on the client URI's host {client_host}", "invalid_redirect_uri")
        return uri
    if application_type != "native":
        raise _bad("a web client's redirect URIs use https", "invalid_redirect_uri")
    if parts.scheme == "http":
        if parts.hostname not in LOOPBACK_HOSTS or parts.username is not None:
            raise _bad("http redirect URIs must be on localhost, 127.0.0.1 or [::1]", "invalid_redirect_uri")
        if port is not None:
            raise _bad("a loopback redirect URI is registered without a port", "invalid_redirect_uri")
        return uri
    # a private-use scheme: the client's host reversed, then optional sub-labels; no authority
    reverse = ".".join(reversed(client_host.split(".")))
    if not (parts.scheme == reverse or parts.scheme.startswith(reverse + ".")) or "." not in parts.scheme:
        raise _bad(f"the scheme of {uri} must be {reverse} in reverse-DNS order", "invalid_redirect_uri")
    if uri[len(parts.scheme) + 1 :].startswith("//"):
        raise _bad(f"{uri} must not have an authority (one slash after the scheme)", "invalid_redirect_uri")
    return uri


def redirect_matches(registered: list[str], asked: str) -> bool:
    """Whether `asked` is a registered redirect URI; a loopback one matches on any port (RFC 8252 7.3)."""
    if asked in registered:
        return True
    try:
        parts = urlsplit(asked)
        port = parts.port
    except ValueError:
        return False
    if parts.scheme != "http" or parts.hostname not in LOOPBACK_HOSTS or port is None:
        return False
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return parts._replace(netloc=host or "").geturl() in registered


def validate_metadata(body: dict[str, Any]) -> dict[str, Any]:
    """The metadata the server registers for `body` (RFC 7591 section 2, with the Matrix rules)."""
    client_uri = _https_uri(body.get("client_uri"), "client_uri")
    client_host = urlsplit(client_uri).hostname or ""
    application_type = body.get("application_type", "web")
    if application_type not in ("web", "native"):
        raise _bad("application_type is web or native")
    auth_method = body.get("token_endpoint_auth_method", "none")
    if auth_method != "none":
        raise _bad("only public clients are supported: token_endpoint_auth_method must be none")
    grant_types = body.get("grant_types", [AUTHORIZATION_CODE])
    if not isinstance(grant_types, list) or not all(isinstance(g, str) for g in grant_types):
        raise _bad("grant_types must be a list of strings")
    granted = [g for g in GRANT_TYPES if g in grant_types]  # unknown grant types are not registered
    response_types = body.get("response_types", ["code"] if AUTHORIZATION_CODE in granted else [])
    if not isinstance(response_types, list) or any(r != "code" for r in response_types):
        raise _bad("the only response type is code")
    if AUTHORIZATION_CODE in granted and "code" not in response_types:
        raise _bad("the authorization_code grant needs the code response type")
    uris = body.get("redirect_uris", [])
    if not isinstance(uris, list) or len(uris) > MAX_URIS:
        raise _bad(f"redirect_uris must be a list of at most {MAX_URIS} URIs", "invalid_redirect_uri")
    if AUTHORIZATION_CODE in granted and not uris:
        raise _bad("the authorization_code grant needs redirect_uris", "invalid_redirect_uri")
    redirect_uris = [check_redirect_uri(u, client_host, application_type) for u in uris]
    metadata: dict[str, Any] = {
        "client_uri": client_uri,
        "application_type": application_type,
        "token_endpoint_auth_method": "none",
        "grant_types": granted,
        "response_types": ["code"] if "code" in response_types else [],
        "redirect_uris": redirect_uris,
    }
    name = body.get("client_name")
    if isinstance(name, str) and name.strip():
        metadata["client_name"] = name.strip()[:MAX_NAME_LENGTH]
    for key in _HUMAN_URIS:  # spec: these share the client URI's host; others are ignored
        value = body.get(key)
        try:
            if value is not None and _host_within(urlsplit(_https_uri(value, key)).hostname, client_host):
                metadata[key] = value
        except OAuthError:
            pass
    return metadata


def client_id_for(metadata: dict[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return "oc_" + digest[:26]


class OAuthClients:
    def __init__(self, store: OAuthClientStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    async def register(self, body: dict[str, Any]) -> dict[str, Any]:
        """RFC 7591 section 3.2.1: the client id with every registered metadata value."""
        metadata = validate_metadata(body)
        client_id = client_id_for(metadata)
        stored = self.store.get(client_id)
        if stored is None:
            stored = {**metadata, "client_id_issued_at": int(self.clock())}
            batch = self.store.store.batch()
            with batch:
                self.store.put(client_id, stored, batch)
                await batch.commit()
        return {"client_id": client_id, **stored}

    def get(self, client_id: str | None) -> dict[str, Any] | None:
        if not client_id or len(client_id) > 100:
            return None
        return self.store.get(client_id)

    @staticmethod
    def name(client: dict[str, Any]) -> str:
        """What the pages call a client: its name, else its host."""
        name = client.get("client_name")
        return name if isinstance(name, str) and name else urlsplit(str(client["client_uri"])).hostname or "?"
