"""Account data: global (room "") and per-room JSON objects of a user, each at a position on the
global stream, plus a per-user change log in stream order so `/sync` reads what changed since a
token with one range scan. Updating an entry moves it: the old log entry is deleted in the batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

ACCOUNT_DATA = Table(
    "account_data", ("str", "str", "str"), "json", "user, room id ('' = global), type -> {stream, content}"
)
ACCOUNT_DATA_STREAM = Table(
    "account_data_stream", ("str", "u64"), "str", "user, position -> room id 0xFF type (current entries only)"
)
TABLES = (ACCOUNT_DATA, ACCOUNT_DATA_STREAM)


def _key(user_id: str, room_id: str, data_type: str) -> bytes:
    return SEP.join((user_id.encode(), room_id.encode(), data_type.encode()))


class AccountDataStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, user_id: str, room_id: str, data_type: str) -> tuple[int, dict[str, Any]] | None:
        """(stream position, content) of one entry, or None."""
        raw = self.store.get(ACCOUNT_DATA, _key(user_id, room_id, data_type))
        if raw is None:
            return None
        record = orjson.loads(raw)
        return int(record["stream"]), record["content"]

    def put(
        self, user_id: str, room_id: str, data_type: str, content: dict[str, Any], stream: int, batch: Batch
    ) -> None:
        old = self.get(user_id, room_id, data_type)
        if old is not None:
            batch.delete(ACCOUNT_DATA_STREAM, user_id.encode() + SEP + u64(old[0]))
        batch.put(ACCOUNT_DATA, _key(user_id, room_id, data_type), orjson.dumps({"stream": stream, "content": content}))
        log_key = user_id.encode() + SEP + u64(stream)
        batch.put(ACCOUNT_DATA_STREAM, log_key, room_id.encode() + SEP + data_type.encode())

    def all_of(self, user_id: str, room_id: str | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(room id, type, content) of every entry of a user (only those of `room_id` if given)."""
        prefix = user_id.encode() + SEP
        if room_id is not None:
            prefix += room_id.encode() + SEP
        for k, v in self.store.iterate(ACCOUNT_DATA, prefix):
            room, data_type = k[len(user_id.encode()) + 1 :].split(SEP, 1)
            yield room.decode(), data_type.decode(), orjson.loads(v)["content"]

    def changed(self, user_id: str, after: int, upto: int) -> Iterator[tuple[str, str]]:
        """(room id, type) of the entries written at a position in (after, upto]."""
        prefix = user_id.encode() + SEP
        for _, v in self.store.iterate(ACCOUNT_DATA_STREAM, prefix, start=u64(after + 1), stop=u64(upto + 1)):
            room, data_type = v.split(SEP, 1)
            yield room.decode(), data_type.decode()

    def latest(self, user_id: str) -> int:
        last = next(self.store.keys(ACCOUNT_DATA_STREAM, user_id.encode() + SEP, reverse=True), None)
        return read_u64(last, len(user_id.encode()) + 1) if last is not None else 0
