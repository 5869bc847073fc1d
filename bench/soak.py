"""Memory and speed under a long send workload: does RSS plateau, does events/s hold?

    bench/.venv/bin/python bench/soak.py                          # 500,000 events, the default budget
    bench/.venv/bin/python bench/soak.py --events 200000 --cache-mb 64
    bench/.venv/bin/python bench/soak.py --room-every-events 20000 --json bench/results/soak.json
    bench/.venv/bin/python bench/soak.py --events 100000 --tracemalloc 20000,100000   # what grows

Our server runs as a real process (`python -m homeserver`, as `bench/client_api.py` starts it) on
127.0.0.1 with a fresh data directory, presence off, rate limits off, logging at WARNING. --senders
(10) users send messages back to back, each on its own keep-alive connection, into the current room;
every --room-every-s (25) seconds of run time (or every --room-every-events events) a new room is
created, everyone joins it and the senders move there, as a community keeps opening rooms.

Every --window (10,000) events one sample is taken: RSS (VmRSS from /proc), events/s over that
window, the server's CPU time, and the server's own cache report from the admin endpoint
`GET /_homeserver/admin/v1/caches` (entries, capacity, estimated bytes, hit rates). The samples go to
JSON (default bench/results/soak-<time>.json) and a table; the summary checks the goals:

- RSS at 100k events and at the end within 10% of each other, and within the RSS target (the
  server's idle RSS plus its configured cache budget `cache_mb`);
- events/s over the last 100k events at least 90% of the first 100k.

`--tracemalloc 20000,100000` starts the server with `PYTHONTRACEMALLOC=1` and, at those event
counts, saves the top allocation sites the endpoint then reports (slow: for finding leaks only).
Runs by hand, never in the test command.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from client_api import (
    PATH_SAFE,
    ApiError,
    Client,
    Connection,
    compile_bytecode,
)

from tests.interop.server import RunningServer, http_json, rss_kib, start_homeserver

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHES_PATH = "/_homeserver/admin/v1/caches"
MIB = 1024 * 1024


@dataclass
class Sample:
    events: int
    seconds: float  # since the workload started
    rss_mib: float
    window_events_per_s: float
    cpu_s: float  # server CPU (all threads, user + system) since the workload started
    sys_s: float  # of which in the kernel (system time)
    rooms: int
    caches: dict[str, Any] | None = None
    anon_mib: float = 0.0  # RssAnon: the heap (Python's and LevelDB's), what the budget bounds
    file_mib: float = 0.0  # RssFile: pages of mapped files (LevelDB maps its table files), reclaimable
    main_cpu_s: float = 0.0  # CPU of the event loop's thread since the workload started
    # CPU of every other thread (LevelDB's compaction thread above all, the executor's threads)
    background_cpu_s: float = 0.0


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    allocations: dict[int, Any] = field(default_factory=dict)
    idle_rss_mib: float = 0.0
    budget_mb: int | None = None


class AdminConnection(Connection):
    """A `Connection` for the server's own admin API (not under /_matrix/client/v3)."""

    def __init__(self, base_url: str, token: str) -> None:
        super().__init__(base_url, token)
        self.prefix = ""

    async def caches(self, allocations: int = 0) -> dict[str, Any] | None:
        query = f"?allocations={allocations}" if allocations else ""
        status, answer = await self.request("GET", CACHES_PATH + query)
        return answer if status == 200 and isinstance(answer, dict) else None


def register_admin(server: RunningServer) -> str:
    """An admin made by shared-secret registration (Synapse's documented HMAC), for the cache report."""
    url = f"{server.base_url}/_synapse/admin/v1/register"
    nonce = http_json("GET", url)["nonce"]
    mac = hmac.new(server.shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), b"soakadmin", b"soak admin password", b"admin"]))
    body = {"nonce": nonce, "username": "soakadmin", "password": "soak admin password", "admin": True}
    return str(http_json("POST", url, {**body, "mac": mac.hexdigest()})["access_token"])


