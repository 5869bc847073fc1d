"""Signing and verifying JSON with ed25519 keys (spec: appendices.md "Signing JSON", "Signing Details",
"Checking for a Signature").

Keys are PyNaCl `SigningKey` / `VerifyKey`. Key ids are `algorithm:version`, and only `ed25519` is
understood; signatures from other algorithms are ignored when checking.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

import nacl.exceptions
import nacl.signing

from homeserver.protocol import canonical_json, unpadded_base64
from homeserver.protocol.errors import Base64Error, CanonicalJSONError, SignatureError

ED25519 = "ed25519"
_KEY_VERSION_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _signable_bytes(obj: Mapping[str, Any], strict: bool) -> bytes:
    # spec: appendices "Signing JSON" — `signatures` and `unsigned` are not covered.
    stripped = {k: v for k, v in obj.items() if k != "signatures" and k != "unsigned"}
    return canonical_json.encode_for_room(stripped, strict)


def generate_signing_key(version: str | None = None) -> tuple[str, nacl.signing.SigningKey]:
    """A fresh ed25519 key and its key id (`ed25519:<version>`), version random if not given."""
    if version is None:
        # spec: server-server "verify_keys" — a key version is made of [a-zA-Z0-9_]
        version = "a_" + "".join(_KEY_VERSION_CHARS[b % len(_KEY_VERSION_CHARS)] for b in os.urandom(6))
    return f"{ED25519}:{version}", nacl.signing.SigningKey.generate()


def signing_key_from_seed(seed_b64: str) -> nacl.signing.SigningKey:
    """A signing key from its 32-byte seed in unpadded base64 (the form a key file stores)."""
    seed = unpadded_base64.decode(seed_b64)
    if len(seed) != 32:
        raise SignatureError("an ed25519 seed is 32 bytes")
    return nacl.signing.SigningKey(seed)


def encode_seed(key: nacl.signing.SigningKey) -> str:
    return unpadded_base64.encode(bytes(key))


def encode_verify_key(key: nacl.signing.SigningKey | nacl.signing.VerifyKey) -> str:
    """The public key in unpadded base64, as `/_matrix/key/v2/server` publishes it."""
    vk = key.verify_key if isinstance(key, nacl.signing.SigningKey) else key
    return unpadded_base64.encode(bytes(vk))


def decode_verify_key(key_b64: str) -> nacl.signing.VerifyKey:
    """A public key in unpadded base64; identity servers may publish it URL-safe, so both are read."""
    try:
        raw = unpadded_base64.decode(key_b64)
    except Base64Error:
        try:
            raw = unpadded_base64.decode_urlsafe(key_b64)
        except Base64Error as e:
            raise SignatureError(f"public key is not base64: {e}") from None
    if len(raw) != 32:
        raise SignatureError("an ed25519 public key is 32 bytes")
    return nacl.signing.VerifyKey(raw)


def sign_json(
    obj: MutableMapping[str, Any],
    server_name: str,
    key_id: str,
    signing_key: nacl.signing.SigningKey,
    *,
    strict: bool = True,
) -> MutableMapping[str, Any]:
    """Add `signatures[server_name][key_id]` to `obj` (in place) and return it.

    Existing signatures are kept. `strict=False` signs JSON that rooms v1–v5 tolerate.
    """
    signature = signing_key.sign(_signable_bytes(obj, strict)).signature
    existing = obj.get("signatures")
    signatures: dict[str, Any] = dict(existing) if isinstance(existing, Mapping) else {}
    server_sigs = dict(signatures.get(server_name) or {})
    server_sigs[key_id] = unpadded_base64.encode(signature)
    signatures[server_name] = server_sigs
    obj["signatures"] = signatures
    return obj


def _signature_bytes(obj: Mapping[str, Any], server_name: str, key_id: str) -> bytes:
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        raise SignatureError("object has no signatures")
    server_sigs = signatures.get(server_name)
    if not isinstance(server_sigs, Mapping):
        raise SignatureError(f"no signature from {server_name}")
    sig_b64 = server_sigs.get(key_id)
    if not isinstance(sig_b64, str):
        raise SignatureError(f"no signature from {server_name} with key {key_id}")
    try:
        return unpadded_base64.decode(sig_b64)
    except Base64Error:
        raise SignatureError(f"signature from {server_name} with key {key_id} is not base64") from None


def verify_json(
    obj: Mapping[str, Any],
    server_name: str,
    key_id: str,
    verify_key: nacl.signing.VerifyKey,
    *,
    strict: bool = True,
) -> None:
    """Raise `SignatureError` unless `obj` carries a valid signature by `server_name` with `key_id`.

    spec: appendices "Checking for a Signature".
    """
    if not key_id.startswith(ED25519 + ":"):
        raise SignatureError(f"unsupported signature algorithm in key id {key_id!r}")
    signature = _signature_bytes(obj, server_name, key_id)
    try:
        message = _signable_bytes(obj, strict)
    except CanonicalJSONError as e:
        raise SignatureError(f"signed object is not canonical JSON: {e}") from None
    try:
        verify_key.verify(message, signature)
    except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
        raise SignatureError(f"signature from {server_name} with key {key_id} does not verify") from None


def signature_key_ids(obj: Mapping[str, Any], server_name: str) -> list[str]:
    """The ed25519 key ids `server_name` signed `obj` with (other algorithms are ignored)."""
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        return []
    server_sigs = signatures.get(server_name)
    if not isinstance(server_sigs, Mapping):
        return []
    return [k for k in server_sigs if isinstance(k, str) and k.startswith(ED25519 + ":")]


def verify_signed_by_key(obj: Mapping[str, Any], public_key_b64: str, *, strict: bool = True) -> bool:
    """True if any ed25519 signature in `obj["signatures"]` verifies with this public key.

    Used where the signer's name does not matter, only its key: third-party invites
    (spec: rooms auth rules, m.room.member `third_party_invite`).
    """
    try:
        verify_key = decode_verify_key(public_key_b64)
        message = _signable_bytes(obj, strict)
    except (SignatureError, CanonicalJSONError):
        return False
    signatures = obj.get("signatures")
    if not isinstance(signatures, Mapping):
        return False
    for server_sigs in signatures.values():
        if not isinstance(server_sigs, Mapping):
            continue
        for key_id, sig_b64 in server_sigs.items():
            if not isinstance(sig_b64, str) or not str(key_id).startswith(ED25519 + ":"):
                continue
            try:
                verify_key.verify(message, unpadded_base64.decode(sig_b64))
                return True
            except (Base64Error, nacl.exceptions.BadSignatureError, ValueError):
                continue
    return False
