"""Device keys: each device's signed identity keys (spec: e2e "Uploading keys", `device_keys`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP, key
from storage.engine import Batch, Store, Table

DEVICE_KEYS = Table("e2e_device_keys", ("str", "str"), "json", "user, device -> signed device keys")
TABLES = (DEVICE_KEYS,)


class DeviceKeyStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        raw = self.store.get(DEVICE_KEYS, key(user_id, device_id))
        return orjson.loads(raw) if raw is not None else None

    def of_user(self, user_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(device id, keys) of every device of the user that uploaded keys."""
        prefix = user_id.encode() + SEP
        for k, v in self.store.iterate(DEVICE_KEYS, prefix):
            yield k[len(prefix) :].decode(), orjson.loads(v)

    def put(self, user_id: str, device_id: str, keys: dict[str, Any], batch: Batch) -> None:
        batch.put(DEVICE_KEYS, key(user_id, device_id), orjson.dumps(keys, option=orjson.OPT_SORT_KEYS))

    def delete(self, user_id: str, device_id: str, batch: Batch) -> None:
        batch.delete(DEVICE_KEYS, key(user_id, device_id))