async def soak(server: RunningServer, args: argparse.Namespace, run: Run) -> None:
    await asyncio.sleep(2.0)  # a benchmark, not a test: let start-up garbage settle
    run.idle_rss_mib = rss_kib(server.pid) / 1024
    admin = AdminConnection(server.base_url, register_admin(server))
    first = await admin.caches()
    run.budget_mb = (first or {}).get("budget_mb")
    tracemalloc_at = sorted(int(x) for x in args.tracemalloc.split(",")) if args.tracemalloc else []

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        client = Client(session, server.base_url)
        tag = uuid.uuid4().hex[:6]
        senders = [await client.register(f"soak{tag}{i}") for i in range(args.senders)]
        rooms: list[str] = []

        async def new_room() -> None:
            room_id = await client.create_room(senders[0], preset="public_chat", name=f"soak {len(rooms)}")
            await asyncio.gather(*(client.join(a, room_id) for a in senders[1:]))
            rooms.append(room_id)  # the senders move there with their next message

        await new_room()
        sent = 0
        next_room_events = args.room_every_events or 0
        next_sample = args.window
        user0, sys0 = cpu_split(server.pid)
        cpu0 = user0 + sys0
        main0, all0 = thread_cpu(server.pid)
        background0 = all0 - main0
        t0 = last_t = time.perf_counter()
        last_room_t = t0
        room_task: asyncio.Task[None] | None = None
        sampling = asyncio.Lock()

        async def sample(events: int) -> None:
            nonlocal last_t
            async with sampling:  # one sample at a time, in order
                now = time.perf_counter()
                rate = args.window / (now - last_t) if now > last_t else 0.0
                last_t = now
                user, system = cpu_split(server.pid)
                rss = rss_kib(server.pid) / 1024
                s = Sample(events, now - t0, rss, rate, user + system - cpu0, system - sys0, len(rooms))
                s.anon_mib, s.file_mib = rss_split_mib(server.pid)
                main_cpu, all_cpu = thread_cpu(server.pid)
                s.main_cpu_s, s.background_cpu_s = main_cpu - main0, all_cpu - main_cpu - background0
                run.samples.append(s)
                if tracemalloc_at and events >= tracemalloc_at[0]:
                    tracemalloc_at.pop(0)
                    report = await admin.caches(allocations=args.top)
                    run.allocations[events] = (report or {}).get("allocations")
                    last_t = time.perf_counter()  # the snapshot is not the server's speed
                elif not args.no_cache_report:
                    s.caches = await admin.caches()
                print(
                    f"{events:>9,} events {s.seconds:7.1f} s  RSS {s.rss_mib:6.1f} MiB (anon {s.anon_mib:.1f}, file "
                    f"{s.file_mib:.1f})  {rate:7.0f} ev/s  "
                    f"rooms {len(rooms)}",
                    flush=True,
                )

        async def sender(n: int, conn: Connection) -> None:
            nonlocal sent, next_room_events, next_sample, room_task, last_room_t
            i = 0
            while sent < args.events:
                sent += 1
                room_id = rooms[-1]
                path = f"/rooms/{_quote(room_id)}/send/m.room.message/{uuid.uuid4().hex}"
                status, answer = await conn.request("PUT", path, {"msgtype": "m.text", "body": f"soak {i} from {n}"})
                if status != 200:
                    raise ApiError(f"PUT {path} -> {status} {answer}")
                i += 1
                if sent >= next_sample:
                    next_sample += args.window
                    await sample(next_sample - args.window)
                due = (
                    sent >= next_room_events
                    if args.room_every_events
                    else time.perf_counter() - last_room_t >= args.room_every_s
                )
                if due and (room_task is None or room_task.done()):
                    last_room_t = time.perf_counter()
                    next_room_events = sent + (args.room_every_events or 0)
                    room_task = asyncio.create_task(new_room())

        connections = [Connection(server.base_url, a.token) for a in senders]
        await asyncio.gather(*(sender(n, c) for n, c in enumerate(connections)))
        if room_task is not None:
            await room_task
        for c in connections:
            c.close()
    admin.close()


def rss_split_mib(pid: int) -> tuple[float, float]:
    """RssAnon and RssFile of a process in MiB (Linux)."""
    found = {"RssAnon:": 0.0, "RssFile:": 0.0}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key = line.split(":", 1)[0] + ":"
            if key in found:
                found[key] = int(line.split()[1]) / 1024
    return found["RssAnon:"], found["RssFile:"]


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) of a process's main thread, and of all its threads."""
    tick = os.sysconf("SC_CLK_TCK")
    main = total = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended between listing and reading
            continue
        cpu = (int(fields[11]) + int(fields[12])) / tick
        total += cpu
        if int(tid) == pid:
            main = cpu
    return main, total


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU seconds of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _quote(room_id: str) -> str:
    from urllib.parse import quote

    return quote(room_id, safe=PATH_SAFE)


