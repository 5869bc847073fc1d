"""The server's signing key: generated on first start, kept in the data directory.

The file holds one line, `ed25519 <version> <unpadded base64 seed>`, the format Synapse uses too, so
a key can move between servers.
"""

from __future__ import annotations

import os
from pathlib import Path

import nacl.signing

from homeserver.protocol.signing import encode_seed, generate_signing_key, signing_key_from_seed


class KeyFileError(Exception):
    pass


def load_or_create_signing_key(path: Path) -> tuple[str, nacl.signing.SigningKey]:
    if path.exists():
        parts = path.read_text(encoding="ascii").split()
        if len(parts) != 3 or parts[0] != "ed25519":
            raise KeyFileError(f"{path} is not a signing key file ('ed25519 <version> <seed>')")
        try:
            return f"ed25519:{parts[1]}", signing_key_from_seed(parts[2])
        except Exception as e:
            raise KeyFileError(f"{path}: the key cannot be read: {e}") from None
    key_id, key = generate_signing_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(f"ed25519 {key_id.split(':', 1)[1]} {encode_seed(key)}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic: a crash never leaves half a key
    return key_id, key
