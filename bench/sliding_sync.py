"""Simplified sliding sync (MSC4186) side by side with Synapse: Element X's first room-list answer
for a user in many rooms, and how fast a waiting room-list long poll wakes for a message.

    scripts/setup-synapse && .venv/bin/python bench/sliding_sync.py              # 500 rooms, 100 wake-ups
    .venv/bin/python bench/sliding_sync.py --rooms 50 --wakeups 20 --no-synapse
    .venv/bin/python bench/sliding_sync.py --json bench/results/sliding_sync.json

Both servers run as processes on loopback (ours with `python -m homeserver`, Synapse 1.163 from
`.venv-synapse` on SQLite, both with rate limits open; `tests/interop/`). The same client code fills
each: a user joined to `--rooms` rooms (made by another user, one message each), then:

- first: the first room-list request of a new connection, as Element X sends it (list `all_rooms`,
  range 0-19, timeline limit 1, its required-state list, account data / receipts / typing), in ms;
  `again` is the median of `--runs` more, each on a new connection;
- wake p50/p99: the connection long-polls (timeout 30 s) from its latest `pos`; the other user sends
  a message in one of the rooms; from the start of that send to the long poll's answer, in ms (so it
  includes the send, `send` its p50); `after` p50/p99: from the send's answer to the long poll's
  (0 when the long poll answered first): the wake-up alone.

`syn/ours` is Synapse's time over ours (above 1: we are faster). Goals: first answer at least 5x
faster, wake-up p99 under 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.interop.federation import LoopbackCA, start_synapse_peer  # noqa: E402
from tests.interop.server import RunningServer, register, start_homeserver  # noqa: E402
from tests.interop.test_sliding_sync_synapse import ELEMENT_X_REQUIRED_STATE  # noqa: E402

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


def room_list(conn_id: str) -> dict[str, Any]:
    return {
        "conn_id": conn_id,
        "lists": {
            "all_rooms": {
                "ranges": [[0, 19]],
                "timeline_limit": 1,
                "required_state": ELEMENT_X_REQUIRED_STATE,
                "filters": {},
            }
        },
        "extensions": {
            "account_data": {"enabled": True},
            "receipts": {"enabled": True, "rooms": ["*"]},
            "typing": {"enabled": True},
        },
    }


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, user_id: str, token: str) -> None:
        self.session = session
        self.base = base
        self.user_id = user_id
        self.headers = {"Authorization": f"Bearer {token}"}
        self.txn = 0

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        async with self.session.request(method, self.base + path, json=body, headers=self.headers) as resp:
            data = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data

    async def send(self, room_id: str, text: str) -> None:
        self.txn += 1
        path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/b{self.txn}"
        await self.call("PUT", path, {"msgtype": "m.text", "body": text})

    async def sliding(self, body: dict[str, Any], pos: str | None = None, timeout: int = 0) -> dict[str, Any]:
        query = f"?timeout={timeout}" + (f"&pos={pos}" if pos else "")
        return dict(await self.call("POST", PATH + query, body))


async def fill(owner: Client, member: Client, rooms: int, parallel: int = 4) -> list[str]:
    room_ids: list[str] = []

    async def one(i: int) -> None:
        created = await owner.call(
            "POST", "/_matrix/client/v3/createRoom", {"name": f"room {i}", "preset": "public_chat"}
        )
        room_id = created["room_id"]
        await member.call("POST", f"/_matrix/client/v3/join/{quote(room_id, safe='')}", {})
        await owner.send(room_id, f"hello {i}")
        room_ids.append(room_id)

    for start in range(0, rooms, parallel):
        await asyncio.gather(*(one(i) for i in range(start, min(rooms, start + parallel))))
    return room_ids


async def measure(server: RunningServer, kind: str, args: argparse.Namespace) -> dict[str, Any]:
    owner_id, owner_token = register(server, "owner")
    user_id, user_token = register(server, "reader")
    async with aiohttp.ClientSession() as session:
        owner = Client(session, server.base_url, owner_id, owner_token)
        user = Client(session, server.base_url, user_id, user_token)
        started = time.monotonic()
        room_ids = await fill(owner, user, args.rooms)
        filled = time.monotonic() - started
        t = time.perf_counter()
        resp = await user.sliding(room_list("room-list"))
        first = time.perf_counter() - t
        assert resp["lists"]["all_rooms"]["count"] == args.rooms, resp["lists"]
        assert len(resp["rooms"]) == 20
        again = []
        for i in range(args.runs):
            t = time.perf_counter()
            await user.sliding(room_list(f"again-{i}"))
            again.append(time.perf_counter() - t)
        pos = resp["pos"]
        body = room_list("room-list")
        pos = (await user.sliding(body, pos))["pos"]
        wakes, after_send, sends = [], [], []
        for i in range(args.wakeups):
            poll = asyncio.create_task(user.sliding(body, pos, timeout=30000))
            await asyncio.sleep(0.02)  # let the long poll reach the server and wait
            t = time.perf_counter()
            await owner.send(room_ids[i % len(room_ids)], f"wake {i}")
            sent = time.perf_counter()
            answer = await poll
            done = time.perf_counter()
            wakes.append(done - t)
            sends.append(sent - t)
            after_send.append(max(0.0, done - sent))
            assert answer["rooms"], "the long poll answered without the message"
            pos = answer["pos"]
        return {
            "server": kind,
            "rooms": args.rooms,
            "fill_s": round(filled, 1),
            "first_ms": round(first * 1000, 1),
            "again_ms": round(statistics.median(again) * 1000, 1),
            "wake_p50_ms": ms(wakes, 0.5),
            "wake_p99_ms": ms(wakes, 0.99),
            "send_p50_ms": ms(sends, 0.5),
            "after_send_p50_ms": ms(after_send, 0.5),
            "after_send_p99_ms": ms(after_send, 0.99),
        }


def ms(values: list[float], p: float) -> float:
    """The p-quantile in ms (of 100 values, p99 is the second worst)."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))] * 1000, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=500)
    parser.add_argument("--wakeups", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-synapse", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-sliding-") as tmp:
        servers = [("ours", lambda: start_homeserver(Path(tmp) / "ours", rate_limits__enabled=False, presence=False))]
        if not args.no_synapse:
            ca = LoopbackCA(Path(tmp) / "ca")
            servers.append(
                ("synapse", lambda: start_synapse_peer(Path(tmp) / "synapse", ca, log_level="WARNING", presence=False))
            )
        for kind, start in servers:
            server = start()
            try:
                results.append(asyncio.run(measure(server, kind, args)))
            finally:
                server.stop(timeout=10)
    print(f"a user in {args.rooms} rooms; {args.wakeups} wake-ups")
    keys = (
        "first_ms",
        "again_ms",
        "wake_p50_ms",
        "wake_p99_ms",
        "send_p50_ms",
        "after_send_p50_ms",
        "after_send_p99_ms",
    )
    heads = ("first", "again", "wake p50", "wake p99", "send p50", "after p50", "after p99", "fill (s)")
    print(f"{'server':8} " + " ".join(f"{h:>9}" for h in heads))
    for r in results:
        print(f"{r['server']:8} " + " ".join(f"{r[k]:9.1f}" for k in (*keys, "fill_s")))
    if len(results) == 2:
        ours, syn = results
        ratios = {k: syn[k] / max(ours[k], 0.01) for k in keys}
        print("syn/ours: " + ", ".join(f"{k[:-3].replace('_', ' ')} {v:.1f}x" for k, v in ratios.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
