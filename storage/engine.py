"""The LevelDB engine: tables as key prefixes, one atomic batch per logical operation, the global
stream counter, group commit when `fsync` is on, schema versions and migrations.

Knows bytes and keys, no Matrix rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import plyvel

from storage.cache import leveldb_sizes
from storage.codec import prefix_upper_bound, read_u64, u64


class StoreError(Exception):
    """The store cannot be used; the message tells the admin what to do."""


class StoreCorrupted(StoreError):
    pass


class StoreLocked(StoreError):
    pass


class StoreReadOnly(StoreError):
    """The store's files or folder cannot be written (permissions, a read-only mount)."""


class Table:
    """A table: every key starts with `name` and 0xFF. `key_parts` and `value` describe the layout so
    `inspect` can decode any key: part kinds are "str" and "bytes" (0xFF-separated) and fixed 8-byte
    ones: "u64", "room", "event", "statekey", "snapshot", "order" (short ids are shown by name). Value
    kinds add "json", "empty", "event*" (a run of short event ids) and the records of their modules."""

    __slots__ = ("description", "key_parts", "name", "prefix", "value")

    name: Final[str]
    key_parts: Final[tuple[str, ...]]
    value: Final[str]
    description: Final[str]
    prefix: Final[bytes]

    def __init__(self, name: str, key_parts: tuple[str, ...], value: str, description: str) -> None:
        self.name = name
        self.key_parts = key_parts
        self.value = value
        self.description = description
        self.prefix = name.encode("ascii") + b"\xff"


META = Table("meta", ("str",), "meta", "store metadata: schema version, counters")
_K_SCHEMA = b"schema_version"
_K_COUNTER = b"stream_counter"
_K_MAGIC = b"magic"
_MAGIC = b"homeserver-store"


class StreamCounter:
    """The one global counter that orders everything sync reads.

    Writers take counts; a count stays "in flight" until its batch is written or dropped. Readers
    see only positions below the lowest count in flight, so no reader skips a write that lands later
    with a smaller position.
    """

    def __init__(self, persisted: int) -> None:
        self._high = persisted
        self._in_flight: set[int] = set()
        self._visible = persisted
        self._lock = threading.Lock()

    def allocate(self) -> int:
        with self._lock:
            self._high += 1
            self._in_flight.add(self._high)
            return self._high

    def release(self, counts: list[int]) -> None:
        with self._lock:
            self._in_flight.difference_update(counts)
            self._visible = min(self._in_flight) - 1 if self._in_flight else self._high

    @property
    def high(self) -> int:
        return self._high

    @property
    def visible(self) -> int:
        """The highest position a reader may rely on: every write at or below it has landed."""
        return self._visible


class Batch:
    """The writes of one logical operation, applied atomically by `Store.commit`."""

    __slots__ = ("_counts", "_done", "_store", "on_abort", "on_commit", "ops")

    def __init__(self, store: Store) -> None:
        self._store = store
        self.ops: list[tuple[bytes, bytes | None]] = []
        self._counts: list[int] = []
        self._done = False
        # Callbacks run after the batch is durable (e.g. to publish cache entries made for it),
        # or when it is dropped (to forget ids allocated for it).
        self.on_commit: list[Callable[[], None]] = []
        self.on_abort: list[Callable[[], None]] = []

    def put(self, table: Table, key: bytes, value: bytes) -> None:
        self.ops.append((table.prefix + key, value))

    def delete(self, table: Table, key: bytes) -> None:
        self.ops.append((table.prefix + key, None))

    def next_count(self) -> int:
        """A new position on the global stream, visible to readers once this batch is committed."""
        n = self._store.counter.allocate()
        self._counts.append(n)
        return n

    @property
    def counts(self) -> list[int]:
        return list(self._counts)

    def savepoint(self) -> tuple[int, int, int]:
        """Where the batch stands now, for `rollback_to`."""
        return len(self.ops), len(self.on_commit), len(self.on_abort)

    def rollback_to(self, point: tuple[int, int, int]) -> None:
        """Drop the writes and callbacks added since `savepoint` (positions taken since stay taken:
        they are released with the batch, unused)."""
        ops, on_commit, on_abort = point
        del self.ops[ops:]
        del self.on_commit[on_commit:]
        del self.on_abort[on_abort:]

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.ops.clear()
            self._store.counter.release(self._counts)
            callbacks = self.on_abort
            self._drop_callbacks()
            for callback in callbacks:
                callback()

    def _finish(self) -> None:
        self._done = True
        self._store.counter.release(self._counts)
        callbacks = self.on_commit
        self._drop_callbacks()
        self.ops = []
        for callback in callbacks:
            callback()

    def _drop_callbacks(self) -> None:
        # Callbacks often close over the batch (a reference cycle): dropping them once the batch is
        # done lets it be freed at once instead of waiting for the cyclic garbage collector.
        self.on_commit = []
        self.on_abort = []

    async def commit(self) -> None:
        await self._store.commit(self)

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None or not self._done:
            # Leaving the block without committing drops everything: nothing half-written.
            self.abort()