# -- report --------------------------------------------------------------------------------------


def at(samples: list[Sample], events: int) -> Sample:
    """The first sample taken at or after `events`."""
    for s in samples:
        if s.events >= events:
            return s
    return samples[-1]


def rate_between(samples: list[Sample], lo: int, hi: int) -> float:
    """events/s from the sample at `lo` events (0 = the start) to the one at `hi`."""
    start = (0, 0.0) if lo <= 0 else (at(samples, lo).events, at(samples, lo).seconds)
    end = at(samples, hi)
    return (end.events - start[0]) / (end.seconds - start[1]) if end.seconds > start[1] else 0.0


def cpu_ms_per_event(samples: list[Sample], lo: int, hi: int) -> tuple[float, float]:
    """Main-thread and background CPU per event (ms) from the sample at `lo` events to the one at `hi`."""
    start = at(samples, lo) if lo > 0 else None
    end = at(samples, hi)
    n = end.events - (start.events if start else 0)
    if n <= 0:
        return 0.0, 0.0
    main = end.main_cpu_s - (start.main_cpu_s if start else 0.0)
    background = end.background_cpu_s - (start.background_cpu_s if start else 0.0)
    return main * 1000 / n, background * 1000 / n


def summary(run: Run, total: int, span: int = 100_000) -> dict[str, Any]:
    s = run.samples
    span = min(span, total // 2) or total
    early, late = at(s, span), at(s, total)
    first_rate = rate_between(s, 0, span)
    last_rate = rate_between(s, total - span, total)
    target = run.idle_rss_mib + run.budget_mb if run.budget_mb is not None else None
    rss_steady = abs(late.rss_mib - early.rss_mib) <= 0.10 * early.rss_mib
    within = target is None or max(early.rss_mib, late.rss_mib) <= target
    return {
        "span": span,
        "events": total,
        "idle_rss_mib": run.idle_rss_mib,
        "budget_mb": run.budget_mb,
        "rss_target_mib": target,
        "rss_early_mib": early.rss_mib,
        "rss_end_mib": late.rss_mib,
        "rss_max_mib": max(x.rss_mib for x in s),
        "heap_early_mib": early.anon_mib,
        "heap_end_mib": late.anon_mib,
        "cpu_ms_per_event_first": cpu_ms_per_event(s, 0, span),  # (main thread, background threads)
        "cpu_ms_per_event_last": cpu_ms_per_event(s, total - span, total),
        "events_per_s_first": first_rate,
        "events_per_s_last": last_rate,
        "speed_ratio": last_rate / first_rate if first_rate else 0.0,
        "goal_rss_plateau": rss_steady,
        "goal_rss_within_target": within,
        "goal_speed": first_rate > 0 and last_rate >= 0.9 * first_rate,
    }


def print_table(run: Run, out: dict[str, Any]) -> None:
    print(
        f"\n{'events':>9} {'seconds':>8} {'RSS MiB':>8} {'heap':>6} {'files':>6} {'ev/s':>7} {'CPU ms/ev':>9} "
        f"{'(sys)':>6} {'main':>6} {'bg':>6} {'cache MiB':>9}"
    )
    prev_cpu, prev_sys, prev_events, prev_main, prev_bg = 0.0, 0.0, 0, 0.0, 0.0
    for s in run.samples:
        n = max(1, s.events - prev_events)
        cpu, system = (s.cpu_s - prev_cpu) * 1000 / n, (s.sys_s - prev_sys) * 1000 / n
        main, bg = (s.main_cpu_s - prev_main) * 1000 / n, (s.background_cpu_s - prev_bg) * 1000 / n
        prev_cpu, prev_sys, prev_events = s.cpu_s, s.sys_s, s.events
        prev_main, prev_bg = s.main_cpu_s, s.background_cpu_s
        cached = (s.caches or {}).get("estimated_bytes")
        cache_text = f"{cached / MIB:9.1f}" if isinstance(cached, int | float) else f"{'-':>9}"
        rate = s.window_events_per_s
        print(
            f"{s.events:>9,} {s.seconds:8.1f} {s.rss_mib:8.1f} {s.anon_mib:6.1f} {s.file_mib:6.1f} {rate:7.0f} "
            f"{cpu:9.3f} {system:6.3f} {main:6.3f} {bg:6.3f} {cache_text}"
        )
    m = out["summary"]
    k = m["span"] // 1000
    n = m["events"] // 1000
    target = m["rss_target_mib"]

    def ok(flag: bool) -> str:
        return "met" if flag else "NOT met"

    print(
        f"\ncache budget (cache_mb): {m['budget_mb']} MiB; idle RSS {m['idle_rss_mib']:.1f} MiB"
        + (f"; RSS target (idle + budget) {target:.1f} MiB" if target is not None else "")
    )
    print(
        f"RSS at {k}k events: {m['rss_early_mib']:.1f} MiB, at {n}k: {m['rss_end_mib']:.1f} MiB "
        f"(max {m['rss_max_mib']:.1f})"
    )
    (main0, bg0), (main1, bg1) = m["cpu_ms_per_event_first"], m["cpu_ms_per_event_last"]
    print(
        f"of which the heap (RssAnon) {m['heap_early_mib']:.1f} and {m['heap_end_mib']:.1f} MiB; CPU per event, "
        f"main thread {main0:.3f} -> {main1:.3f} ms, background threads (LevelDB's compaction) {bg0:.3f} -> "
        f"{bg1:.3f} ms"
    )
    print(
        f"events/s over the first {k}k: {m['events_per_s_first']:.0f}, over the last {k}k: "
        f"{m['events_per_s_last']:.0f} ({m['speed_ratio'] * 100:.0f}%)"
    )
    print(
        f"goals: RSS within 10% from {k}k to {n}k: {ok(m['goal_rss_plateau'])}; within the target: "
        f"{ok(m['goal_rss_within_target'])}; last {k}k at least 90% of the first: {ok(m['goal_speed'])}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--room-every-s", type=float, default=25.0, help="a new room every this many seconds")
    parser.add_argument("--room-every-events", type=int, default=0, help="a new room every N events instead")
    parser.add_argument("--window", type=int, default=10_000, help="events per sample")
    parser.add_argument("--cache-mb", type=int, help="the server's cache budget (default: the server's default)")
    parser.add_argument("--fsync", action="store_true")
    parser.add_argument("--tracemalloc", metavar="N,N", help="save the top allocation sites at these event counts")
    parser.add_argument("--top", type=int, default=30, help="allocation sites per --tracemalloc snapshot")
    parser.add_argument("--no-cache-report", action="store_true", help="skip the per-sample cache report")
    parser.add_argument("--json", metavar="FILE", help="default: bench/results/soak-<time>.json")
    parser.add_argument("--source", default=str(REPO_ROOT), metavar="DIR", help="run our server from this checkout")
    args = parser.parse_args(argv)

    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    compile_bytecode(Path(args.source))
    settings: dict[str, Any] = {"password_hash_cost": "low", "fsync": bool(args.fsync), "presence": False}
    if args.cache_mb is not None:
        settings["cache_mb"] = args.cache_mb
    run = Run()
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp:
        if args.tracemalloc:  # the server inherits our environment (only HOMESERVER_* are replaced)
            os.environ["PYTHONTRACEMALLOC"] = "1"
        server = start_homeserver(Path(tmp), source=Path(args.source), **settings)
        print(f"server pid {server.pid} at {server.base_url}", flush=True)
        try:
            asyncio.run(soak(server, args, run))
        except Exception as e:
            raise RuntimeError(f"{e}\n--- server log ---\n{server.log_tail()}") from e
        finally:
            server.stop()
    out = {
        "meta": {
            "events": args.events,
            "senders": args.senders,
            "room_every_s": None if args.room_every_events else args.room_every_s,
            "room_every_events": args.room_every_events or None,
            "window": args.window,
            "fsync": bool(args.fsync),
            "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "summary": summary(run, args.events),
        "samples": [s.__dict__ for s in run.samples],
        "allocations": run.allocations,
    }
    path = (
        Path(args.json)
        if args.json
        else REPO_ROOT / "bench" / "results" / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print_table(run, out)
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
