"""Send-to-device messages: each device's inbox at positions on the global stream, the last position
handed out to it, and the transaction ids already sent (spec: modules/send_to_device.md)."""

from __future__ import annotations

from typing import Any

import orjson

from storage.codec import SEP, key, read_u64, u64
from storage.engine import Batch, Store, Table

TO_DEVICE = Table("to_device", ("str", "str", "u64"), "json", "user, device, position -> message waiting for it")
TO_DEVICE_DELIVERED = Table("to_device_delivered", ("str", "str"), "u64", "user, device -> last position sent")
TO_DEVICE_TXNS = Table("to_device_txns", ("str", "str", "str"), "empty", "sender, device, txn id: already sent")
TABLES = (TO_DEVICE, TO_DEVICE_DELIVERED, TO_DEVICE_TXNS)


class ToDeviceStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def put(self, user_id: str, device_id: str, message: dict[str, Any], batch: Batch) -> int:
        pos = batch.next_count()
        value = orjson.dumps(message, option=orjson.OPT_SORT_KEYS)
        batch.put(TO_DEVICE, key(user_id, device_id) + SEP + u64(pos), value)
        return pos

    def pending(self, user_id: str, device_id: str, upto: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """(position, message) of the first `limit` messages waiting at positions up to `upto`."""
        prefix = key(user_id, device_id) + SEP
        out = []
        for k, v in self.store.iterate(TO_DEVICE, prefix, stop=u64(upto + 1)):
            out.append((read_u64(k, len(prefix)), orjson.loads(v)))
            if len(out) >= limit:
                break
        return out

    def delete_upto(self, user_id: str, device_id: str, upto: int, batch: Batch) -> int:
        prefix = key(user_id, device_id) + SEP
        n = 0
        for k in self.store.keys(TO_DEVICE, prefix, stop=u64(upto + 1)):
            batch.delete(TO_DEVICE, k)
            n += 1
        return n

    def last_delivered(self, user_id: str, device_id: str) -> int:
        raw = self.store.get(TO_DEVICE_DELIVERED, key(user_id, device_id))
        return read_u64(raw) if raw else 0

    def set_last_delivered(self, user_id: str, device_id: str, pos: int, batch: Batch) -> None:
        batch.put(TO_DEVICE_DELIVERED, key(user_id, device_id), u64(pos))

    def txn_seen(self, sender: str, device_id: str, txn_id: str) -> bool:
        return self.store.get(TO_DEVICE_TXNS, key(sender, device_id, txn_id)) is not None

    def mark_txn(self, sender: str, device_id: str, txn_id: str, batch: Batch) -> None:
        batch.put(TO_DEVICE_TXNS, key(sender, device_id, txn_id), b"")

    def delete_device(self, user_id: str, device_id: str, batch: Batch) -> None:
        """Forget a deleted device's inbox and delivery position."""
        for k in self.store.keys(TO_DEVICE, key(user_id, device_id) + SEP):
            batch.delete(TO_DEVICE, k)
        batch.delete(TO_DEVICE_DELIVERED, key(user_id, device_id))
