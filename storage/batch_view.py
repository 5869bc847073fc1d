"""Read-your-writes over a batch: indexes maintained while a batch is filled (for example by the room
service's write hook) must see what earlier events of the same batch wrote before it commits."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from storage.engine import Batch, Store, Table


class Reader(Protocol):
    """What index readers need: a `Store`, or a `BatchView` that also sees uncommitted writes."""

    def get(self, table: Table, key: bytes) -> bytes | None: ...

    def iterate(self, table: Table, prefix: bytes = b"", *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]: ...


class BatchView:
    """The store as it will be once `batch` commits: writes go to the batch and are readable at once."""

    __slots__ = ("_pending", "batch", "store")

    def __init__(self, store: Store, batch: Batch) -> None:
        self.store = store
        self.batch = batch
        self._pending: dict[bytes, dict[bytes, bytes | None]] = {}  # table prefix -> key -> value (None: deleted)

    def reload(self) -> None:
        """Read the pending writes again from the batch itself (after `Batch.rollback_to` dropped
        some): every key starts with its table's prefix, the table name and 0xFF."""
        pending: dict[bytes, dict[bytes, bytes | None]] = {}
        for full_key, value in self.batch.ops:
            cut = full_key.find(b"\xff") + 1
            pending.setdefault(full_key[:cut], {})[full_key[cut:]] = value
        self._pending = pending

    def get(self, table: Table, key: bytes) -> bytes | None:
        mine = self._pending.get(table.prefix)
        if mine is not None and key in mine:
            return mine[key]
        return self.store.get(table, key)

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        self.batch.put(table, key, value)
        self._pending.setdefault(table.prefix, {})[key] = value

    def delete(self, table: Table, key: bytes) -> None:
        self.batch.delete(table, key)
        self._pending.setdefault(table.prefix, {})[key] = None

    def iterate(self, table: Table, prefix: bytes = b"", *, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """Keys (without the table prefix) and values under `prefix`, merged with the pending writes."""
        pending = self._pending.get(table.prefix)
        mine = {k: v for k, v in pending.items() if k.startswith(prefix)} if pending else {}
        if not mine:
            yield from self.store.iterate(table, prefix, reverse=reverse)
            return
        merged = dict(self.store.iterate(table, prefix))
        for k, v in mine.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = v
        for k in sorted(merged, reverse=reverse):
            yield k, merged[k]
