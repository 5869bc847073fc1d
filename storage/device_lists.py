"""The device-list change stream: for each user, the stream position of their last device or
cross-signing key change, so `/sync` and `GET /keys/changes` read who changed in a window with one
range scan. A new change moves the user: the old stream entry goes in the same batch."""

from __future__ import annotations

from collections.abc import Iterator

from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

DEVICE_LIST_STREAM = Table("e2e_device_list_stream", ("u64", "str"), "empty", "position, user whose keys changed")
DEVICE_LIST_LATEST = Table("e2e_device_list_latest", ("str",), "u64", "user -> position of the last key change")
TABLES = (DEVICE_LIST_STREAM, DEVICE_LIST_LATEST)


class DeviceListStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def mark_changed(self, user_id: str, batch: Batch) -> int:
        pos = batch.next_count()
        old = self.store.get(DEVICE_LIST_LATEST, user_id.encode())
        if old is not None:
            batch.delete(DEVICE_LIST_STREAM, old + SEP + user_id.encode())
        batch.put(DEVICE_LIST_STREAM, u64(pos) + SEP + user_id.encode(), b"")
        batch.put(DEVICE_LIST_LATEST, user_id.encode(), u64(pos))
        return pos

    def changes(self, after: int, upto: int) -> Iterator[str]:
        """Users whose device lists last changed at a position in (after, upto]."""
        for k in self.store.keys(DEVICE_LIST_STREAM, start=u64(after + 1), stop=u64(upto + 1)):
            yield k[9:].decode()

    def position(self, user_id: str) -> int:
        raw = self.store.get(DEVICE_LIST_LATEST, user_id.encode())
        return read_u64(raw) if raw else 0
