"""Request authentication between servers: the `X-Matrix` Authorization header.

spec: server-server-api "Request Authentication". The signed object is
`{method, uri, origin, destination, content?}` (uri: the path from `/_matrix/...` with the query
string, as sent); it is signed with the JSON signing algorithm, and the header carries
`origin`, `destination`, `key` and `sig`. Parsing follows RFC 9110 section 11.4 as the spec says:
one or more spaces after the scheme, case-insensitive parameter names, values as tokens or
quoted strings with backslash escapes, spaces and tabs around commas, unknown parameters
ignored; colons are allowed in unquoted values for older senders.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import nacl.signing

from homeserver.protocol.errors import SignatureError
from homeserver.protocol.signing import sign_json, verify_json

SCHEME = "X-Matrix"
# RFC 9110 token characters, plus ':' which older servers send unquoted (server names with ports)
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z:]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf"[ \t]*({_TOKEN})[ \t]*=[ \t]*({_TOKEN}|{_QUOTED})[ \t]*(?:,|$)")


class AuthHeaderError(ValueError):
    """The Authorization header is absent, not X-Matrix, or malformed."""


@dataclass(frozen=True, slots=True)
class XMatrix:
    origin: str
    destination: str | None  # optional for senders older than spec v1.3
    key: str
    sig: str


def signed_request(method: str, uri: str, origin: str, destination: str, content: Any | None = None) -> dict[str, Any]:
    """The object whose signature authenticates a request (`content` None: a request without a body)."""
    request: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        request["content"] = content
    return request


def authorization_header(
    origin: str,
    destination: str,
    key_id: str,
    signing_key: nacl.signing.SigningKey,
    method: str,
    uri: str,
    content: Any | None = None,
) -> str:
    """The header value for an outbound request, written the way the spec asks senders to: one
    space, lower-case names, quoted values, no spaces around commas."""
    signed = sign_json(signed_request(method, uri, origin, destination, content), origin, key_id, signing_key)
    sig = signed["signatures"][origin][key_id]
    return f'{SCHEME} origin="{origin}",destination="{destination}",key="{key_id}",sig="{sig}"'


def parse_authorization(header: str) -> XMatrix:
    """The parameters of an `X-Matrix` Authorization header; `AuthHeaderError` when it is not one."""
    scheme, sep, rest = header.partition(" ")
    if scheme.lower() != SCHEME.lower() or not sep:
        raise AuthHeaderError("the Authorization header is not X-Matrix")
    rest = rest.lstrip(" ")
    params: dict[str, str] = {}
    pos = 0
    while pos < len(rest):
        m = _PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            raise AuthHeaderError("the X-Matrix parameters are malformed")
        name, value = m.group(1).lower(), m.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(name, value)
        pos = m.end()
    missing = [p for p in ("origin", "key", "sig") if not params.get(p)]
    if missing:
        raise AuthHeaderError(f"the X-Matrix header lacks {', '.join(missing)}")
    return XMatrix(params["origin"], params.get("destination"), params["key"], params["sig"])


def verify_request(
    auth: XMatrix,
    method: str,
    uri: str,
    our_name: str,
    content: Any | None,
    verify_key: nacl.signing.VerifyKey,
) -> None:
    """Raise `SignatureError` unless the request was signed by `auth.origin` with `auth.key` for us.

    spec: a `destination` that is not this server is refused; one that is absent is accepted (older
    servers), and the signed object then names us as the destination.
    """
    if auth.destination is not None and auth.destination != our_name:
        raise SignatureError(f"the request is for {auth.destination}, not this server")
    signed = signed_request(method, uri, auth.origin, our_name, content)
    signed["signatures"] = {auth.origin: {auth.key: auth.sig}}
    verify_json(signed, auth.origin, auth.key, verify_key, strict=False)  # peers sign with canonicaljson
