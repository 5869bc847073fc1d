"""One-time and fallback keys of each device (spec: e2e "One-time and fallback keys").

One-time keys are kept in upload order (a sequence number from the global counter), so a claim
hands out the oldest first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP, key, u64
from storage.engine import Batch, Store, Table

ONE_TIME_KEYS = Table(
    "e2e_one_time_keys", ("str", "str", "str", "u64", "str"), "json", "user, device, algorithm, seq, key id -> key"
)
FALLBACK_KEYS = Table("e2e_fallback_keys", ("str", "str", "str"), "json", "user, device, algorithm -> key, used")
TABLES = (ONE_TIME_KEYS, FALLBACK_KEYS)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class OneTimeKeyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- one-time keys ---------------------------------------------------------------------------

    def counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """Unclaimed one-time keys per algorithm."""
        counts: dict[str, int] = {}
        prefix = key(user_id, device_id) + SEP
        for k in self.store.keys(ONE_TIME_KEYS, prefix):
            algorithm = k[len(prefix) :].split(SEP, 1)[0].decode()
            counts[algorithm] = counts.get(algorithm, 0) + 1
        return counts

    def find(self, user_id: str, device_id: str, algorithm: str, key_id: str) -> Any:
        """The stored one-time key with this id, or None."""
        prefix = key(user_id, device_id, algorithm) + SEP
        for k, v in self.store.iterate(ONE_TIME_KEYS, prefix):
            if k[len(prefix) + 9 :].decode() == key_id:
                return orjson.loads(v)
        return None

    def put(
        self, user_id: str, device_id: str, algorithm: str, seq: int, key_id: str, value: Any, batch: Batch
    ) -> None:
        k = key(user_id, device_id, algorithm) + SEP + u64(seq) + SEP + key_id.encode()
        batch.put(ONE_TIME_KEYS, k, _dumps(value))

    def oldest_first(self, user_id: str, device_id: str, algorithm: str) -> Iterator[tuple[bytes, str, Any]]:
        """(table key, key id, key) in upload order: the first is the oldest."""
        prefix = key(user_id, device_id, algorithm) + SEP
        for k, v in self.store.iterate(ONE_TIME_KEYS, prefix):
            yield k, k[len(prefix) + 9 :].decode(), orjson.loads(v)

    def delete(self, table_key: bytes, batch: Batch) -> None:
        batch.delete(ONE_TIME_KEYS, table_key)

    # -- fallback keys ---------------------------------------------------------------------------

    def fallback_key(self, user_id: str, device_id: str, algorithm: str) -> dict[str, Any] | None:
        raw = self.store.get(FALLBACK_KEYS, key(user_id, device_id, algorithm))
        return orjson.loads(raw) if raw is not None else None

    def fallback_keys(self, user_id: str, device_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(algorithm, {key_id, key, used}) of the device's fallback keys."""
        prefix = key(user_id, device_id) + SEP
        for k, v in self.store.iterate(FALLBACK_KEYS, prefix):
            yield k[len(prefix) :].decode(), orjson.loads(v)

    def put_fallback_key(
        self, user_id: str, device_id: str, algorithm: str, entry: dict[str, Any], batch: Batch
    ) -> None:
        batch.put(FALLBACK_KEYS, key(user_id, device_id, algorithm), _dumps(entry))

    # -- deleted devices -------------------------------------------------------------------------

    def delete_device(self, user_id: str, device_id: str, batch: Batch) -> None:
        """Forget every one-time and fallback key of a device (it was deleted)."""
        for table in (ONE_TIME_KEYS, FALLBACK_KEYS):
            for k in self.store.keys(table, key(user_id, device_id) + SEP):
                batch.delete(table, k)
