"""Hashing and signing the events this server builds, with the least encoding work.

The protocol functions (`add_hashes_and_signatures`, `event_id`) each encode canonical JSON with a
full validating tree walk, and the reference hash encodes the redacted event a second time. For an
event we built ourselves from content already checked as strict canonical JSON (so it has no
floats, no out-of-range integers, nothing the validating walk would change), orjson's sorted,
strict-integer encoding is byte-identical and the walk can go; and the bytes signed (the redacted
event without `signatures` and `unsigned`) are exactly the bytes of the reference hash, so one
encoding serves both. `tests/rooms/test_signing.py` checks the result against the protocol
functions in every room version.

spec: server-server-api "Calculating the content hash for an event", "Calculating the reference
hash for an event", "Signing events"; appendices "Signing JSON".
"""

from __future__ import annotations

import hashlib
from typing import Any, NamedTuple

import nacl.signing

from homeserver.protocol import unpadded_base64
from homeserver.protocol.canonical_json import encode_trusted
from homeserver.protocol.redaction import redact
from homeserver.protocol.room_versions import EventFormat, RoomVersion

_NOT_HASHED = ("unsigned", "signatures", "hashes")


class SignedEvent(NamedTuple):
    event_id: str
    encoded: bytes  # the whole event as canonical JSON, as it is stored and sent
    reference_hash: bytes


def hash_and_sign(
    event: dict[str, Any], rv: RoomVersion, server_name: str, key_id: str, signing_key: nacl.signing.SigningKey
) -> SignedEvent:
    """Set `hashes` and `signatures` on a locally built `event` (in place); return its id and bytes.

    Only for events whose content passed `canonical_json.check` and whose other fields this server
    set (strings, lists of ids, integers in range).
    """
    if "unsigned" in event or "signatures" in event or "hashes" in event:
        hashed = {k: v for k, v in event.items() if k not in _NOT_HASHED}
    else:
        hashed = event  # what we build has none of them: encode it as it is
    event["hashes"] = {"sha256": unpadded_base64.encode(hashlib.sha256(encode_trusted(hashed)).digest())}
    redacted = redact(event, rv)
    redacted.pop("signatures", None)
    redacted.pop("unsigned", None)
    if rv.uses_reference_hash_ids:
        redacted.pop("event_id", None)  # never set on events we build in these versions
    signable = encode_trusted(redacted)
    signature = signing_key.sign(signable).signature
    event["signatures"] = {server_name: {key_id: unpadded_base64.encode(signature)}}
    reference = hashlib.sha256(signable).digest()
    if rv.event_format is EventFormat.V1:
        event_id = event["event_id"]
    elif rv.event_format is EventFormat.V2:
        event_id = "$" + unpadded_base64.encode(reference)
    else:
        event_id = "$" + unpadded_base64.encode_urlsafe(reference)
    return SignedEvent(event_id, encode_trusted(event), reference)
