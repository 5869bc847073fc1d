"""Hashing and signing events we send; checking signatures on events we receive.

spec: server-server-api.md "Signing Events": the content hash goes into `hashes.sha256`, then the
redacted event is signed and the signature copied back to the full event.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import nacl.signing

from homeserver.protocol import unpadded_base64
from homeserver.protocol.errors import InvalidIdentifier, SignatureError
from homeserver.protocol.hashes import content_hash
from homeserver.protocol.redaction import redact
from homeserver.protocol.room_versions import EventFormat, RoomVersion, get_room_version
from homeserver.protocol.signing import sign_json, verify_json


def add_hashes_and_signatures(
    event: MutableMapping[str, Any],
    room_version: str | RoomVersion,
    server_name: str,
    key_id: str,
    signing_key: nacl.signing.SigningKey,
) -> MutableMapping[str, Any]:
    """Set `hashes.sha256` and add our signature to `event` in place; return it."""
    rv = get_room_version(room_version)
    event["hashes"] = {"sha256": unpadded_base64.encode(content_hash(event, rv))}
    redacted = redact(event, rv)
    sign_json(redacted, server_name, key_id, signing_key, strict=rv.strict_canonical_json)
    event["signatures"] = redacted["signatures"]
    return event


def _domain(identifier: object) -> str:
    if not isinstance(identifier, str) or ":" not in identifier:
        raise InvalidIdentifier(f"{identifier!r} has no server part")
    return identifier.split(":", 1)[1]


def required_signers(event: Mapping[str, Any], room_version: str | RoomVersion) -> set[str]:
    """The servers whose signatures a received PDU must carry.

    spec: server-server-api "Validating hashes and signatures on received events": the sender's
    server; for rooms v1–v2 also the server of the `event_id`. For a member event made from a
    third-party invite, the inviting server signs `third_party_invite.signed` (checked by the auth
    rules), and the event itself must still be signed by the sender's server.
    spec: rooms/v8 auth rule 4.2 — a member event naming `join_authorised_via_users_server` must be
    signed by that user's server too.
    """
    rv = get_room_version(room_version)
    signers = {_domain(event.get("sender"))}
    if rv.event_format is EventFormat.V1:
        signers.add(_domain(event.get("event_id")))
    if rv.restricted_join_rule and event.get("type") == "m.room.member":
        content = event.get("content")
        via = content.get("join_authorised_via_users_server") if isinstance(content, Mapping) else None
        if isinstance(via, str):
            signers.add(_domain(via))
    return signers


def verify_event_signature(
    event: Mapping[str, Any],
    room_version: str | RoomVersion,
    server_name: str,
    keys: Mapping[str, nacl.signing.VerifyKey],
) -> None:
    """Check `server_name`'s signature on the redacted event with any of its known `keys` (by key id).

    Unknown key ids are skipped; at least one signature by a known key must verify, and every
    known key that signed must verify. Raises `SignatureError`.
    """
    rv = get_room_version(room_version)
    redacted = redact(event, rv)
    signatures = redacted.get("signatures")
    server_sigs = signatures.get(server_name) if isinstance(signatures, Mapping) else None
    if not isinstance(server_sigs, Mapping) or not server_sigs:
        raise SignatureError(f"event is not signed by {server_name}")
    checked = 0
    for key_id in server_sigs:
        verify_key = keys.get(key_id) if isinstance(key_id, str) else None
        if verify_key is None:
            continue  # spec: unknown keys are ignored
        verify_json(redacted, server_name, key_id, verify_key, strict=rv.strict_canonical_json)
        checked += 1
    if not checked:
        raise SignatureError(f"no signature from {server_name} uses a key we know")
