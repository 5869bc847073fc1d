"""/sync side by side with Synapse: the initial sync of a user in many rooms, and how fast a waiting
sync wakes when a message is sent.

Both servers run as separate processes on loopback, driven over HTTP by the same client code:
users are made with shared-secret registration, rooms with /createRoom, messages with /send.
Rate limits are open and presence is off on both sides; Synapse runs on SQLite and we run with
`fsync = false` (Synapse's SQLite runs `synchronous=FULL`, so sends favour us; the syncs measured
here read, they do not write).

    bench/.venv/bin/python bench/sync.py                    # 50 rooms x 20 messages, 100 wake-ups
    bench/.venv/bin/python bench/sync.py --rooms 10 --messages 5 --wakeups 20 --no-synapse
    bench/.venv/bin/python bench/sync.py --json bench/results/sync.json

Columns: `first` = the first initial sync after the rooms were filled, `initial` = best of `--runs`
more (timeout=0, lazy-loading members, timeline limit 20; Synapse's 2-minute sync response cache is
switched off so it computes each one), in ms, `wake p50/p99` = from the start of a send to the
waiting sync's response, in ms; `syn/ours` = Synapse's time over ours (above 1: we are faster).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-shared-secret"
FILTER = json.dumps({"room": {"timeline": {"limit": 20}, "state": {"lazy_load_members": True}}})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, name: str, base: str, proc: subprocess.Popen[bytes], workdir: Path) -> None:
        self.name = name
        self.base = base
        self.proc = proc
        self.workdir = workdir

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_ours(python: str) -> Server:
    workdir = Path(tempfile.mkdtemp(prefix="bench-ours-"))
    port = free_port()
    config = workdir / "homeserver.toml"
    config.write_text(
        "\n".join(
            [
                'server_name = "localhost"',
                f'listen = "127.0.0.1:{port}"',
                f'data_dir = "{workdir / "data"}"',
                f'registration_shared_secret = "{SECRET}"',
                'registration = "closed"',
                'log_level = "WARNING"',
                "presence = false",
                "[rate_limits]",
                "enabled = false",
            ]
        )
    )
    proc = subprocess.Popen([python, "-m", "homeserver", "--config", str(config), "run"], cwd=ROOT)
    return Server("ours", f"http://127.0.0.1:{port}", proc, workdir)


def start_synapse(python: str) -> Server:
    workdir = Path(tempfile.mkdtemp(prefix="bench-synapse-"))
    port = free_port()
    config = workdir / "homeserver.yaml"
    subprocess.run(
        [
            python,
            "-m",
            "synapse.app.homeserver",
            "--server-name",
            "localhost",
            "--config-path",
            str(config),
            "--data-directory",
            str(workdir),
            "--generate-config",
            "--report-stats=no",
        ],
        check=True,
        capture_output=True,
    )
    open_limit = {"per_second": 100000, "burst_count": 100000}
    extra = {
        "listeners": [
            {
                "port": port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            }
        ],
        "database": {"name": "sqlite3", "args": {"database": str(workdir / "homeserver.db")}},
        "registration_shared_secret": SECRET,
        "presence": {"enabled": False},
        "rc_message": open_limit,
        "rc_registration": open_limit,
        "rc_login": {"address": open_limit, "account": open_limit, "failed_attempts": open_limit},
        "rc_joins": {"local": open_limit, "remote": open_limit},
        "rc_room_creation": open_limit,
        "rc_invites": {"per_room": open_limit, "per_user": open_limit, "per_issuer": open_limit},
        "trusted_key_servers": [],
        # Synapse keeps sync responses for 2 minutes by default: repeated identical syncs would be
        # answered from that cache instead of computed
        "caches": {"sync_response_cache_duration": 0},
        "suppress_key_server_warning": True,
    }
    text = config.read_text()
    # drop the generated listeners/database/log_config blocks (and the indented lines under them)
    out, skipping = [], False
    for line in text.splitlines():
        if line.startswith(("listeners:", "database:", "log_config:")):
            skipping = True
            continue
        if skipping and (line.startswith((" ", "-")) or not line.strip()):
            continue
        skipping = False
        out.append(line)
    config.write_text("\n".join(out) + "\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in extra.items()) + "\n")
    log_config = workdir / "log.yaml"
    log_config.write_text("version: 1\nroot:\n  level: WARNING\n  handlers: []\ndisable_existing_loggers: false\n")
    with config.open("a") as f:
        f.write(f"log_config: {json.dumps(str(log_config))}\n")
    proc = subprocess.Popen([python, "-m", "synapse.app.homeserver", "--config-path", str(config)], cwd=workdir)
    return Server("synapse", f"http://127.0.0.1:{port}", proc, workdir)


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, token: str = "", user_id: str = "") -> None:
        self.session = session
        self.base = base
        self.token = token
        self.user_id = user_id
        self.txn = 0

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(method, self.base + path, json=body, headers=headers) as resp:
            data = await resp.json()
            if resp.status != 200:
                raise RuntimeError(f"{method} {path}: {resp.status} {data}")
            return data

    async def send(self, room_id: str, text: str) -> str:
        self.txn += 1
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/b{self.txn}"
        return str((await self.call("PUT", path, {"msgtype": "m.text", "body": text}))["event_id"])

    async def sync(self, query: str) -> dict[str, Any]:
        return dict(await self.call("GET", f"/_matrix/client/v3/sync?{query}"))


async def wait_ready(session: aiohttp.ClientSession, base: str, timeout: float = 120) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            async with session.get(base + "/_matrix/client/versions") as resp:
                if resp.status == 200:
                    return time.monotonic() - started
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{base} did not start")


async def register(session: aiohttp.ClientSession, base: str, name: str) -> Client:
    path = "/_synapse/admin/v1/register"
    async with session.get(base + path) as resp:
        nonce = (await resp.json())["nonce"]
    mac = hmac.new(SECRET.encode(), digestmod=hashlib.sha1)
    for part in (nonce, name, "bench-password", "notadmin"):
        mac.update(part.encode() + (b"\x00" if part != "notadmin" else b""))
    body = {"nonce": nonce, "username": name, "password": "bench-password", "admin": False, "mac": mac.hexdigest()}
    async with session.post(base + path, json=body) as resp:
        data = await resp.json()
        if resp.status != 200:
            raise RuntimeError(f"register {name}: {data}")
    return Client(session, base, data["access_token"], data["user_id"])


async def measure(server: Server, rooms: int, messages: int, wakeups: int, runs: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        ready = await wait_ready(session, server.base)
        alice = await register(session, server.base, "alice")
        bob = await register(session, server.base, "bob")
        started = time.monotonic()
        room_ids = []
        for r in range(rooms):
            created = await alice.call("POST", "/_matrix/client/v3/createRoom", {"name": f"room {r}"})
            room_ids.append(created["room_id"])
            for i in range(messages):
                await alice.send(created["room_id"], f"message {i}")
        filled = time.monotonic() - started
        query = f"timeout=0&filter={quote(FILTER)}"
        t = time.perf_counter()
        await alice.sync(query)
        first = time.perf_counter() - t
        initial = []
        for _ in range(runs):
            t = time.perf_counter()
            body = await alice.sync(query)
            initial.append(time.perf_counter() - t)
        assert len(body["rooms"]["join"]) == rooms
        # wake-ups: bob waits in room 0, alice sends
        await alice.call("POST", f"/_matrix/client/v3/rooms/{quote(room_ids[0])}/invite", {"user_id": bob.user_id})
        await bob.call("POST", f"/_matrix/client/v3/join/{quote(room_ids[0])}", {})
        since = (await bob.sync("timeout=0"))["next_batch"]
        wakes = []
        for i in range(wakeups):
            poll = asyncio.create_task(bob.sync(f"since={since}&timeout=30000"))
            await asyncio.sleep(0.02)  # let the sync reach the server and wait
            t = time.perf_counter()
            await alice.send(room_ids[0], f"wake {i}")
            body = await poll
            wakes.append(time.perf_counter() - t)
            since = body["next_batch"]
        wakes.sort()
        return {
            "server": server.name,
            "start_s": round(ready, 2),
            "fill_s": round(filled, 1),
            "first_initial_ms": round(first * 1000, 1),
            "initial_ms": round(min(initial) * 1000, 1),
            "initial_all_ms": [round(x * 1000, 1) for x in initial],
            "wake_p50_ms": round(statistics.median(wakes) * 1000, 1),
            "wake_p99_ms": round(wakes[min(len(wakes) - 1, int(len(wakes) * 0.99))] * 1000, 1),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--wakeups", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-synapse", action="store_true")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    python = sys.executable
    results = []
    starters = [start_ours] + ([] if args.no_synapse else [start_synapse])
    for start in starters:
        server = start(python)
        try:
            results.append(asyncio.run(measure(server, args.rooms, args.messages, args.wakeups, args.runs)))
        finally:
            server.stop()
    print(f"{args.rooms} rooms x {args.messages} messages, {args.wakeups} wake-ups")
    print(f"{'server':8} {'first':>9} {'initial':>9} {'wake p50':>9} {'wake p99':>9} {'fill (s)':>9}")
    for r in results:
        cells = [r["first_initial_ms"], r["initial_ms"], r["wake_p50_ms"], r["wake_p99_ms"], r["fill_s"]]
        print(f"{r['server']:8} " + " ".join(f"{c:9.1f}" for c in cells))
    if len(results) == 2:
        ours, syn = results
        print(
            f"syn/ours: first {syn['first_initial_ms'] / ours['first_initial_ms']:.1f}x, "
            f"initial {syn['initial_ms'] / ours['initial_ms']:.1f}x, "
            f"wake p50 {syn['wake_p50_ms'] / ours['wake_p50_ms']:.1f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
