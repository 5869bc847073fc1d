"""Presence: each user's last known presence, at a position on the global stream, and the stream of
changes so `/sync` reads who changed since a token with one range scan. Updating a user's presence
moves it: the old stream entry is deleted in the same batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import u64
from storage.engine import Batch, Store, Table

PRESENCE = Table("presence", ("str",), "json", "user -> {presence, status_msg, last_active_ts, stream}")
PRESENCE_STREAM = Table("presence_stream", ("u64",), "str", "position -> user whose presence changed there")
TABLES = (PRESENCE, PRESENCE_STREAM)


class PresenceStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, user_id: str) -> dict[str, Any] | None:
        raw = self.store.get(PRESENCE, user_id.encode())
        return orjson.loads(raw) if raw is not None else None

    def put(self, user_id: str, record: dict[str, Any], old_stream: int | None, batch: Batch) -> None:
        if old_stream:
            batch.delete(PRESENCE_STREAM, u64(old_stream))
        batch.put(PRESENCE, user_id.encode(), orjson.dumps(record))
        batch.put(PRESENCE_STREAM, u64(int(record["stream"])), user_id.encode())

    def changed(self, after: int, upto: int) -> Iterator[str]:
        """Users whose presence changed at a position in (after, upto]."""
        for _, v in self.store.iterate(PRESENCE_STREAM, start=u64(after + 1), stop=u64(upto + 1)):
            yield v.decode()
