"""Unpadded base64 (spec: appendices.md "Unpadded Base64").

Standard alphabet without `=`; the URL-safe alphabet (`-`, `_`) names events in rooms v4+.
Decoders accept input with or without padding, in either alphabet as asked.
"""

from __future__ import annotations

import base64 as _b64
import binascii
import re

from homeserver.protocol.errors import Base64Error

_STD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URL = re.compile(r"[A-Za-z0-9\-_]*={0,2}")


def encode(data: bytes) -> str:
    return _b64.b64encode(data).rstrip(b"=").decode("ascii")


def encode_urlsafe(data: bytes) -> str:
    return _b64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _pad(s: str) -> str:
    stripped = s.rstrip("=")
    if len(stripped) % 4 == 1:
        raise Base64Error("base64 input has an impossible length")
    return stripped + "=" * (-len(stripped) % 4)


def decode(s: str) -> bytes:
    """Decode standard base64, padded or not."""
    if not isinstance(s, str) or not _STD.fullmatch(s):
        raise Base64Error("not valid base64")
    try:
        return _b64.b64decode(_pad(s), validate=True)
    except binascii.Error as e:
        raise Base64Error(f"not valid base64: {e}") from None


def decode_urlsafe(s: str) -> bytes:
    """Decode URL-safe base64, padded or not."""
    if not isinstance(s, str) or not _URL.fullmatch(s):
        raise Base64Error("not valid URL-safe base64")
    try:
        return _b64.urlsafe_b64decode(_pad(s))
    except binascii.Error as e:
        raise Base64Error(f"not valid base64: {e}") from None