Migration = Callable[["Store", Batch], None]
# MIGRATIONS[i] upgrades a store at schema version i+1 to i+2. A new store starts at the latest. Each
# is named "module:function" and imported when needed: migrations live with the tables they change,
# and those modules import this one.
MIGRATIONS: list[str] = [
    "storage.push:migrate_notification_records",  # 1 -> 2: one notification record per event
    "storage.json_repair:remove_unencodable_json",  # 2 -> 3: client JSON nested too deep to re-encode
    "storage.external_ids:index_by_user",  # 3 -> 4: which external ids each user has
    "storage.sliding_sync:backfill_room_activity",  # 4 -> 5: each user's rooms ordered by activity
]
SCHEMA_VERSION = 1 + len(MIGRATIONS)


def _fill(wb: Any, ops: list[tuple[bytes, bytes | None]]) -> None:
    """Add a batch's operations to a plyvel write batch (plyvel does not export its type)."""
    for k, v in ops:
        if v is None:
            wb.delete(k)
        else:
            wb.put(k, v)


def _migration(index: int) -> Migration:
    module, _, name = MIGRATIONS[index].partition(":")
    found: Migration = getattr(importlib.import_module(module), name)
    return found


class Store:
    """A LevelDB store in `path`.

    `fsync=True` makes every commit durable against power loss; concurrent commits then share one
    synced write (group commit). Without it a committed write survives a process crash (`kill -9`),
    since LevelDB appends it to its log before `commit` returns.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = False,
        cache_mb: int = 32,
        snapshot_db: plyvel.DB | None = None,
    ) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.read_only = snapshot_db is not None
        if snapshot_db is not None:
            self.db = snapshot_db
        else:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise StoreError(f"{self.path} is a file, not a store: move it away or restore a backup") from None
            except OSError as e:
                raise StoreReadOnly(f"cannot create the store folder {self.path}: {e.strerror}") from None
            self.db = _open_db(self.path, create=True, cache_mb=cache_mb)
        try:
            self._check_and_migrate()
        except plyvel.CorruptionError as e:
            self.db.close()
            raise _corrupted(self.path, e) from None
        except BaseException:
            self.db.close()
            raise
        counter = self.db.get(META.prefix + _K_COUNTER)
        self.counter = StreamCounter(read_u64(counter) if counter else 0)
        self._pending: list[tuple[Batch, asyncio.Future[None]]] = []
        self._flushing = False
        self._write_lock = threading.Lock()

    @classmethod
    @contextlib.contextmanager
    def open_read_only(cls, path: str | os.PathLike[str]) -> Iterator[Store]:
        """A read-only view of the store as it is now, even while a running server holds it."""
        with open_snapshot_copy(path) as db:
            yield cls(path, snapshot_db=db)

    # -- opening ---------------------------------------------------------------------------------

    def _check_and_migrate(self) -> None:
        magic = self.db.get(META.prefix + _K_MAGIC)
        schema = self.db.get(META.prefix + _K_SCHEMA)
        if self.read_only:
            if magic != _MAGIC or schema is None or read_u64(schema) > SCHEMA_VERSION:
                raise StoreError(f"{self.path} is not a store this version can read")
            return
        if magic is None:
            if any(True for _ in self.db.iterator(include_value=False)):
                raise StoreCorrupted(
                    f"{self.path} holds data but no store header: it is not a homeserver store or its "
                    "creation was interrupted. Move it away and start again, or restore a backup."
                )
            with self.db.write_batch(sync=True) as wb:
                wb.put(META.prefix + _K_MAGIC, _MAGIC)
                wb.put(META.prefix + _K_SCHEMA, u64(SCHEMA_VERSION))
                wb.put(META.prefix + _K_COUNTER, u64(0))
            return
        if magic != _MAGIC or schema is None or len(schema) != 8:
            raise StoreCorrupted(f"{self.path}: the store header is damaged; restore a backup")
        version = read_u64(schema)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer version of the server (schema {version}, "
                f"this one knows up to {SCHEMA_VERSION}); upgrade the server"
            )
        while version < SCHEMA_VERSION:
            batch = Batch(self)
            _migration(version - 1)(self, batch)
            batch.put(META, _K_SCHEMA, u64(version + 1))
            with self.db.write_batch(sync=True, transaction=True) as wb:  # each step whole or not at all
                _fill(wb, batch.ops)
            version += 1

    @property
    def schema_version(self) -> int:
        raw = self.db.get(META.prefix + _K_SCHEMA)
        return read_u64(raw) if raw else 0

    # -- reading ---------------------------------------------------------------------------------

    def get(self, table: Table, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self.db.get(table.prefix + key)
        except plyvel.CorruptionError as e:
            raise _corrupted(self.path, e) from None
        return value

    def verify(self) -> int:
        """Read every block, checking checksums; return the number of keys. Raises `StoreCorrupted`."""
        n = 0
        try:
            for _ in self.db.iterator(include_value=False, verify_checksums=True, fill_cache=False):
                n += 1
        except plyvel.CorruptionError as e:
            raise _corrupted(self.path, e) from None
        return n

    def iterate(
        self,
        table: Table,
        prefix: bytes = b"",
        *,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
        include_value: bool = True,
    ) -> Iterator[tuple[bytes, bytes]]:
        """Keys (without the table prefix) and values in key order.

        `start` is inclusive and `stop` exclusive, both relative to the table (and `prefix`).
        """
        full = table.prefix + prefix
        lo = full + start if start is not None else full
        hi = full + stop if stop is not None else prefix_upper_bound(full)
        cut = len(table.prefix)
        if reverse:
            # plyvel 1.5.1 yields nothing for a reverse range whose highest key is its `start`:
            # iterate down from `hi` unbounded and stop below `lo` by hand
            rit = self.db.iterator(stop=hi, reverse=True, include_value=include_value)
            try:
                for item in rit:
                    k = item[0] if include_value else item
                    if k < lo:
                        break
                    yield k[cut:], item[1] if include_value else b""
            except plyvel.CorruptionError as e:
                raise _corrupted(self.path, e) from None
            return
        it = self.db.iterator(start=lo, stop=hi, reverse=reverse, include_value=include_value)
        try:
            if include_value:
                for k, v in it:
                    yield k[cut:], v
            else:
                for k in it:
                    yield k[cut:], b""
        except plyvel.CorruptionError as e:
            raise _corrupted(self.path, e) from None

    def keys(self, table: Table, prefix: bytes = b"", **kwargs: object) -> Iterator[bytes]:
        for k, _ in self.iterate(table, prefix, include_value=False, **kwargs):  # type: ignore[arg-type]
            yield k

    def count(self, table: Table, prefix: bytes = b"") -> int:
        return sum(1 for _ in self.db.iterator(prefix=table.prefix + prefix, include_value=False))

    # -- writing ---------------------------------------------------------------------------------

    def batch(self) -> Batch:
        return Batch(self)

    def _write_ops(self, ops: list[tuple[bytes, bytes | None]], *, sync: bool) -> None:
        if self.read_only:
            raise StoreError("this view of the store is read-only")
        # transaction=True: an exception while filling the batch discards it instead of writing part of it.
        with self._write_lock, self.db.write_batch(sync=sync, transaction=True) as wb:
            _fill(wb, ops)
            # The counter's high-water mark only grows, so writing it with every batch is safe.
            wb.put(META.prefix + _K_COUNTER, u64(self.counter.high))

    def commit_now(self, batch: Batch) -> None:
        """Write `batch` at once on this thread (synced when `fsync` is on)."""
        if batch._done:
            raise StoreError("batch already committed or aborted")
        try:
            self._write_ops(batch.ops, sync=self.fsync)
        except BaseException:
            batch.abort()
            raise
        batch._finish()

    async def commit(self, batch: Batch) -> None:
        """Write `batch` atomically. With `fsync`, wait for a synced write shared with other commits."""
        if not self.fsync:
            self.commit_now(batch)
            return
        if batch._done:
            raise StoreError("batch already committed or aborted")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, future))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                group, self._pending = self._pending, []
                ops = [op for batch, _ in group for op in batch.ops]
                try:
                    await loop.run_in_executor(None, functools.partial(self._write_ops, ops, sync=True))
                except BaseException as e:
                    for batch, fut in group:
                        batch.abort()
                        if not fut.done():
                            fut.set_exception(e)
                    continue
                for batch, fut in group:
                    batch._finish()
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._flushing = False

    def close(self) -> None:
        if not self.db.closed:
            self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _error_text(e: Exception) -> str:
    """plyvel's messages are bytes: show them as text."""
    return e.args[0].decode("utf-8", "replace") if e.args and isinstance(e.args[0], bytes) else str(e)


