"""Cross-signing keys and the signatures uploaded for keys (spec: e2e "Cross-signing")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP, key
from storage.engine import Batch, Store, Table

CROSS_SIGNING_KEYS = Table("e2e_cross_signing", ("str", "str"), "json", "user, usage -> cross-signing key")
SIGNATURES = Table(
    "e2e_signatures", ("str", "str", "str", "str"), "str", "target user, target key id, signer user, signer key id"
)
TABLES = (CROSS_SIGNING_KEYS, SIGNATURES)


class CrossSigningStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, user_id: str, usage: str) -> dict[str, Any] | None:
        raw = self.store.get(CROSS_SIGNING_KEYS, key(user_id, usage))
        return orjson.loads(raw) if raw is not None else None

    def put(self, user_id: str, usage: str, value: dict[str, Any], batch: Batch) -> None:
        batch.put(CROSS_SIGNING_KEYS, key(user_id, usage), orjson.dumps(value, option=orjson.OPT_SORT_KEYS))

    def signatures_on(self, target_user: str, target_key_id: str) -> Iterator[tuple[str, str, str]]:
        """(signer user, signer key id, signature) of signatures uploaded for a key."""
        prefix = key(target_user, target_key_id) + SEP
        for k, v in self.store.iterate(SIGNATURES, prefix):
            signer, _, key_id = k[len(prefix) :].partition(SEP)
            yield signer.decode(), key_id.decode(), v.decode()

    def put_signature(
        self, target_user: str, target_key_id: str, signer: str, signer_key_id: str, sig: str, batch: Batch
    ) -> None:
        batch.put(SIGNATURES, key(target_user, target_key_id, signer, signer_key_id), sig.encode())
