"""The device-list change stream: for each user, the stream position of their last device or
cross-signing key change, so `/sync` and `GET /keys/changes` read who changed in a window with one
range scan. A new change moves the user: the old stream entry goes in the same batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

DEVICE_LIST_STREAM = Table("e2e_device_list_stream", ("u64", "str"), "empty", "position, user whose keys changed")
DEVICE_LIST_LATEST = Table("e2e_device_list_latest", ("str",), "u64", "user -> position of the last key change")
# Over federation (spec: server-server-api "Device Management"): the stream id of the last
# m.device_list_update sent for each local user (the next one's prev_id), the last one received for
# each remote user, and the cached device keys of remote users (dropped by any update).
DEVICE_LIST_SENT = Table("e2e_device_list_sent", ("str",), "u64", "local user -> stream_id of the last update sent")
REMOTE_STREAM = Table("e2e_remote_device_stream", ("str",), "u64", "remote user -> stream_id of the last update seen")
REMOTE_CACHE = Table("e2e_remote_device_cache", ("str",), "json", "remote user -> cached device keys")
TABLES = (DEVICE_LIST_STREAM, DEVICE_LIST_LATEST, DEVICE_LIST_SENT, REMOTE_STREAM, REMOTE_CACHE)


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

    # -- federation --------------------------------------------------------------------------------

    def next_sent(self, user_id: str, batch: Batch) -> tuple[int, int | None]:
        """A new stream id for an update of a local user's devices, and the previous one (prev_id)."""
        raw = self.store.get(DEVICE_LIST_SENT, user_id.encode())
        pos = batch.next_count()
        batch.put(DEVICE_LIST_SENT, user_id.encode(), u64(pos))
        return pos, (read_u64(raw) if raw else None)

    def last_sent(self, user_id: str) -> int:
        raw = self.store.get(DEVICE_LIST_SENT, user_id.encode())
        return read_u64(raw) if raw else 0

    def remote_stream(self, user_id: str) -> int | None:
        raw = self.store.get(REMOTE_STREAM, user_id.encode())
        return read_u64(raw) if raw else None

    def set_remote_stream(self, user_id: str, stream_id: int, batch: Batch) -> None:
        batch.put(REMOTE_STREAM, user_id.encode(), u64(stream_id))

    def cached(self, user_id: str) -> dict[str, Any] | None:
        raw = self.store.get(REMOTE_CACHE, user_id.encode())
        return orjson.loads(raw) if raw is not None else None

    def cache(self, user_id: str, value: dict[str, Any], batch: Batch) -> None:
        batch.put(REMOTE_CACHE, user_id.encode(), orjson.dumps(value, option=orjson.OPT_SORT_KEYS))

    def drop_cache(self, user_id: str, batch: Batch) -> None:
        batch.delete(REMOTE_CACHE, user_id.encode())
