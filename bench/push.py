"""Push delivery: how long from a send to the push gateway receiving the notification, and what
pushers cost the send path.

    .venv/bin/python bench/push.py                      # 100 users with pushers in one room
    .venv/bin/python bench/push.py --users 100 --throughput-messages 2000 --rounds 20 --latency-messages 100

Our server runs as a real process (`python -m homeserver`, as the interop tests start it) on
127.0.0.1 with a fresh data directory; a push gateway (aiohttp, in this process) answers every
notification at once and notes when it arrived. A sender is in two rooms of --users members each:
in one every member has an HTTP pusher, in the other nobody has.

1. The send path: with the gateway hanging (each pusher's first request waits; push.timeout_s is
   raised so none times out), so no delivery work shares the CPU, the sender sends
   --throughput-messages messages to each room back to back (one keep-alive connection, each send
   waiting for the previous answer), in --rounds alternating chunks (without, with, with,
   without, ...): both rooms under the same load of a shared machine and the same store size.
   events/s of each room, the drop (overall, and the median of the rounds' drops, robust to a
   burst of load in one chunk), and the server's CPU ms per event (/proc, robust to a busy machine
   where wall-clock rates are not; its main thread's apart from LevelDB's compactions). Both rooms
   get 50 sends first (warm caches, the pushers' first requests).
2. The gateway answers: --throughput-messages more to the room with pushers while the worker
   delivers in the same process (sends and deliveries share the CPU); then every notification of
   both parts must reach the gateway, with no duplicate.
3. Latency: --latency-messages messages, one every --interval-ms; for every (message, pusher) the
   time from the send request leaving to the gateway receiving it: p50, p99, max.

Runs by hand, never in the test command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.interop.server import register, start_homeserver


class Gateway:
    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = {}
        self.count = 0
        self.port = 0
        self.failing = False
        self.hold: asyncio.Event | None = None  # set: requests wait for it (a gateway that hangs)
        self.seen: set[tuple[str, str]] = set()
        self.duplicates = 0

    async def notify(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.hold is not None:
            await self.hold.wait()
        if self.failing:
            return web.Response(status=502)
        event_id = body["notification"].get("event_id")
        if event_id is not None:
            self.arrivals.setdefault(event_id, []).append(time.perf_counter())
            self.count += 1
            key = (event_id, body["notification"]["devices"][0]["pushkey"])
            self.duplicates += key in self.seen
            self.seen.add(key)
        return web.json_response({"rejected": []})

    async def start(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/_matrix/push/v1/notify", self.notify)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = runner.addresses[0][1]
        return runner


async def api(http: aiohttp.ClientSession, base: str, method: str, path: str, token: str, body: Any) -> Any:
    async with http.request(
        method, f"{base}/_matrix/client/v3/{path}", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        answer = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"{method} {path}: {resp.status} {answer}")
        return answer


def cpu_s(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process, or of one of its threads (Linux): robust to a busy
    machine, unlike wall time."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    with open(path, encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def send_burst(
    http: aiohttp.ClientSession, base: str, token: str, room_id: str, n: int, tag: str, pid: int
) -> tuple[float, float]:
    """(seconds, server CPU seconds, its main thread's CPU seconds) of n sequential sends."""
    cpu, main_cpu = cpu_s(pid), cpu_s(pid, pid)
    start = time.perf_counter()
    for i in range(n):
        await api(
            http, base, "PUT", f"rooms/{quote(room_id)}/send/m.room.message/{tag}-{i}", token,
            {"msgtype": "m.text", "body": f"burst {i}"},
        )  # fmt: skip
    return time.perf_counter() - start, cpu_s(pid) - cpu, cpu_s(pid, pid) - main_cpu


def rate(n: int, spent: list[float] | tuple[float, ...]) -> tuple[float, float, float]:
    """(events/s, server CPU ms per event, its main thread's) of n sends that took `spent`."""
    return n / spent[0], spent[1] * 1000 / n, spent[2] * 1000 / n


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--throughput-messages", type=int, default=2000, help="per room")
    parser.add_argument("--rounds", type=int, default=20, help="alternating chunks per room")
    parser.add_argument("--latency-messages", type=int, default=100)
    parser.add_argument("--interval-ms", type=float, default=50.0)
    args = parser.parse_args()
    chunk = max(1, args.throughput_messages // args.rounds)
    measured = chunk * args.rounds

    gateway = Gateway()
    gateway_runner = await gateway.start()
    url = f"http://127.0.0.1:{gateway.port}/_matrix/push/v1/notify"
    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        server = start_homeserver(Path(tmp), push__ip_range_allow=["127.0.0.0/8"], push__timeout_s=3600, presence=False)
        try:
            base = server.base_url
            _, sender = register(server, "sender")
            members = [register(server, f"member{i}")[1] for i in range(args.users)]
            others = [register(server, f"other{i}")[1] for i in range(args.users)]
            async with aiohttp.ClientSession() as http:
                rooms = []
                for tokens in (others, members):
                    room = await api(http, base, "POST", "createRoom", sender, {"preset": "public_chat"})
                    rooms.append(room["room_id"])
                    for token in tokens:
                        await api(http, base, "POST", f"join/{quote(room['room_id'])}", token, {})
                plain_room, push_room = rooms
                for i, token in enumerate(members):
                    await api(
                        http, base, "POST", "pushers/set", token,
                        {
                            "app_id": "bench.app", "pushkey": f"key-{i}", "kind": "http", "app_display_name": "b",
                            "device_display_name": "d", "lang": "en", "data": {"url": url, "format": "event_id_only"},
                        },
                    )  # fmt: skip
                # the send path alone: the gateway hangs, so each pusher's task waits on its first
                # request and no delivery work shares the CPU
                gateway.hold = asyncio.Event()
                for room_id in rooms:
                    await send_burst(http, base, sender, room_id, 50, f"warm-{room_id}", server.pid)
                spent = {room_id: [0.0, 0.0, 0.0] for room_id in rooms}
                drops = []  # each round's drop in events/s (robust to a burst of load in one chunk)
                for r in range(args.rounds):
                    took = {}
                    for room_id in rooms if r % 2 == 0 else rooms[::-1]:  # ABBA: no room always first
                        took[room_id] = await send_burst(
                            http, base, sender, room_id, chunk, f"r{r}-{room_id}", server.pid
                        )
                        spent[room_id] = [a + b for a, b in zip(spent[room_id], took[room_id], strict=True)]
                    drops.append(1 - took[plain_room][0] / took[push_room][0])
                without = rate(measured, spent[plain_room])
                deferred = rate(measured, spent[push_room])
                gateway.hold.set()
                gateway.hold = None
                # everything: the worker delivers while the sends go on (one process, shared CPU)
                with_pushers = rate(
                    args.throughput_messages,
                    await send_burst(http, base, sender, push_room, args.throughput_messages, "pushed", server.pid),
                )
                expected = (50 + measured + args.throughput_messages) * args.users
                deadline = time.monotonic() + 600
                while gateway.count < expected and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                drained = gateway.count
                # latency: one message every interval; each pusher's arrival against the send time
                sent_at: dict[str, float] = {}
                for i in range(args.latency_messages):
                    t0 = time.perf_counter()
                    answer = await api(
                        http, base, "PUT", f"rooms/{quote(push_room)}/send/m.room.message/lat-{i}", sender,
                        {"msgtype": "m.text", "body": f"ping {i}"},
                    )  # fmt: skip
                    sent_at[answer["event_id"]] = t0
                    await asyncio.sleep(max(0.0, args.interval_ms / 1000 - (time.perf_counter() - t0)))
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and any(
                    len(gateway.arrivals.get(e, [])) < args.users for e in sent_at
                ):
                    await asyncio.sleep(0.05)
        finally:
            server.stop()
            await gateway_runner.cleanup()
    latencies = [(t - sent_at[e]) * 1000 for e in sent_at for t in gateway.arrivals.get(e, [])]
    missing = args.latency_messages * args.users - len(latencies)
    print(
        f"rooms of 1 sender and {args.users} members; {measured} sequential sends to each, "
        f"{args.rounds} alternating chunks, the gateway hanging"
    )
    for name, got in (("room without pushers:   ", without), (f"room with {args.users} pushers:", deferred)):
        print(
            f"  {name} {got[0]:7.1f} events/s, server CPU {got[1]:.3f} ms/event "
            f"(main thread {got[2]:.3f}, the rest LevelDB's)"
        )
    print(
        f"  drop in events/s: {1 - deferred[0] / without[0]:.1%} overall, "
        f"{statistics.median(drops):.1%} the median of {args.rounds} rounds; server CPU per event "
        f"{deferred[1] / without[1] - 1:+.1%} (main thread {deferred[2] / without[2] - 1:+.1%})"
    )
    print(
        f"the gateway answering, {args.throughput_messages} sends to the room with pushers: "
        f"{with_pushers[0]:.1f} events/s, server CPU {with_pushers[1]:.2f} ms/event (sends and deliveries)"
    )
    print(f"  notifications delivered: {drained}/{expected}, duplicates: {gateway.duplicates}")
    print(f"latency send -> gateway, {args.latency_messages} messages x {args.users} pushers,")
    print(f"  one message per {args.interval_ms} ms:")
    if latencies:
        print(
            f"  p50 {statistics.median(latencies):.1f} ms  p99 {pct(latencies, 99):.1f} ms  "
            f"max {max(latencies):.1f} ms  (missing: {missing})"
        )


if __name__ == "__main__":
    asyncio.run(main())
