"""Kill -9 a process writing through the event pipeline, many times, at random points; after each
kill every acknowledged event is in the store and every index agrees with the events.

The writer (`tests/storage/pipeline_writer.py`) prints each event id once `send` has returned; a
line read from its pipe is an acknowledged write. Runs without and with `fsync` (group commit).
"""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.room_versions import get_room_version
from storage.check import check_consistency
from storage.database import Database
from storage.events import EVENT_META

ROOT = Path(__file__).resolve().parents[2]
KILLS = 7


def _read_until(proc: subprocess.Popen[bytes], deadline: float, buf: bytearray) -> bool:
    """Read the writer's output into `buf` until `deadline`; False once it has exited."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                return False
            buf.extend(chunk)


def _lines(buf: bytearray) -> list[str]:
    # only complete lines were acknowledged
    text = bytes(buf).decode()
    return text.split("\n")[:-1]


def _check_store(path: Path, events: set[str], rooms: set[str]) -> int:
    with Database(path) as db:
        problems = check_consistency(db, full=True)
        assert problems == [], "\n".join(problems)
        for room_id in rooms:
            room = db.ids.room(room_id)
            assert room is not None and db.rooms.info(room) is not None, f"acknowledged room {room_id} lost"
        lost = [e for e in events if (s := db.ids.event(e)) is None or db.events.get_meta(s) is None]
        assert not lost, f"acknowledged events lost: {lost[:5]}"
        for eid in events:
            short = db.ids.event(eid)
            assert short is not None
            meta = db.events.get_meta(short)
            assert meta is not None and meta.stream > 0  # in the timeline (the check matched the two)
            # the stored JSON is the event that id names
            info = db.rooms.info(meta.room)
            assert info is not None
            event = db.events.get_json(short)
            assert event is not None and compute_event_id(event, get_room_version(info["version"])) == eid
        return db.store.count(EVENT_META)


@pytest.mark.parametrize("fsync", [False, True])
def test_kill_9_during_pipeline_writes_loses_nothing_acknowledged(tmp_path: Path, fsync: bool) -> None:
    path = tmp_path / "db"
    rng = random.Random(4242 + fsync)
    events: set[str] = set()
    rooms: set[str] = set()
    for kill in range(KILLS):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.storage.pipeline_writer",
                str(path),
                str(rng.randrange(2**32)),
                "1" if fsync else "0",
            ],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        buf = bytearray()
        try:
            # wait for the writer to open the store, then let it write for a random while
            deadline = time.monotonic() + 20
            while b"ready\n" not in buf:
                running = _read_until(proc, min(deadline, time.monotonic() + 0.05), buf)
                assert running, "the writer exited before it was ready"
                assert time.monotonic() < deadline, "the writer did not start"
            _read_until(proc, time.monotonic() + rng.uniform(0.05, 0.5), buf)
        finally:
            proc.send_signal(signal.SIGKILL)
            rest, _ = proc.communicate()
        buf.extend(rest)  # lines already in the pipe were acknowledged too
        assert proc.returncode == -signal.SIGKILL, f"writer ended by itself (kill {kill})"
        for line in _lines(buf):
            kind, _, value = line.partition(" ")
            if kind == "event":
                events.add(value)
            elif kind == "room":
                rooms.add(value)
        stored = _check_store(path, events, rooms)
        assert stored >= len(events)
    assert len(events) > 100 and len(rooms) > 1, (len(events), len(rooms))
