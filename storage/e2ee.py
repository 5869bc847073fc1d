"""End-to-end encryption tables: device keys, one-time and fallback keys, cross-signing keys and
signatures, the device-list change stream, to-device messages, and server-side key backups.

Positions on the global stream order device-list changes and to-device messages, so `/sync` and
federation read them with the same tokens as everything else.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

DEVICE_KEYS = Table("e2e_device_keys", ("str", "str"), "json", "user, device -> signed device keys")
ONE_TIME_KEYS = Table(
    "e2e_one_time_keys", ("str", "str", "str", "u64", "str"), "json", "user, device, algorithm, seq, key id -> key"
)
FALLBACK_KEYS = Table("e2e_fallback_keys", ("str", "str", "str"), "json", "user, device, algorithm -> key, used")
CROSS_SIGNING_KEYS = Table("e2e_cross_signing", ("str", "str"), "json", "user, usage -> cross-signing key")
SIGNATURES = Table(
    "e2e_signatures", ("str", "str", "str", "str"), "str", "target user, target key id, signer user, signer key id"
)
DEVICE_LIST_STREAM = Table("e2e_device_list_stream", ("u64", "str"), "empty", "position, user whose keys changed")
DEVICE_LIST_LATEST = Table("e2e_device_list_latest", ("str",), "u64", "user -> position of the last key change")
TO_DEVICE = Table("to_device", ("str", "str", "u64"), "json", "user, device, position -> message waiting for it")
TO_DEVICE_DELIVERED = Table("to_device_delivered", ("str", "str"), "u64", "user, device -> last position sent")
TO_DEVICE_TXNS = Table("to_device_txns", ("str", "str", "str"), "empty", "sender, device, txn id: already sent")
BACKUP_VERSIONS = Table("key_backup_versions", ("str", "u64"), "json", "user, version -> algorithm, auth_data, etag")
BACKUP_KEYS = Table("key_backup_keys", ("str", "u64", "str", "str"), "json", "user, version, room, session -> key")
TABLES = (
    DEVICE_KEYS,
    ONE_TIME_KEYS,
    FALLBACK_KEYS,
    CROSS_SIGNING_KEYS,
    SIGNATURES,
    DEVICE_LIST_STREAM,
    DEVICE_LIST_LATEST,
    TO_DEVICE,
    TO_DEVICE_DELIVERED,
    TO_DEVICE_TXNS,
    BACKUP_VERSIONS,
    BACKUP_KEYS,
)


def _k(*parts: str) -> bytes:
    return SEP.join(p.encode() for p in parts)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class E2EEStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- device keys -----------------------------------------------------------------------------

    def device_keys(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        raw = self.store.get(DEVICE_KEYS, _k(user_id, device_id))
        return orjson.loads(raw) if raw is not None else None

    def all_device_keys(self, user_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        prefix = user_id.encode() + SEP
        for k, v in self.store.iterate(DEVICE_KEYS, prefix):
            yield k[len(prefix) :].decode(), orjson.loads(v)

    def put_device_keys(self, user_id: str, device_id: str, keys: dict[str, Any], batch: Batch) -> None:
        batch.put(DEVICE_KEYS, _k(user_id, device_id), _dumps(keys))

    def delete_device(self, user_id: str, device_id: str, batch: Batch) -> None:
        """Forget every key of a device (it was deleted)."""
        batch.delete(DEVICE_KEYS, _k(user_id, device_id))
        for table in (ONE_TIME_KEYS, FALLBACK_KEYS, TO_DEVICE):
            for k in self.store.keys(table, _k(user_id, device_id) + SEP):
                batch.delete(table, k)
        batch.delete(TO_DEVICE_DELIVERED, _k(user_id, device_id))

    # -- one-time and fallback keys --------------------------------------------------------------

    def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        prefix = _k(user_id, device_id) + SEP
        for k in self.store.keys(ONE_TIME_KEYS, prefix):
            algorithm = k[len(prefix) :].split(SEP, 1)[0].decode()
            counts[algorithm] = counts.get(algorithm, 0) + 1
        return counts

    def has_one_time_key(self, user_id: str, device_id: str, algorithm: str, key_id: str) -> dict[str, Any] | None:
        prefix = _k(user_id, device_id, algorithm) + SEP
        for k, v in self.store.iterate(ONE_TIME_KEYS, prefix):
            if k[len(prefix) + 9 :].decode() == key_id:
                return orjson.loads(v)  # type: ignore[no-any-return]
        return None

    def put_one_time_key(
        self, user_id: str, device_id: str, algorithm: str, seq: int, key_id: str, key: Any, batch: Batch
    ) -> None:
        k = _k(user_id, device_id, algorithm) + SEP + u64(seq) + SEP + key_id.encode()
        batch.put(ONE_TIME_KEYS, k, _dumps(key))

    def one_time_keys(self, user_id: str, device_id: str, algorithm: str) -> Iterator[tuple[bytes, str, Any]]:
        """(table key, key id, key) in upload order: the first is the oldest."""
        prefix = _k(user_id, device_id, algorithm) + SEP
        for k, v in self.store.iterate(ONE_TIME_KEYS, prefix):
            yield k, k[len(prefix) + 9 :].decode(), orjson.loads(v)

    def delete_one_time_key(self, table_key: bytes, batch: Batch) -> None:
        batch.delete(ONE_TIME_KEYS, table_key)

    def fallback_key(self, user_id: str, device_id: str, algorithm: str) -> dict[str, Any] | None:
        raw = self.store.get(FALLBACK_KEYS, _k(user_id, device_id, algorithm))
        return orjson.loads(raw) if raw is not None else None

    def fallback_keys(self, user_id: str, device_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        prefix = _k(user_id, device_id) + SEP
        for k, v in self.store.iterate(FALLBACK_KEYS, prefix):
            yield k[len(prefix) :].decode(), orjson.loads(v)

    def put_fallback_key(
        self, user_id: str, device_id: str, algorithm: str, entry: dict[str, Any], batch: Batch
    ) -> None:
        batch.put(FALLBACK_KEYS, _k(user_id, device_id, algorithm), _dumps(entry))

    # -- cross-signing -----------------------------------------------------------------------------

    def cross_signing_key(self, user_id: str, usage: str) -> dict[str, Any] | None:
        raw = self.store.get(CROSS_SIGNING_KEYS, _k(user_id, usage))
        return orjson.loads(raw) if raw is not None else None

    def put_cross_signing_key(self, user_id: str, usage: str, key: dict[str, Any], batch: Batch) -> None:
        batch.put(CROSS_SIGNING_KEYS, _k(user_id, usage), _dumps(key))

    def signatures_on(self, target_user: str, target_key_id: str) -> Iterator[tuple[str, str, str]]:
        """(signer user, signer key id, signature) of signatures uploaded for a key."""
        prefix = _k(target_user, target_key_id) + SEP
        for k, v in self.store.iterate(SIGNATURES, prefix):
            signer, _, key_id = k[len(prefix) :].partition(SEP)
            yield signer.decode(), key_id.decode(), v.decode()

    def put_signature(
        self, target_user: str, target_key_id: str, signer: str, signer_key_id: str, sig: str, batch: Batch
    ) -> None:
        batch.put(SIGNATURES, _k(target_user, target_key_id, signer, signer_key_id), sig.encode())

    # -- device-list changes -----------------------------------------------------------------------

    def mark_device_list_changed(self, user_id: str, batch: Batch) -> int:
        pos = batch.next_count()
        old = self.store.get(DEVICE_LIST_LATEST, user_id.encode())
        if old is not None:
            batch.delete(DEVICE_LIST_STREAM, old + SEP + user_id.encode())
        batch.put(DEVICE_LIST_STREAM, u64(pos) + SEP + user_id.encode(), b"")
        batch.put(DEVICE_LIST_LATEST, user_id.encode(), u64(pos))
        return pos

    def device_list_changes(self, after: int, upto: int) -> Iterator[str]:
        """Users whose device lists last changed at a position in (after, upto]."""
        for k in self.store.keys(DEVICE_LIST_STREAM, start=u64(after + 1), stop=u64(upto + 1)):
            yield k[9:].decode()

    def device_list_position(self, user_id: str) -> int:
        raw = self.store.get(DEVICE_LIST_LATEST, user_id.encode())
        return read_u64(raw) if raw else 0

    # -- to-device ---------------------------------------------------------------------------------

    def put_to_device(self, user_id: str, device_id: str, message: dict[str, Any], batch: Batch) -> int:
        pos = batch.next_count()
        batch.put(TO_DEVICE, _k(user_id, device_id) + SEP + u64(pos), _dumps(message))
        return pos

    def to_device(self, user_id: str, device_id: str, upto: int, limit: int) -> list[tuple[int, dict[str, Any]]]:
        prefix = _k(user_id, device_id) + SEP
        out = []
        for k, v in self.store.iterate(TO_DEVICE, prefix, stop=u64(upto + 1)):
            out.append((read_u64(k, len(prefix)), orjson.loads(v)))
            if len(out) >= limit:
                break
        return out

    def delete_to_device_upto(self, user_id: str, device_id: str, upto: int, batch: Batch) -> int:
        prefix = _k(user_id, device_id) + SEP
        n = 0
        for k in self.store.keys(TO_DEVICE, prefix, stop=u64(upto + 1)):
            batch.delete(TO_DEVICE, k)
            n += 1
        return n

    def last_delivered(self, user_id: str, device_id: str) -> int:
        raw = self.store.get(TO_DEVICE_DELIVERED, _k(user_id, device_id))
        return read_u64(raw) if raw else 0

    def set_last_delivered(self, user_id: str, device_id: str, pos: int, batch: Batch) -> None:
        batch.put(TO_DEVICE_DELIVERED, _k(user_id, device_id), u64(pos))

    def to_device_txn_seen(self, sender: str, device_id: str, txn_id: str) -> bool:
        return self.store.get(TO_DEVICE_TXNS, _k(sender, device_id, txn_id)) is not None

    def mark_to_device_txn(self, sender: str, device_id: str, txn_id: str, batch: Batch) -> None:
        batch.put(TO_DEVICE_TXNS, _k(sender, device_id, txn_id), b"")

    # -- key backup --------------------------------------------------------------------------------

    def backup_versions(self, user_id: str, *, reverse: bool = True) -> Iterator[tuple[int, dict[str, Any]]]:
        prefix = user_id.encode() + SEP
        for k, v in self.store.iterate(BACKUP_VERSIONS, prefix, reverse=reverse):
            yield read_u64(k, len(prefix)), orjson.loads(v)

    def backup_version(self, user_id: str, version: int) -> dict[str, Any] | None:
        raw = self.store.get(BACKUP_VERSIONS, user_id.encode() + SEP + u64(version))
        return orjson.loads(raw) if raw is not None else None

    def put_backup_version(self, user_id: str, version: int, info: dict[str, Any], batch: Batch) -> None:
        batch.put(BACKUP_VERSIONS, user_id.encode() + SEP + u64(version), _dumps(info))

    def _bk(self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None) -> bytes:
        k = user_id.encode() + SEP + u64(version) + SEP
        if room_id is not None:
            k += room_id.encode() + SEP
            if session_id is not None:
                k += session_id.encode()
        return k

    def backup_keys(
        self, user_id: str, version: int, room_id: str | None = None, session_id: str | None = None
    ) -> Iterator[tuple[str, str, dict[str, Any]]]:
        prefix = self._bk(user_id, version, room_id, session_id)
        base = len(self._bk(user_id, version))
        if session_id is not None:
            raw = self.store.get(BACKUP_KEYS, prefix)
            if raw is not None:
                yield room_id or "", session_id, orjson.loads(raw)
            return
        for k, v in self.store.iterate(BACKUP_KEYS, prefix):
            room, _, session = k[base:].partition(SEP)
            yield room.decode(), session.decode(), orjson.loads(v)

    def put_backup_key(
        self, user_id: str, version: int, room_id: str, session_id: str, data: dict[str, Any], batch: Batch
    ) -> None:
        batch.put(BACKUP_KEYS, self._bk(user_id, version, room_id, session_id), _dumps(data))

    def delete_backup_keys(
        self, user_id: str, version: int, batch: Batch, room_id: str | None = None, session_id: str | None = None
    ) -> int:
        prefix = self._bk(user_id, version, room_id, session_id)
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

    def count_backup_keys(self, user_id: str, version: int) -> int:
        return self.store.count(BACKUP_KEYS, self._bk(user_id, version))
