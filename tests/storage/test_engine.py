from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plyvel
import pytest

from storage import engine
from storage.codec import key, u64
from storage.engine import Store, StoreCorrupted, StoreError, StoreLocked, Table

T = Table("test", ("str", "u64"), "bytes", "a test table")
OTHER = Table("test2", ("str",), "bytes", "another table")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "db")
    yield s
    s.close()


def test_put_get_iterate_in_key_order(store: Store) -> None:
    with store.batch() as b:
        for n in (3, 1, 2, 256, 255):
            b.put(T, key("room", n), str(n).encode())
        b.put(OTHER, b"x", b"y")
        store.commit_now(b)
    assert store.get(T, key("room", 2)) == b"2"
    assert [v for _, v in store.iterate(T, b"room\xff")] == [b"1", b"2", b"3", b"255", b"256"]
    assert next(v for _, v in store.iterate(T, b"room\xff", reverse=True)) == b"256"
    assert [v for _, v in store.iterate(T, b"room\xff", start=u64(2), stop=u64(255))] == [b"2", b"3"]
    assert store.count(T) == 5 and store.count(OTHER) == 1


def test_an_exception_inside_a_batch_writes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.batch() as b:
        b.put(T, b"a", b"1")
        b.next_count()
        raise RuntimeError("fails half-way")
    assert store.get(T, b"a") is None
    # the count it took is released: readers are not held back by it
    assert store.counter.visible == store.counter.high


