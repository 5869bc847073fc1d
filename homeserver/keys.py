"""The server's signing key: generated on first start, kept in the data directory.

The file is Synapse's signing key file, read and written by signedjson (`read_signing_keys`,
`write_signing_keys`): one key a line, `ed25519 <version> <unpadded base64 seed>`. So an admin can
move a key between this server and Synapse. Of several keys, the first one signs (as in Synapse).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import cast

import nacl.signing
from signedjson.key import read_signing_keys, write_signing_keys
from signedjson.types import SigningKey

from homeserver.protocol.signing import ED25519, encode_verify_key, generate_signing_key


class KeyFileError(Exception):
    pass


def read_key_file(path: Path) -> tuple[str, nacl.signing.SigningKey]:
    """The first key of a key file, with its key id (`ed25519:<version>`)."""
    try:
        with path.open(encoding="ascii") as f:
            keys = read_signing_keys(line for line in f if line.strip())
    except ValueError as e:  # a bad line, algorithm, base64 or seed length (nacl's errors too)
        raise KeyFileError(f"{path} is not a signing key file ('ed25519 <version> <seed>'): {e}") from None
    if not keys:
        raise KeyFileError(f"{path} holds no signing key ('ed25519 <version> <seed>')")
    key = keys[0]
    return f"{key.alg}:{key.version}", cast(nacl.signing.SigningKey, key)


def write_key_file(path: Path, key_id: str, key: nacl.signing.SigningKey) -> None:
    """Write the key atomically (a crash never leaves half a key), readable by its owner only."""
    alg, _, version = key_id.partition(":")
    if alg != ED25519 or not version:
        raise KeyFileError(f"cannot write key {key_id!r}: only ed25519 keys")
    signed = cast(SigningKey, key)
    signed.alg, signed.version = alg, version
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        write_signing_keys(f, [signed])
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_or_create_signing_key(path: Path) -> tuple[str, nacl.signing.SigningKey]:
    if path.exists():
        return read_key_file(path)
    key_id, key = generate_signing_key()
    write_key_file(path, key_id, key)
    return key_id, key


OLD_KEYS_FILE = "old_signing_keys.json"


def load_old_keys(data_dir: Path) -> dict[str, tuple[str, int]]:
    """The keys this server signed with before (`keys rotate`): key id -> (public key in unpadded
    base64, when it stopped being used, ms). Other servers still need them to check old events
    (spec: server-server "Publishing Keys", `old_verify_keys`)."""
    path = data_dir / OLD_KEYS_FILE
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {str(k): (str(v["key"]), int(v["expired_ts"])) for k, v in raw.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise KeyFileError(f"{path} is not a list of old keys ({{key id: {{key, expired_ts}}}}): {e}") from None


def rotate_signing_key(data_dir: Path, now_ms: int) -> tuple[str, str]:
    """Replace the signing key with a new one; the old one is kept (public half only) in the old
    keys file with `expired_ts` now. Returns (old key id, new key id). Each file is written
    atomically, the old keys first: a crash in between leaves the old key current and also listed
    as old, which is harmless."""
    key_path = data_dir / "signing.key"
    old_id, old_key = read_key_file(key_path)
    old = load_old_keys(data_dir)
    old[old_id] = (encode_verify_key(old_key), now_ms)
    tmp = data_dir / (OLD_KEYS_FILE + ".tmp")
    tmp.write_text(json.dumps({k: {"key": v, "expired_ts": ts} for k, (v, ts) in old.items()}, indent=1), "utf-8")
    os.replace(tmp, data_dir / OLD_KEYS_FILE)
    new_id, new_key = generate_signing_key()
    while new_id in old:
        new_id, new_key = generate_signing_key()
    write_key_file(key_path, new_id, new_key)
    return old_id, new_id
