"""How long the event loop stalls while a large fork is resolved, inline versus in a worker thread.

    .venv/bin/python bench/state_res_loop.py [--users 5000] [--runs 3] [--modes inline,thread]

A room of ours with `--users` remote members is forked by their server into two branches in which
each member changes their member event (tests/rooms/forks.py): `2 × users` conflicted state
events. Branch B arrives as outliers and the merge with the state after B's tip (the gap path of
`/send`), so the merge is one large resolution. Meanwhile a ticker coroutine sleeps 1 ms at a time
and records how late it wakes. Reported per mode: the resolution's wall time (the merge's receipt)
and the ticker's worst and 99th-percentile lateness, and how many ticks ran during it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.rooms.forks import forked_room  # noqa: E402
from tests.rooms.remote import Local  # noqa: E402

TICK_S = 0.001


async def ticker(stop: asyncio.Event, lateness: list[float]) -> None:
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lateness.append(time.perf_counter() - start - TICK_S)


async def one(users: int, threaded: bool) -> tuple[float, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        local = Local(Path(tmp) / "db")
        try:
            if not threaded:
                local.pipe.resolve_in_thread_at = 10**12
            fork = await forked_room(local, users)
            for pdu in fork.branch_b:
                await local.pipe.receive_outlier(pdu, local.keys)
            stop = asyncio.Event()
            lateness: list[float] = []
            tick = asyncio.create_task(ticker(stop, lateness))
            await asyncio.sleep(0.05)  # the ticker's baseline
            lateness.clear()
            start = time.perf_counter()
            merged = await local.pipe.receive_after_gap(fork.merge, local.keys, {fork.tip_b: fork.state_after_b})
            wall = time.perf_counter() - start
            stop.set()
            await tick
            assert merged.rejected is None
            return wall, lateness
        finally:
            local.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="inline,thread", help="inline, thread or both (comma-separated)")
    args = parser.parse_args()
    conflicted = 2 * args.users
    print(f"fork of {args.users} members: {conflicted} conflicted state events; ticker every {TICK_S * 1000:.0f} ms")
    for threaded in [mode.strip() == "thread" for mode in args.modes.split(",")]:
        walls, worst, p99, ticks = [], [], [], []
        for _ in range(args.runs):
            wall, lateness = asyncio.run(one(args.users, threaded))
            walls.append(wall)
            worst.append(max(lateness, default=0.0))
            ordered = sorted(lateness) or [0.0]
            p99.append(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))])
            ticks.append(len(lateness))
        mode = "worker thread" if threaded else "inline       "
        print(
            f"{mode}: resolution {statistics.median(walls) * 1000:8.1f} ms   loop stall max "
            f"{statistics.median(worst) * 1000:8.1f} ms   p99 {statistics.median(p99) * 1000:6.1f} ms   "
            f"ticks during it {statistics.median(ticks):.0f}"
        )


if __name__ == "__main__":
    main()
