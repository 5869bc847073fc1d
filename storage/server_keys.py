"""Other servers' signing keys, as fetched from them or from notaries, with their validity.

The federation key ring (federation/keys.py) decides what to fetch and trust; this module stores
the verdicts: per (server, key id) the public key, until when it is valid (`valid_until_ts`, already
capped as the spec requires) or when it expired (`expired_ts`, for old keys), and when it was
fetched; per server the last `/key/v2/server` answer as the server signed it, which notary queries
hand on unchanged (with our signature added).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from storage.codec import SEP
from storage.engine import Batch, Store, Table

SERVER_KEYS = Table(
    "server_keys", ("str", "str"), "json", "server name, key id -> public key, valid until or expired at, fetched at"
)
SERVER_KEY_RESPONSES = Table(
    "server_key_responses", ("str",), "json", "server name -> its last /key/v2/server answer, as it signed it"
)
TABLES = (SERVER_KEYS, SERVER_KEY_RESPONSES)


@dataclass(frozen=True, slots=True)
class StoredKey:
    key: str  # unpadded base64
    valid_until_ts: int  # for a current key: the lesser of the server's value and fetch time + 7 days
    expired_ts: int | None  # for an old key: when it stopped being used
    fetched_ts: int

    def valid_at(self, ts: int) -> bool:
        """Whether the key may verify a signature made at `ts` (ms)."""
        if self.expired_ts is not None:
            return ts <= self.expired_ts
        return ts <= self.valid_until_ts


def _key(server: str, key_id: str) -> bytes:
    return server.encode() + SEP + key_id.encode()


class ServerKeyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def put(
        self, server: str, keys: dict[str, StoredKey], batch: Batch, *, response: dict[str, Any] | None = None
    ) -> None:
        for key_id, k in keys.items():
            record = {"key": k.key, "valid_until_ts": k.valid_until_ts, "fetched_ts": k.fetched_ts}
            if k.expired_ts is not None:
                record["expired_ts"] = k.expired_ts
            batch.put(SERVER_KEYS, _key(server, key_id), orjson.dumps(record))
        if response is not None:
            batch.put(SERVER_KEY_RESPONSES, server.encode(), orjson.dumps(response))

    def keys(self, server: str) -> dict[str, StoredKey]:
        prefix = server.encode() + SEP
        out: dict[str, StoredKey] = {}
        for k, v in self.store.iterate(SERVER_KEYS, prefix):
            out[k[len(prefix) :].decode()] = _decode(v)
        return out

    def key(self, server: str, key_id: str) -> StoredKey | None:
        raw = self.store.get(SERVER_KEYS, _key(server, key_id))
        return _decode(raw) if raw is not None else None

    def response(self, server: str) -> dict[str, Any] | None:
        raw = self.store.get(SERVER_KEY_RESPONSES, server.encode())
        return orjson.loads(raw) if raw is not None else None


def _decode(raw: bytes) -> StoredKey:
    r = orjson.loads(raw)
    return StoredKey(str(r["key"]), int(r["valid_until_ts"]), r.get("expired_ts"), int(r["fetched_ts"]))
