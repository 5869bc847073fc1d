"""Sync filters uploaded by users (spec: client-server-api "Filtering"): ids are per user, counting
from 0, so a filter id is a short decimal string that never starts with `{`."""

from __future__ import annotations

from typing import Any

import orjson

from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

FILTERS = Table("filters", ("str", "u64"), "json", "user, filter id -> filter definition")
TABLES = (FILTERS,)


class FilterStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        raw = self.store.get(FILTERS, user_id.encode() + SEP + u64(filter_id))
        return orjson.loads(raw) if raw is not None else None

    def next_id(self, user_id: str) -> int:
        prefix = user_id.encode() + SEP
        last = next(self.store.keys(FILTERS, prefix, reverse=True), None)
        return read_u64(last, len(prefix)) + 1 if last is not None else 0

    def put(self, user_id: str, filter_id: int, definition: dict[str, Any], batch: Batch) -> None:
        batch.put(FILTERS, user_id.encode() + SEP + u64(filter_id), orjson.dumps(definition))

    def find(self, user_id: str, definition: dict[str, Any]) -> int | None:
        """The id of an identical filter the user already uploaded (clients upload the same one often)."""
        wanted = orjson.dumps(definition)
        prefix = user_id.encode() + SEP
        for k, v in self.store.iterate(FILTERS, prefix):
            if v == wanted:
                return read_u64(k, len(prefix))
        return None
