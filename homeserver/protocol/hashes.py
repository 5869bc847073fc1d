"""Content hashes and reference hashes of events.

spec: server-server-api.md "Calculating the content hash for an event" and
"Calculating the reference hash for an event".
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from homeserver.protocol import canonical_json, unpadded_base64
from homeserver.protocol.errors import Base64Error, HashMismatch
from homeserver.protocol.redaction import redact
from homeserver.protocol.room_versions import RoomVersion, get_room_version


def content_hash(event: Mapping[str, Any], room_version: str | RoomVersion) -> bytes:
    """SHA-256 of the canonical JSON of the event without `unsigned`, `signatures` and `hashes`."""
    rv = get_room_version(room_version)
    stripped = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(canonical_json.encode_for_room(stripped, rv.strict_canonical_json)).digest()


def check_content_hash(event: Mapping[str, Any], room_version: str | RoomVersion) -> None:
    """Raise `HashMismatch` unless `hashes.sha256` matches the event's content hash."""
    hashes = event.get("hashes")
    expected = hashes.get("sha256") if isinstance(hashes, Mapping) else None
    if not isinstance(expected, str):
        raise HashMismatch("event has no sha256 content hash")
    try:
        expected_bytes = unpadded_base64.decode(expected)
    except Base64Error:
        raise HashMismatch("event's sha256 content hash is not base64") from None
    if not hmac.compare_digest(expected_bytes, content_hash(event, room_version)):
        raise HashMismatch("event's content does not match its sha256 hash")


def reference_hash(event: Mapping[str, Any], room_version: str | RoomVersion) -> bytes:
    """SHA-256 of the redacted event without `signatures` and `unsigned`."""
    rv = get_room_version(room_version)
    redacted = redact(event, rv)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    if rv.uses_reference_hash_ids:
        # A v3+ PDU has no `event_id`: it is derived from this hash, so it can't be part of it.
        redacted.pop("event_id", None)
    return hashlib.sha256(canonical_json.encode_for_room(redacted, rv.strict_canonical_json)).digest()
