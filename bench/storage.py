"""The event pipeline on LevelDB: events persisted per second, CPU per event, bytes per event, and
the state cost of a membership change in a big room, beside the raw LevelDB limits of this machine
measured in the same run.

    .venv/bin/python bench/storage.py                  # the table
    .venv/bin/python bench/storage.py --json           # JSON on stdout
    .venv/bin/python bench/storage.py --events 20000 --members 10000 --profile

What runs (each on a fresh store in a temporary folder, one process, one core):

- raw LevelDB: small puts (24-byte keys, 60-byte values) in batches of 100, unsynced; synced
  commits of one small batch each. Same engine options as the server's store.
- linear: local messages through `EventPipeline.send` in one room (build, auth, hash, sign, one
  batch); CPU per event is `time.process_time`. Then with `fsync` on and 8 rooms sending at once,
  so that group commit shares one synced write between them.
- forked: signed PDUs from two remote servers, each extending its own branch of one room,
  received interleaved through `EventPipeline.receive`: the room has two forward extremities
  almost all the time, so every event needs the state resolution of the two branches (a state
  change every 10 events per branch, a merge every 100 events); the pipeline computes one when a
  branch's state changed and reuses the last one otherwise. Building and signing the PDUs is not
  timed; checking their format, signature and hashes is.
- disk: the folder's size after `compact_range()`, divided by the events stored.
- big room: a room with `--members` joined members, then 1,000 membership changes (joins of new
  users and leaves): stored snapshot entries per change, the bytes the snapshot tables grew by per
  change, and CPU per change.

Ratios: `effective puts/s` is events/s times the LevelDB writes in one event's batch; `vs raw` is
that over the raw batched-put rate. For fsync, `events per synced commit` is events/s over the raw
synced commit rate.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import nacl.signing

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from homeserver.protocol.auth_rules import auth_types_for_event  # noqa: E402
from homeserver.protocol.event_signing import add_hashes_and_signatures  # noqa: E402
from homeserver.protocol.room_versions import RoomVersion, get_room_version  # noqa: E402
from homeserver.protocol.signing import generate_signing_key  # noqa: E402
from homeserver.rooms import pipeline as pipeline_module  # noqa: E402
from homeserver.rooms.creation import RoomCreation, create_room  # noqa: E402
from homeserver.rooms.pipeline import EventPipeline, ServerIdentity  # noqa: E402
from storage.database import Database  # noqa: E402
from storage.engine import Store  # noqa: E402
from storage.events import EVENT_META  # noqa: E402
from storage.state_snapshots import SNAPSHOT, SNAPSHOT_BY_HASH  # noqa: E402

LOCAL = "bench.test"
ALICE = f"@alice:{LOCAL}"


def folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def table_bytes(db: Database, *tables: Any) -> int:
    return sum(len(t.prefix) + len(k) + len(v) for t in tables for k, v in db.store.iterate(t))


def new_pipeline(path: Path, *, fsync: bool = False) -> tuple[Database, EventPipeline]:
    db = Database(path, fsync=fsync)
    key_id, key = generate_signing_key("bench")
    return db, EventPipeline(db, ServerIdentity(LOCAL, key_id, key))


# -- raw LevelDB ------------------------------------------------------------------------------------


def raw_leveldb(tmp: Path, n_puts: int, n_synced: int) -> dict[str, float]:
    with Store(tmp / "raw") as store:
        db = store.db
        value = os.urandom(60)
        t0, c0 = time.perf_counter(), time.process_time()
        for start in range(0, n_puts, 100):
            with db.write_batch() as wb:
                for i in range(start, start + 100):
                    wb.put(b"raw\xff" + i.to_bytes(8, "big") + os.urandom(12), value)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        t0 = time.perf_counter()
        for i in range(n_synced):
            with db.write_batch(sync=True) as wb:
                wb.put(b"sync\xff" + i.to_bytes(8, "big"), value)
        synced = time.perf_counter() - t0
    return {
        "puts_per_s": n_puts / wall,
        "puts_per_cpu_s": n_puts / cpu,
        "synced_commits_per_s": n_synced / synced,
        "synced_commit_ms": synced / n_synced * 1000,
    }


# -- linear timeline --------------------------------------------------------------------------------


class OpCounter:
    """Counts the LevelDB writes (puts and deletes) of each committed batch."""

    def __init__(self, store: Store) -> None:
        self.ops = 0
        self.batches = 0
        real = store._write_ops

        def counting(ops: list[tuple[bytes, bytes | None]], *, sync: bool) -> None:
            self.ops += len(ops) + 1  # + the stream counter
            self.batches += 1
            real(ops, sync=sync)

        store._write_ops = counting  # type: ignore[method-assign]


async def linear(tmp: Path, n: int, profile: bool) -> tuple[dict[str, float], str]:
    path = tmp / "linear"
    db, pipe = new_pipeline(path)
    room_id = await create_room(pipe, RoomCreation(creator=ALICE, room_version="10", preset="public_chat"))
    for i in range(200):  # warm the caches
        await pipe.send(room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": f"warm-up {i}"})
    counter = OpCounter(db.store)
    prof = cProfile.Profile() if profile else None
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    if prof:
        prof.enable()
    for i in range(n):
        await pipe.send(room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": f"message number {i}"})
    if prof:
        prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    db.store.db.compact_range()
    events = n + 200 + 6
    db.close()
    report = ""
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(25)
        report = out.getvalue()
    return {
        "events": n,
        "events_per_s": n / wall,
        "cpu_us_per_event": cpu / n * 1e6,
        "writes_per_event": counter.ops / counter.batches,
        "bytes_per_event": folder_size(path) / events,
    }, report


async def linear_fsync(tmp: Path, n: int, rooms: int) -> dict[str, float]:
    db, pipe = new_pipeline(tmp / "fsync", fsync=True)
    room_ids = [
        await create_room(pipe, RoomCreation(creator=ALICE, room_version="10", preset="public_chat"))
        for _ in range(rooms)
    ]
    counter = OpCounter(db.store)

    async def writer(room_id: str, count: int) -> None:
        for i in range(count):
            await pipe.send(room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": f"message {i}"})

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(writer(r, n // rooms) for r in room_ids))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    total = n // rooms * rooms
    db.close()
    return {
        "events": total,
        "rooms": rooms,
        "events_per_s": total / wall,
        "cpu_us_per_event": cpu / total * 1e6,
        "events_per_synced_write": total / max(counter.batches, 1),
    }


# -- forked graph from two servers ------------------------------------------------------------------


class Remote:
    def __init__(self, name: str) -> None:
        self.name = name
        self.key_id, self.key = generate_signing_key("r")
        self.ts = int(time.time() * 1000)

    def pdu(
        self,
        rv: RoomVersion,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None,
        prev: list[str],
        auth: list[str],
        depth: int,
    ) -> dict[str, Any]:
        self.ts += 1
        event: dict[str, Any] = {
            "room_id": room_id,
            "sender": sender,
            "type": event_type,
            "content": content,
            "origin_server_ts": self.ts,
            "origin": self.name,
            "depth": depth,
            "prev_events": prev,
            "auth_events": auth,
        }
        if state_key is not None:
            event["state_key"] = state_key
        add_hashes_and_signatures(event, rv, self.name, self.key_id, self.key)
        return event


class Forked:
    """A room on two remote servers, each extending its own branch, merging now and then."""

    def __init__(self, db: Database, pipe: EventPipeline, rv: RoomVersion, room_id: str) -> None:
        self.db, self.pipe, self.rv, self.room_id = db, pipe, rv, room_id
        self.remotes = {name: Remote(name) for name in ("one.test", "two.test")}
        self.keys_by_server = {name: {r.key_id: r.key.verify_key} for name, r in self.remotes.items()}

    async def keys(self, server: str, key_ids: list[str]) -> Mapping[str, nacl.signing.VerifyKey]:
        return self.keys_by_server.get(server, {})

    def state_after(self, event_id: str) -> dict[tuple[str, str], str]:
        short = self.db.ids.event(event_id)
        meta = self.db.events.get_meta(short) if short is not None else None
        assert meta is not None
        ids = self.db.ids
        return {ids.state_key_of(k): ids.event_id(v) for k, v in self.db.snapshots.load(meta.state_after).items()}

    def depth(self, event_id: str) -> int:
        short = self.db.ids.event(event_id)
        meta = self.db.events.get_meta(short) if short is not None else None
        assert meta is not None
        return meta.depth

    def build(
        self,
        server: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None,
        prev: list[str],
        state: dict[tuple[str, str], str],
    ) -> dict[str, Any]:
        skeleton = {"type": event_type, "sender": sender, "content": content, "state_key": state_key}
        if state_key is None:
            del skeleton["state_key"]
        auth = [state[k] for k in auth_types_for_event(skeleton, self.rv) if k in state]
        depth = max(self.depth(p) for p in prev) + 1
        return self.remotes[server].pdu(
            self.rv, self.room_id, sender, event_type, content, state_key, prev, auth, depth
        )


async def forked(tmp: Path, n: int) -> dict[str, float]:
    path = tmp / "forked"
    db, pipe = new_pipeline(path)
    rv = get_room_version("10")
    users = {"one.test": "@ann:one.test", "two.test": "@bo:two.test"}
    room_id = await create_room(
        pipe,
        RoomCreation(
            creator=ALICE,
            room_version="10",
            preset="public_chat",
            power_level_content_override={"users": {u: 50 for u in users.values()}},
        ),
    )
    fork = Forked(db, pipe, rv, room_id)
    tip = db.ids.event_id(db.rooms.extremities(db.ids.room(room_id) or 0)[0])
    for server, user in users.items():  # both join, one after the other
        pdu = fork.build(server, user, "m.room.member", {"membership": "join"}, user, [tip], fork.state_after(tip))
        tip = (await pipe.receive(pdu, fork.keys)).event_id
    tips = {server: tip for server in users}
    computed = 0
    namespace = vars(pipeline_module)  # the pipeline's global, swapped to count the resolutions it computes
    real_resolve = namespace["resolve_snapshots"]

    def counting_resolve(*args: Any, **kwargs: Any) -> dict[int, int]:
        nonlocal computed
        computed += 1
        result: dict[int, int] = real_resolve(*args, **kwargs)
        return result

    namespace["resolve_snapshots"] = counting_resolve
    cpu = wall = 0.0
    resolutions = 0
    count = 0
    servers = list(users)
    while count < n:
        server = servers[count % 2]
        user = users[server]
        prev = [tips[server]]
        if count % 100 == 99:  # a merge of both branches
            prev = sorted(set(tips.values()))
        state = fork.state_after(prev[0]) if len(prev) == 1 else current_state(db, room_id)
        if count % 20 in (0, 1):  # a state change on each branch every 10 of its events: conflicts
            pdu = fork.build(server, user, "m.room.topic", {"topic": f"{server} {count}"}, "", prev, state)
        else:
            pdu = fork.build(
                server, user, "m.room.message", {"msgtype": "m.text", "body": f"{count}"}, None, prev, state
            )
        extremities_before = len(db.rooms.extremities(db.ids.room(room_id) or 0))
        t0, c0 = time.perf_counter(), time.process_time()
        ev = await pipe.receive(pdu, fork.keys)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        assert ev.rejected is None and not ev.soft_failed, ev.rejected
        resolutions += extremities_before > 1 or len(prev) > 1
        if len(prev) > 1:
            tips = {s: ev.event_id for s in servers}
        else:
            tips[server] = ev.event_id
        count += 1
    namespace["resolve_snapshots"] = real_resolve
    events = db.store.count(EVENT_META)
    db.store.db.compact_range()
    db.close()
    return {
        "events": n,
        "events_per_s": n / wall,
        "cpu_us_per_event": cpu / n * 1e6,
        "with_resolution": resolutions / n,
        "resolutions_computed": computed / n,
        "bytes_per_event": folder_size(path) / events,
    }


def current_state(db: Database, room_id: str) -> dict[tuple[str, str], str]:
    room = db.ids.room(room_id)
    assert room is not None
    ids = db.ids
    return {ids.state_key_of(k): ids.event_id(v) for k, v in db.rooms.current_state(room).items()}


# -- per-event state cost in a big room -------------------------------------------------------------


async def big_room(tmp: Path, members: int, changes: int) -> dict[str, float]:
    db, pipe = new_pipeline(tmp / "big")
    room_id = await create_room(pipe, RoomCreation(creator=ALICE, room_version="10", preset="public_chat"))
    t0 = time.perf_counter()
    for i in range(members):
        user = f"@m{i}:{LOCAL}"
        await pipe.send(room_id, user, "m.room.member", {"membership": "join"}, user)
    fill = time.perf_counter() - t0
    before = table_bytes(db, SNAPSHOT, SNAPSHOT_BY_HASH)
    entries = 0
    c0 = time.process_time()
    for i in range(changes):
        if i % 2:
            user = f"@m{i}:{LOCAL}"  # an existing member leaves
            ev = await pipe.send(room_id, user, "m.room.member", {"membership": "leave"}, user)
        else:
            user = f"@new{i}:{LOCAL}"  # a new member joins
            ev = await pipe.send(room_id, user, "m.room.member", {"membership": "join"}, user)
        meta = db.events.get_meta(ev.short)
        assert meta is not None
        entries += db.snapshots.stored_entries(meta.state_after)
    cpu = time.process_time() - c0
    grown = table_bytes(db, SNAPSHOT, SNAPSHOT_BY_HASH) - before
    room = db.ids.room(room_id)
    assert room is not None
    state_size = len(db.rooms.current_state(room))
    db.close()
    return {
        "members": members,
        "state_events": state_size,
        "changes": changes,
        "entries_per_change": entries / changes,
        "snapshot_bytes_per_change": grown / changes,
        "full_copy_bytes": state_size * 16,
        "cpu_us_per_change": cpu / changes * 1e6,
        "joins_per_s_while_filling": members / fill,
    }


# -- output -----------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    raw, lin, fs, fk, big = (results[k] for k in ("raw", "linear", "linear_fsync", "forked", "big_room"))
    effective = lin["events_per_s"] * lin["writes_per_event"]
    rows = [
        ("raw LevelDB: small puts in batches of 100", f"{raw['puts_per_s']:,.0f} puts/s", ""),
        (
            "raw LevelDB: synced commits",
            f"{raw['synced_commits_per_s']:,.0f} /s",
            f"{raw['synced_commit_ms']:.2f} ms each",
        ),
        (
            "linear: local messages (send)",
            f"{lin['events_per_s']:,.0f} events/s",
            f"{lin['cpu_us_per_event']:.0f} µs CPU/event (goal < 500)",
        ),
        (
            "  LevelDB writes per event",
            f"{lin['writes_per_event']:.1f}",
            f"{effective:,.0f} puts/s = {effective / raw['puts_per_s']:.0%} of raw",
        ),
        ("  bytes on disk per event (compacted)", f"{lin['bytes_per_event']:,.0f} B", ""),
        (
            f"linear, fsync, {fs['rooms']} rooms at once",
            f"{fs['events_per_s']:,.0f} events/s",
            f"{fs['events_per_synced_write']:.1f} events per synced write; "
            f"{fs['events_per_s'] / raw['synced_commits_per_s']:.1f}× the synced commit rate",
        ),
        (
            "forked: remote PDUs, 2 servers interleaved",
            f"{fk['events_per_s']:,.0f} events/s",
            f"{fk['cpu_us_per_event']:.0f} µs CPU/event; {fk['with_resolution']:.0%} need a state resolution, "
            f"{fk['resolutions_computed']:.0%} computed (the rest cached)",
        ),
        ("  bytes on disk per event (compacted)", f"{fk['bytes_per_event']:,.0f} B", ""),
        (
            f"big room ({big['members']:,} members): membership change",
            f"{big['entries_per_change']:.1f} entries",
            f"{big['snapshot_bytes_per_change']:,.0f} B/change stored vs {big['full_copy_bytes']:,} B for a copy; "
            f"{big['cpu_us_per_change']:.0f} µs CPU",
        ),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    return "\n".join(f"{a:<{w0}}  {b:>{w1}}  {c}" for a, b, c in rows)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp_name:
        tmp = Path(tmp_name)
        results: dict[str, Any] = {"raw": raw_leveldb(tmp, args.puts, args.synced)}
        results["linear"], report = await linear(tmp, args.events, args.profile)
        results["linear_fsync"] = await linear_fsync(tmp, args.fsync_events, 8)
        results["forked"] = await forked(tmp, args.forked_events)
        results["big_room"] = await big_room(tmp, args.members, args.changes)
        if report:
            print(report, file=sys.stderr)
        return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000, help="local messages on the linear timeline")
    parser.add_argument("--fsync-events", type=int, default=2_000, help="local messages with fsync on")
    parser.add_argument("--forked-events", type=int, default=2_000, help="remote PDUs on the forked graph")
    parser.add_argument("--members", type=int, default=10_000, help="members of the big room")
    parser.add_argument("--changes", type=int, default=1_000, help="membership changes measured in the big room")
    parser.add_argument("--puts", type=int, default=200_000, help="raw LevelDB puts")
    parser.add_argument("--synced", type=int, default=500, help="raw LevelDB synced commits")
    parser.add_argument("--profile", action="store_true", help="cProfile the linear send path (to stderr)")
    parser.add_argument("--json", action="store_true", help="JSON on stdout instead of the table")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