def _corrupted(path: Path, e: Exception) -> StoreCorrupted:
    return StoreCorrupted(
        f"the store in {path} is corrupted ({_error_text(e)}). Stop the server, back up the folder, then run "
        f"`python -m homeserver repair --data-dir {path.parent}` to rebuild what LevelDB can recover"
    )


def _open_db(path: Path, *, create: bool, cache_mb: int) -> plyvel.DB:
    sizes = leveldb_sizes(cache_mb)
    try:
        return plyvel.DB(
            str(path),
            create_if_missing=create,
            paranoid_checks=True,
            # sized from the server's one memory budget: see storage/cache.py
            lru_cache_size=sizes["block_cache"],
            write_buffer_size=sizes["write_buffer"],
            max_open_files=sizes["max_open_files"],
            block_size=16 * 1024,
            bloom_filter_bits=10,
            compression="snappy",
        )
    except plyvel.CorruptionError as e:
        raise _corrupted(path, e) from None
    except plyvel.IOError as e:
        raise _io_error(path, e, "open") from None


def _io_error(path: Path, e: Exception, doing: str) -> StoreError:
    """What LevelDB's I/O error on `path` means, for one line to the admin."""
    text = _error_text(e)
    # checked before "lock": a store we may not write fails on its LOCK file with EACCES/EROFS
    if "Permission denied" in text or "Read-only file system" in text:
        reason = "a read-only file system" if "Read-only" in text else f"permission denied for uid {os.getuid()}"
        return StoreReadOnly(
            f"the store in {path} is read-only ({reason}); the server must write to it: make the folder "
            "and its files writable by this user, or read it with `python -m homeserver inspect`"
        )
    if "lock" in text.lower():
        return StoreLocked(
            f"the store in {path} is in use by another process (a running server?): stop it or use another "
            "data_dir; `python -m homeserver inspect` reads a snapshot without taking the lock"
        )
    return StoreError(f"cannot {doing} the store in {path}: {text}")


