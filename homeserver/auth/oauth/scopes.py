"""Scopes of the OAuth 2.0 API.

spec: client-server-api "Scope", "Allocated scope tokens":
  - `urn:matrix:client:api:*` grants the whole client-server API;
  - `urn:matrix:client:device:<device_id>` allocates the device; exactly one in a login;
  - a device id uses RFC 3986 unreserved characters (the server MAY refuse others).
Element X (matrix-rust-sdk) still sends the unstable MSC2967 spellings
`urn:matrix:org.matrix.msc2967.client:api:*` / `…:device:<id>`: they are the same grants.
Other scope tokens (`openid`, from clients that speak OpenID Connect) are not granted and are left
out of the granted scope (RFC 6749 section 3.3 lets the server grant less than asked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from homeserver.auth.oauth.errors import OAuthError

API_SCOPES = ("urn:matrix:client:api:*", "urn:matrix:org.matrix.msc2967.client:api:*")
DEVICE_PREFIXES = ("urn:matrix:client:device:", "urn:matrix:org.matrix.msc2967.client:device:")
# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
# spec: device ids from the unreserved characters (RFC 3986 section 2.3); at most 255 like the legacy API
_DEVICE_ID = re.compile(r"[A-Za-z0-9._~-]{1,255}")
MAX_SCOPE_LENGTH = 2048


@dataclass(frozen=True)
class Grant:
    device_id: str
    scope: str  # the granted scope tokens, in the client's spelling, space-separated


def parse_scope(scope: str | None) -> Grant:
    """The device and the granted scope of a login request; `invalid_scope` otherwise."""
    if not scope or len(scope) > MAX_SCOPE_LENGTH:
        raise OAuthError("invalid_scope", "a scope is required")
    tokens = scope.split(" ")
    if any(not _SCOPE_TOKEN.fullmatch(t) for t in tokens):
        raise OAuthError("invalid_scope", "the scope is malformed")
    granted: list[str] = []
    devices: list[str] = []
    api = False
    for token in dict.fromkeys(tokens):
        if token in API_SCOPES:
            api = True
            granted.append(token)
            continue
        for prefix in DEVICE_PREFIXES:
            if token.startswith(prefix):
                devices.append(token[len(prefix) :])
                granted.append(token)
                break
    if not api:
        raise OAuthError("invalid_scope", "the scope must include urn:matrix:client:api:*")
    if len(set(devices)) != 1:  # the stable and unstable spelling of one device count once
        raise OAuthError("invalid_scope", "the scope must allocate exactly one device")
    if not _DEVICE_ID.fullmatch(devices[0]):
        raise OAuthError("invalid_scope", "a device id uses letters, digits and - . _ ~ only (1-255)")
    return Grant(devices[0], " ".join(granted))
