"""All the tables of one data directory, opened together."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from storage import accounts, events, rooms, shortids, state_snapshots
from storage.accounts import AccountStore
from storage.engine import META, Store, Table
from storage.events import EventStore
from storage.rooms import RoomStore
from storage.shortids import ShortIds
from storage.state_snapshots import StateSnapshots

ALL_TABLES: tuple[Table, ...] = (
    META,
    *shortids.TABLES,
    *events.TABLES,
    *state_snapshots.TABLES,
    *rooms.TABLES,
    *accounts.TABLES,
)


class Database:
    def __init__(
        self, path: str | os.PathLike[str], *, fsync: bool = False, cache_mb: int = 32, store: Store | None = None
    ) -> None:
        self.path = Path(path)
        self.store = store if store is not None else Store(self.path, fsync=fsync, cache_mb=cache_mb)
        self.ids = ShortIds(self.store)
        self.events = EventStore(self.store)
        self.rooms = RoomStore(self.store)
        self.snapshots = StateSnapshots(self.store)
        self.accounts = AccountStore(self.store)

    @classmethod
    @contextlib.contextmanager
    def open_read_only(cls, path: str | os.PathLike[str]) -> Iterator[Database]:
        """All tables, read-only, from a snapshot of the store (works while a server runs)."""
        with Store.open_read_only(path) as store:
            yield cls(path, store=store)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