def repair(path: str | os.PathLike[str]) -> None:
    """Let LevelDB rebuild its metadata from whatever table files survive. Raises `StoreError`
    (`StoreLocked`, `StoreReadOnly`) with one line saying why it could not."""
    try:
        plyvel.repair_db(str(path), paranoid_checks=True)
    except plyvel.IOError as e:
        raise _io_error(Path(path), e, "repair") from None
    except plyvel.Error as e:
        raise StoreError(f"cannot repair the store in {path}: {_error_text(e)}") from None


@contextlib.contextmanager
def open_snapshot_copy(path: str | os.PathLike[str]) -> Iterator[plyvel.DB]:
    """Open a read-only view of a store even while a server holds its lock.

    LevelDB's table files never change once written, so they are hard-linked; the log, manifest and
    CURRENT are copied. Opening the copy replays the log up to its last complete record.
    """
    import shutil
    import tempfile

    src = Path(path)
    if not (src / "CURRENT").exists():
        raise StoreError(f"no store in {src} (no CURRENT file): check the data directory (--data-dir or data_dir)")
    with tempfile.TemporaryDirectory(prefix="homeserver-inspect-") as tmp:
        dst = Path(tmp) / "db"
        dst.mkdir()
        for _ in range(5):  # a compaction may delete a file between listing and linking: retry
            try:
                for f in src.iterdir():
                    if f.name == "LOCK":
                        continue
                    target = dst / f.name
                    if target.exists():
                        target.unlink()
                    if f.suffix in (".ldb", ".sst"):
                        try:
                            os.link(f, target)
                        except OSError:
                            shutil.copy2(f, target)
                    else:
                        shutil.copy2(f, target)
                db = plyvel.DB(str(dst), create_if_missing=False, paranoid_checks=False)
                break
            except (FileNotFoundError, plyvel.Error):
                continue
        else:
            raise StoreError(f"could not take a consistent snapshot of {src}; try again")
        try:
            yield db
        finally:
            db.close()