def test_a_failing_write_leaves_nothing_half_written(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    real_db = store.db

    class ExplodingBatch:
        """Wraps LevelDB's batch and fails on the second put, as a full disk or a bug would."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.puts = 0

        def __enter__(self) -> ExplodingBatch:
            self.inner.__enter__()
            return self

        def put(self, k: bytes, v: bytes) -> None:
            self.puts += 1
            if self.puts == 2:
                raise OSError("disk vanished mid-batch")
            self.inner.put(k, v)

        def delete(self, k: bytes) -> None:
            self.inner.delete(k)

        def __exit__(self, *exc: Any) -> Any:
            return self.inner.__exit__(*exc)

    class DBProxy:
        def write_batch(self, **kw: Any) -> ExplodingBatch:
            return ExplodingBatch(real_db.write_batch(**kw))

        def __getattr__(self, name: str) -> Any:
            return getattr(real_db, name)

    monkeypatch.setattr(store, "db", DBProxy())
    batch = store.batch()
    batch.put(T, b"a", b"1")
    batch.put(T, b"b", b"2")
    count = batch.next_count()
    with pytest.raises(OSError):
        store.commit_now(batch)
    monkeypatch.undo()
    assert store.get(T, b"a") is None and store.get(T, b"b") is None
    assert store.counter.visible >= count  # the failed batch no longer holds readers back


def test_counter_visibility_never_skips_a_write_in_flight(store: Store) -> None:
    first, second = store.batch(), store.batch()
    n1 = first.next_count()
    n2 = second.next_count()
    assert n2 == n1 + 1
    second.put(T, b"second", b"")
    store.commit_now(second)
    # n2 is written but n1 is still in flight: readers must not see past n1 - 1
    assert store.counter.visible == n1 - 1
    first.put(T, b"first", b"")
    store.commit_now(first)
    assert store.counter.visible == n2


def test_counter_survives_reopen(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as s:
        with s.batch() as b:
            for _ in range(5):
                b.next_count()
            s.commit_now(b)
        high = s.counter.high
    with Store(tmp_path / "db") as s:
        assert s.counter.visible == high
        with s.batch() as b:
            assert b.next_count() == high + 1


def test_group_commit_shares_synced_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Store(tmp_path / "db", fsync=True)
    writes = []
    real = s._write_ops

    def counting(ops: list[tuple[bytes, bytes | None]], *, sync: bool) -> None:
        writes.append((len(ops), sync))
        time.sleep(0.005)  # a sync takes time; commits arriving meanwhile join the next group
        real(ops, sync=sync)

    monkeypatch.setattr(s, "_write_ops", counting)

    async def one(i: int) -> None:
        b = s.batch()
        b.put(T, key("k", i), b"v")
        b.next_count()
        await b.commit()

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(50)))

    asyncio.run(main())
    assert all(sync for _, sync in writes)
    assert len(writes) < 50  # commits were grouped
    assert sum(n for n, _ in writes) == 50
    assert s.count(T) == 50
    assert s.counter.visible == 50
    s.close()


def test_a_store_from_a_newer_server_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as s:
        s.db.put(engine.META.prefix + b"schema_version", u64(engine.SCHEMA_VERSION + 1))
    with pytest.raises(StoreError, match="newer version"):
        Store(tmp_path / "db")


def test_a_folder_with_foreign_data_is_refused(tmp_path: Path) -> None:
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    db.put(b"something", b"else")
    db.close()
    with pytest.raises(StoreCorrupted, match="not a homeserver store"):
        Store(tmp_path / "db")


def test_damaged_table_file_is_detected(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as s:
        with s.batch() as b:
            for i in range(2000):
                b.put(T, key("k", i), os.urandom(100))
            s.commit_now(b)
        s.db.compact_range()
    tables = sorted((tmp_path / "db").glob("*.ldb"))
    assert tables
    data = bytearray(tables[0].read_bytes())
    for i in range(100, len(data) - 100, 97):
        data[i] ^= 0x55
    tables[0].write_bytes(bytes(data))
    # found at start when the damage hits what start reads, else by any read or by verify()
    try:
        s2 = Store(tmp_path / "db")
    except StoreCorrupted as e:
        assert "repair" in str(e)
        return
    with pytest.raises(StoreCorrupted, match="repair"):
        s2.verify()
    s2.close()


def test_second_opener_gets_a_clear_message_and_snapshot_copy_works(store: Store) -> None:
    with store.batch() as b:
        b.put(T, b"a", b"1")
        store.commit_now(b)
    with pytest.raises(StoreLocked, match="in use"):
        Store(store.path)
    with engine.open_snapshot_copy(store.path) as db:
        assert db.get(T.prefix + b"a") == b"1"


WRITER = textwrap.dedent(
    """
    import sys
    from storage.engine import Store, Table
    from storage.codec import key
    T = Table("test", ("str", "u64"), "bytes", "")
    IDX = Table("idx", ("u64",), "bytes", "")
    s = Store(sys.argv[1], fsync=sys.argv[2] == "1")
    i = int(sys.argv[3])
    while True:
        b = s.batch()
        n = b.next_count()
        # an "event" and two index entries that must agree with it
        b.put(T, key("ev", i), b"x" * 500)
        b.put(IDX, key(n), str(i).encode())
        b.put(T, key("by-pos", n), str(i).encode())
        s.commit_now(b)
        sys.stdout.write(f"{i}\\n")
        sys.stdout.flush()
        i += 1
    """
)


@pytest.mark.parametrize("fsync", [False, True])
def test_kill_9_loses_no_acknowledged_write(tmp_path: Path, fsync: bool) -> None:
    idx = Table("idx", ("u64",), "bytes", "")
    acknowledged: set[int] = set()
    rng = random.Random(1234)
    next_i = 0
    root = Path(__file__).resolve().parents[2]
    for _ in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path / "db"), "1" if fsync else "0", str(next_i)],
            stdout=subprocess.PIPE,
            cwd=root,
            text=True,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + rng.uniform(0.2, 0.6)
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acknowledged.add(int(line))
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        # lines already written to the pipe were acknowledged too
        acknowledged.update(int(x) for x in rest.split())
        with Store(tmp_path / "db") as s:
            events = {int.from_bytes(k[3:], "big") for k in s.keys(T, b"ev\xff")}
            missing = acknowledged - events
            assert not missing, f"acknowledged writes lost: {sorted(missing)[:5]}"
            by_pos = {int(v) for _, v in s.iterate(T, b"by-pos\xff")}
            indexed = {int(v) for _, v in s.iterate(idx)}
            # every index agrees with the events: all three keys of a batch or none
            assert events == by_pos == indexed
            next_i = max(events | {0}) + 1
    assert len(acknowledged) > 50
