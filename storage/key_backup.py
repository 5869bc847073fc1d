"""Server-side key backups: versions (algorithm, auth_data, etag, deleted flag) and the backed-up
room keys of each version, per room and session (spec: e2e "Server-side key backups")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

BACKUP_VERSIONS = Table("key_backup_versions", ("str", "u64"), "json", "user, version -> algorithm, auth_data, etag")
BACKUP_KEYS = Table("key_backup_keys", ("str", "u64", "str", "str"), "json", "user, version, room, session -> key")
TABLES = (BACKUP_VERSIONS, BACKUP_KEYS)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _key(user_id: str, version: int, room_id: str | None = None, session_id: str | None = None) -> bytes:
    """A session's key, or the prefix of a room's or a version's keys."""
    k = user_id.encode() + SEP + u64(version) + SEP
    if room_id is not None:
        k += room_id.encode() + SEP
        if session_id is not None:
            k += session_id.encode()
    return k


class KeyBackupStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- versions --------------------------------------------------------------------------------

    def versions(self, user_id: str, *, reverse: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
        prefix = user_id.encode() + SEP
        for k, v in self.store.iterate(BACKUP_VERSIONS, prefix, reverse=reverse):
            yield read_u64(k, len(prefix)), orjson.loads(v)

    def version(self, user_id: str, version: int) -> dict[str, Any] | None:
        raw = self.store.get(BACKUP_VERSIONS, user_id.encode() + SEP + u64(version))
        return orjson.loads(raw) if raw is not None else None

    def put_version(self, user_id: str, version: int, info: dict[str, Any], batch: Batch) -> None:
        batch.put(BACKUP_VERSIONS, user_id.encode() + SEP + u64(version), _dumps(info))

    # -- session keys ----------------------------------------------------------------------------

    def keys(
        self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None
    ) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(room id, session id, key) of a version's keys, of one room's, or of one session."""
        prefix = _key(user_id, version, room_id, session_id)
        base = len(_key(user_id, version))
        if session_id is not None:
            raw = self.store.get(BACKUP_KEYS, prefix)
            if raw is not None:
                yield room_id or "", session_id, orjson.loads(raw)
            return
        for k, v in self.store.iterate(BACKUP_KEYS, prefix):
            room, _, session = k[base:].partition(SEP)
            yield room.decode(), session.decode(), orjson.loads(v)

    def put_key(
        self, user_id: str, version: int, room_id: str, session_id: str, data: dict[str, Any], batch: Batch
    ) -> None:
        batch.put(BACKUP_KEYS, _key(user_id, version, room_id, session_id), _dumps(data))

    def delete_keys(
        self, user_id: str, version: int, batch: Batch, room_id: str | None = None, session_id: str | None = None
    ) -> int:
        prefix = _key(user_id, version, room_id, session_id)
        if session_id is not None:
            if self.store.get(BACKUP_KEYS, prefix) is None:
                return 0
            batch.delete(BACKUP_KEYS, prefix)
            return 1
        n = 0
        for k in self.store.keys(BACKUP_KEYS, prefix):
            batch.delete(BACKUP_KEYS, k)
            n += 1
        return n

    def count_keys(self, user_id: str, version: int) -> int:
        return self.store.count(BACKUP_KEYS, _key(user_id, version))
