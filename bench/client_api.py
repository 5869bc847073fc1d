"""The client-server API under one workload, on our server and on Synapse, measured in one run.

    bash bench/setup.sh                                   # once: bench/.venv with Synapse
    bench/.venv/bin/python bench/client_api.py            # both servers, a table of ratios
    bench/.venv/bin/python bench/client_api.py --json     # JSON on stdout instead of the table
    bench/.venv/bin/python bench/client_api.py --json bench/results/client_api.json --quick

Both servers run as subprocesses on 127.0.0.1 with a fresh data directory, presence off, rate
limits off and logging at WARNING. Both start from compiled bytecode, as installed packages do: pip
compiled Synapse's `.pyc` files when it installed it, and this script compiles ours (`compileall`)
before the first start, since this repository is installed editable and a `PYTHONDONTWRITEBYTECODE`
environment would otherwise make every start recompile it from source. Synapse uses SQLite and a
bcrypt cost matched, in this run, to the time of our default argon2id hash; ours runs with its
default password cost. Every loop is bounded; only loopback is used. What is measured, for each
server:

- start: seconds from spawning the process to the first 200 from `/versions` (median of --starts);
- idle RSS: resident memory once started and registered-for nothing, after a short settle;
- events/s: --senders (10) senders in one room, each sending --messages messages back to back,
  concurrently (each waits for its answer before the next, as a client does);
- server CPU per event: the server process's CPU time (all threads) over that run, per event;
- send latency p50/p99: the PUT /send round trips of that run (so under that load);
- sync wake-up p50/p99: a client long-polls /sync (timeout 30 s); another sends a message; the time
  from starting that send to the /sync answer that holds it (so it includes the send itself), over
  --wakeups rounds (the p99 of 100 rounds is the second worst);
- initial sync: a user in 50 rooms with 20 messages each calls /sync with no token (first call);
- RSS after the workload.

The floor is an idle Python process that only imports the server's dependencies: its RSS and the
time it takes to get there, the least any Python server built on them can cost (also shown with
`aiohttp.web`, what using it costs). The HTTP floor is the send workload
against a trivial aiohttp handler: the most requests/s any aiohttp server reaches here.

The timed loops use `Connection`, a minimal keep-alive HTTP/1.1 client: on a 2-CPU machine the
load generator's own CPU would otherwise limit the faster server (see `bench/README.md`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from synapse_server import start_synapse, synapse_available  # noqa: E402

from tests.interop.server import RunningServer, rss_kib, start_homeserver  # noqa: E402

PASSWORD = "bench password 1"
START_POLL_S = 0.005  # /versions is polled this often at start (the floor says "ready" itself)
PATH_SAFE = "!$&'()*+,;=:@"  # what a path segment may hold unescaped (RFC 3986 pchar), as aiohttp sends
# The modules `python -m homeserver` depends on (pyproject's dependencies), for the floor.
DEPENDENCY_IMPORTS = (
    "aiohttp",
    "canonicaljson",
    "signedjson.key",
    "nacl.signing",
    "plyvel",
    "orjson",
    "argon2",
    "uvloop",
    "pydantic",
)


# -- a minimal client ----------------------------------------------------------------------------


class ApiError(RuntimeError):
    pass


@dataclass
class Account:
    user_id: str
    token: str


class Client:
    def __init__(self, session: aiohttp.ClientSession, base_url: str) -> None:
        self.session = session
        self.server = base_url
        self.base = base_url + "/_matrix/client/v3"

    async def call(
        self, method: str, path: str, token: str | None = None, body: Any = None, params: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(method, self.base + path, json=body, params=params, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    async def ok(
        self, method: str, path: str, token: str | None = None, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        status, answer = await self.call(method, path, token, body, params)
        if status != 200:
            raise ApiError(f"{method} {path} -> {status} {answer}")
        return answer

    async def register(self, localpart: str) -> Account:
        """Registration the way Element does it: the 401 with a session, then m.login.dummy."""
        body: dict[str, Any] = {"username": localpart, "password": PASSWORD}
        status, answer = await self.call("POST", "/register", body=body)
        if status == 401:
            body["auth"] = {"type": "m.login.dummy", "session": answer.get("session")}
            status, answer = await self.call("POST", "/register", body=body)
        if status != 200:
            raise ApiError(f"register {localpart} -> {status} {answer}")
        return Account(answer["user_id"], answer["access_token"])

    async def create_room(self, account: Account, **body: Any) -> str:
        return str((await self.ok("POST", "/createRoom", account.token, body))["room_id"])

    async def join(self, account: Account, room_id: str) -> None:
        await self.ok("POST", f"/join/{room_id}", account.token, {})

    async def send(self, account: Account, room_id: str, text: str) -> str:
        txn = uuid.uuid4().hex
        answer = await self.ok(
            "PUT", f"/rooms/{room_id}/send/m.room.message/{txn}", account.token, {"msgtype": "m.text", "body": text}
        )
        return str(answer["event_id"])

    async def sync(self, account: Account, since: str | None = None, timeout_ms: int = 0) -> Any:
        params = {"timeout": str(timeout_ms)}
        if since:
            params["since"] = since
        return await self.ok("GET", "/sync", account.token, params=params)


class Connection:
    """One keep-alive HTTP/1.1 connection doing the least client-side work per request, for the timed
    loops. On a 2-CPU machine the load generator shares the CPUs with the server it measures; a
    general-purpose client (aiohttp's costs ~0.3-0.5 ms of CPU per request here) would slow the
    faster server down more than the slower one. Requests are written by hand, answers parsed from
    the status line, Content-Length (or chunks) and the JSON body."""

    def __init__(self, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.prefix = "/_matrix/client/v3"
        self.head = f"Host: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.reader is None or self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return self.reader, self.writer

    async def request(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> tuple[int, Any]:
        return await asyncio.wait_for(self._request(method, path, body), timeout)

    async def _request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        reader, writer = await self._connect()
        data = json.dumps(body).encode() if body is not None else b""
        writer.write(
            f"{method} {self.prefix}{path} HTTP/1.1\r\n{self.head}"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            raw = await reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(chunk[:-2])
            raw = b"".join(chunks)
        else:
            raw = await reader.read()
            headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, json.loads(raw) if raw else None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, room_id: str, text: str) -> str:
        txn = uuid.uuid4().hex
        path = f"/rooms/{quote(room_id, safe=PATH_SAFE)}/send/m.room.message/{txn}"
        status, answer = await self.request("PUT", path, {"msgtype": "m.text", "body": text})
        if status != 200:
            raise ApiError(f"PUT {path} -> {status} {answer}")
        return str(answer["event_id"])

    async def sync(self, since: str, timeout_ms: int) -> Any:
        path = f"/sync?timeout={timeout_ms}&since={quote(since, safe='')}"
        status, answer = await self.request("GET", path, timeout=timeout_ms / 1000 + 30)
        if status != 200:
            raise ApiError(f"GET /sync -> {status} {answer}")
        return answer


# -- measurements --------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Result:
    server: str
    start_s: float = 0.0
    start_runs: list[float] = field(default_factory=list)
    idle_rss_mib: float = 0.0
    events_per_s: float = 0.0
    cpu_ms_per_event: float = 0.0
    send_p50_ms: float = 0.0
    send_p99_ms: float = 0.0
    wakeup_p50_ms: float = 0.0
    wakeup_p99_ms: float = 0.0
    initial_sync_ms: float = 0.0
    initial_sync_warm_ms: float = 0.0
    rss_after_mib: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


async def _settle_rss(pid: int, seconds: float = 2.0) -> float:
    await asyncio.sleep(seconds)  # a benchmark, not a test: let start-up garbage settle
    return rss_kib(pid) / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def send_concurrently(
    base_url: str, tokens: list[str], room_id: str, messages: int, pid: int | None = None
) -> tuple[float, list[float], float]:
    """Each token sends `messages` messages back to back on its own connection, all at once:
    (events per second, latencies, server CPU ms per event, when `pid` is given)."""
    latencies: list[float] = []
    connections = [Connection(base_url, token) for token in tokens]
    for conn in connections:  # connected before the clock starts, as running clients are
        await conn._connect()

    async def sender(n: int, conn: Connection) -> None:
        for i in range(messages):
            t0 = time.perf_counter()
            await conn.send(room_id, f"message {i} from sender {n}")
            latencies.append(time.perf_counter() - t0)

    cpu0 = cpu_seconds(pid) if pid else 0.0
    t0 = time.perf_counter()
    await asyncio.gather(*(sender(n, conn) for n, conn in enumerate(connections)))
    elapsed = time.perf_counter() - t0
    cpu_ms = (cpu_seconds(pid) - cpu0) * 1000 / len(latencies) if pid else 0.0
    for conn in connections:
        conn.close()
    return len(latencies) / elapsed, latencies, cpu_ms


async def events_per_second(client: Client, senders: list[Account], messages: int, res: Result, pid: int) -> str:
    owner = senders[0]
    room_id = await client.create_room(owner, preset="public_chat", name="bench")
    for account in senders[1:]:
        await client.join(account, room_id)
    rate, latencies, cpu_ms = await send_concurrently(client.server, [a.token for a in senders], room_id, messages, pid)
    res.events_per_s = rate
    res.send_p50_ms = percentile(latencies, 50) * 1000
    res.send_p99_ms = percentile(latencies, 99) * 1000
    res.cpu_ms_per_event = cpu_ms
    res.notes["events_sent"] = len(latencies)
    return room_id


async def sync_wakeup(
    client: Client, room_id: str, sender: Account, receiver: Account, rounds: int, res: Result
) -> None:
    await client.join(receiver, room_id)
    since = (await client.sync(receiver))["next_batch"]
    latencies: list[float] = []
    syncing = Connection(client.server, receiver.token)
    sending = Connection(client.server, sender.token)
    for i in range(rounds):
        poll = asyncio.create_task(syncing.sync(since, timeout_ms=30_000))
        await asyncio.sleep(0.05)  # let the long poll reach the server and park
        if poll.done():  # something else woke it (e.g. our join): go round again
            since = (await poll)["next_batch"]
            continue
        t0 = time.perf_counter()
        event_id = await sending.send(room_id, f"wake {i}")
        deadline = time.monotonic() + 30
        while True:
            answer = await poll
            since = answer["next_batch"]
            room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
            if any(e.get("event_id") == event_id for e in room.get("timeline", {}).get("events", [])):
                latencies.append(time.perf_counter() - t0)
                break
            if time.monotonic() > deadline:
                raise ApiError(f"/sync never delivered {event_id}")
            poll = asyncio.create_task(syncing.sync(since, timeout_ms=30_000))
    syncing.close()
    sending.close()
    res.wakeup_p50_ms = percentile(latencies, 50) * 1000
    res.wakeup_p99_ms = percentile(latencies, 99) * 1000
    res.notes["wakeups"] = len(latencies)


async def initial_sync(client: Client, reader: Account, rooms: int, per_room: int, res: Result) -> None:
    room_ids = [await client.create_room(reader, name=f"room {i}") for i in range(rooms)]
    sem = asyncio.Semaphore(8)

    async def fill(room_id: str) -> None:
        async with sem:
            for j in range(per_room):
                await client.send(reader, room_id, f"history {j}")

    await asyncio.gather(*(fill(r) for r in room_ids))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        answer = await client.sync(reader)
        times.append(time.perf_counter() - t0)
        joined = answer.get("rooms", {}).get("join", {})
        if len(joined) < rooms:
            raise ApiError(f"initial /sync shows {len(joined)} of {rooms} rooms")
    res.initial_sync_ms = times[0] * 1000
    res.initial_sync_warm_ms = statistics.median(times[1:]) * 1000
    res.notes["initial_sync_rooms"] = rooms
    res.notes["initial_sync_messages_per_room"] = per_room


async def workload(server: RunningServer, args: argparse.Namespace, res: Result) -> None:
    res.idle_rss_mib = await _settle_rss(server.pid)
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        client = Client(session, server.base_url)
        run = uuid.uuid4().hex[:6]
        accounts = [await client.register(f"bench{run}{i}") for i in range(args.senders + 2)]
        senders, receiver, reader = accounts[: args.senders], accounts[-2], accounts[-1]
        room_id = await events_per_second(client, senders, args.messages, res, server.pid)
        await sync_wakeup(client, room_id, senders[0], receiver, args.wakeups, res)
        await initial_sync(client, reader, args.rooms, args.room_messages, res)
    res.rss_after_mib = await _settle_rss(server.pid, 1.0)


# -- servers -------------------------------------------------------------------------------------


def matched_bcrypt_rounds() -> tuple[int, float, float]:
    """bcrypt rounds whose cost is closest to our default argon2id hash, timed here and now."""
    import bcrypt
    from argon2 import PasswordHasher

    from homeserver.auth import passwords

    time_cost, memory_cost = passwords._COSTS["default"]
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=1)

    def best_of(fn: Callable[[], object], n: int = 3) -> float:
        runs = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        return min(runs)

    argon = best_of(lambda: hasher.hash(PASSWORD))
    bcrypt8 = best_of(lambda: bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=8)))
    rounds = max(4, min(14, 8 + round(math.log2(argon / bcrypt8))))
    return rounds, argon, bcrypt8 * 2 ** (rounds - 8)


def our_settings(args: argparse.Namespace) -> dict[str, Any]:
    from homeserver.config import Config

    settings: dict[str, Any] = {"password_hash_cost": "default", "fsync": bool(args.fsync)}
    if "presence" in Config.model_fields:
        settings["presence"] = False
    return settings


def compile_bytecode(source: Path) -> None:
    """Compile our packages' bytecode, as `pip install` does for an installed package (and did for
    Synapse); the server's subprocesses then load `.pyc` files like Synapse's do."""
    import compileall

    for package in ("homeserver", "storage", "federation"):
        path = source / package
        if path.is_dir():
            compileall.compile_dir(str(path), quiet=1)


def start(kind: str, tmp: Path, args: argparse.Namespace, bcrypt_rounds: int) -> RunningServer:
    if kind == "ours":
        return start_homeserver(tmp, poll_s=START_POLL_S, source=Path(args.source), **our_settings(args))
    return start_synapse(tmp, bcrypt_rounds=bcrypt_rounds, python=Path(sys.executable), poll_s=START_POLL_S)


def measure(kind: str, args: argparse.Namespace, bcrypt_rounds: int) -> Result:
    res = Result("homeserver" if kind == "ours" else "synapse")
    if kind == "ours":
        compile_bytecode(Path(args.source))
    with tempfile.TemporaryDirectory(prefix=f"bench-{kind}-") as tmp:
        for i in range(max(0, args.starts - 1)):  # extra cold starts, for the start-up time only
            server = start(kind, Path(tmp) / f"start{i}", args, bcrypt_rounds)
            res.start_runs.append(server.start_seconds)
            server.stop()
        server = start(kind, Path(tmp) / "main", args, bcrypt_rounds)
        res.start_runs.append(server.start_seconds)
        res.start_s = statistics.median(res.start_runs)
        try:
            asyncio.run(workload(server, args, res))
        except Exception as e:
            raise RuntimeError(f"{kind}: {e}\n--- server log ---\n{server.log_tail()}") from e
        finally:
            server.stop()
    return res


# What importing the dependencies leaves out of what a server built on them needs: aiohttp's server
# side is a module of its own, which `import aiohttp` does not load; pydantic loads its model
# machinery only when a model is defined (the server validates its config with one at start).
DEPENDENCY_USE = "import aiohttp.web\nfrom pydantic import BaseModel\nclass M(BaseModel):\n    x: int\n"


def floor(runs: int = 3, extra: str = "") -> dict[str, Any]:
    """An idle Python that only imports the server's dependencies (and runs `extra`): its start time
    and RSS (medians of `runs`, as for the servers)."""
    code = (
        "import " + ", ".join(DEPENDENCY_IMPORTS) + "\n" + extra + "print('ready', flush=True)\n"
        "import sys\nsys.stdin.read()\n"
    )
    starts: list[float] = []
    rsss: list[float] = []
    for _ in range(max(1, runs)):
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        starts.append(time.perf_counter() - t0)
        time.sleep(1.0)
        rsss.append(rss_kib(proc.pid) / 1024)
        proc.stdin.close()
        proc.wait(10)
        if line.strip() != b"ready":
            raise RuntimeError("the floor process failed to import the dependencies")
    return {"start_s": statistics.median(starts), "rss_mib": statistics.median(rsss), "start_runs": starts}


# A trivial aiohttp server on uvloop answering the send endpoint: what the machine, aiohttp and this
# client allow at most, measured with the same workload (the events/s "floor").
TRIVIAL_SERVER = """
import sys, uvloop
from aiohttp import web
async def send(request):
    await request.read()
    return web.json_response({"event_id": "$" + "A" * 43})
app = web.Application()
app.router.add_put("/_matrix/client/v3/rooms/{room}/send/{type}/{txn}", send)
uvloop.install()
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def http_floor(args: argparse.Namespace) -> dict[str, float]:
    """Events/s of the same send workload against a trivial aiohttp handler (no Matrix work)."""
    from tests.interop.server import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", TRIVIAL_SERVER, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the trivial aiohttp server did not start") from None
                time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        tokens = ["t"] * args.senders
        asyncio.run(send_concurrently(base, tokens, "!room:localhost", 10))  # warm up
        run = send_concurrently(base, tokens, "!room:localhost", args.messages, proc.pid)
        rate, latencies, cpu_ms = asyncio.run(run)
        return {"events_per_s": rate, "cpu_ms_per_event": cpu_ms, "send_p50_ms": percentile(latencies, 50) * 1000}
    finally:
        proc.terminate()
        proc.wait(10)


# -- report --------------------------------------------------------------------------------------

# (key, label, unit, higher is better)
METRICS = (
    ("start_s", "start to first /versions", "s", False),
    ("idle_rss_mib", "idle RSS", "MiB", False),
    ("rss_after_mib", "RSS after the workload", "MiB", False),
    ("events_per_s", "events/s, {senders} senders, one room", "ev/s", True),
    ("cpu_ms_per_event", "  server CPU per event (all threads)", "ms", False),
    ("send_p50_ms", "send latency p50 (under that load)", "ms", False),
    ("send_p99_ms", "send latency p99 (under that load)", "ms", False),
    ("wakeup_p50_ms", "/sync wake-up p50", "ms", False),
    ("wakeup_p99_ms", "/sync wake-up p99", "ms", False),
    ("initial_sync_ms", "initial /sync, {rooms} rooms x {room_messages} msgs", "ms", False),
    ("initial_sync_warm_ms", "  the same, repeated (median of 2)", "ms", False),
)


def ratio(ours: float, theirs: float, higher_better: bool) -> float | None:
    if ours <= 0 or theirs <= 0:
        return None
    return ours / theirs if higher_better else theirs / ours


def report(results: dict[str, Result], fl: dict[str, float], meta: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for key, label, unit, higher in METRICS:
        row: dict[str, Any] = {"metric": key, "label": label.format(**meta), "unit": unit, "higher_is_better": higher}
        for name, res in results.items():
            row[name] = getattr(res, key)
        if "homeserver" in results and "synapse" in results:
            row["ratio"] = ratio(row["homeserver"], row["synapse"], higher)
        rows.append(row)
    return {
        "rows": rows,
        "floor": fl,
        "meta": meta,
        "notes": {k: r.notes for k, r in results.items()},
        "start_runs": {k: r.start_runs for k, r in results.items()},
    }


def rows_value(out: dict[str, Any], metric: str, server: str = "homeserver") -> float:
    for row in out["rows"]:
        if row["metric"] == metric:
            return float(row.get(server) or 0.0)
    return 0.0


def _num(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def print_table(out: dict[str, Any]) -> None:
    names = [n for n in ("homeserver", "synapse") if n in out["rows"][0]]
    head = f"{'metric':<38} {'unit':>5} " + " ".join(f"{n:>11}" for n in names)
    if "ratio" in out["rows"][0]:
        head += f" {'ratio':>7}"
    print(head)
    print("-" * len(head))
    for row in out["rows"]:
        line = f"{row['label']:<38} {row['unit']:>5} " + " ".join(f"{_num(row[n]):>11}" for n in names)
        if "ratio" in row:
            line += f" {row['ratio']:>6.2f}x" if row["ratio"] else f" {'-':>7}"
        print(line)
    fl = out["floor"]
    full = fl.get("with_models_and_web") or {}
    print(
        f"\nfloor (idle Python importing only the server's dependencies): RSS {fl['rss_mib']:.1f} MiB, "
        f"start to ready {fl['start_s']:.2f} s"
        + (
            f"\n  the same plus aiohttp.web and one pydantic model: RSS {full['rss_mib']:.1f} MiB, "
            f"start to ready {full['start_s']:.2f} s"
            if full
            else ""
        )
        + f"\n  ours above the floor: start +{rows_value(out, 'start_s') - fl['start_s']:.2f} s, "
        f"idle RSS +{rows_value(out, 'idle_rss_mib') - fl['rss_mib']:.1f} MiB"
    )
    http = fl.get("http")
    if http:
        print(
            f"HTTP floor (a trivial aiohttp handler, same client and workload): {http['events_per_s']:.0f} "
            f"requests/s, server CPU {http['cpu_ms_per_event']:.3f} ms per request"
        )
    m = out["meta"]
    print(
        f"ratio: how many times better ours is (>1 = ours better). Synapse {m.get('synapse_version')}, bcrypt "
        f"rounds {m['bcrypt_rounds']} (~{m['bcrypt_s'] * 1000:.0f} ms; our argon2id ~{m['argon2_s'] * 1000:.0f} ms); "
        f"our fsync {'on' if m['fsync'] else 'off'} (Synapse's SQLite: WAL, synchronous=FULL)."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write JSON (to stdout: no table)")
    parser.add_argument("--only", choices=("ours", "synapse"), help="measure one server only")
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--messages", type=int, default=100, help="messages per sender")
    parser.add_argument("--wakeups", type=int, default=100, help="sync wake-up rounds")
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--room-messages", type=int, default=20)
    parser.add_argument("--starts", type=int, default=3, help="cold starts timed per server (median)")
    parser.add_argument("--fsync", action="store_true", help="run ours with fsync on (as Synapse's SQLite is)")
    parser.add_argument("--quick", action="store_true", help="a smaller workload, to try the script out")
    parser.add_argument(
        "--source",
        default=str(REPO_ROOT),
        metavar="DIR",
        help="run our server from this checkout (e.g. an older commit's `git archive`, for before/after)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.wakeups, args.rooms, args.room_messages, args.starts = 5, 10, 10, 5, 1

    try:  # the client side runs on uvloop too (less of the shared CPUs spent measuring)
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    kinds = [args.only] if args.only else ["ours", "synapse"]
    if "synapse" in kinds and not synapse_available(Path(sys.executable)):
        print(
            "Synapse is not importable here: run `bash bench/setup.sh` and use bench/.venv/bin/python", file=sys.stderr
        )
        return 2
    rounds, argon_s, bcrypt_s = matched_bcrypt_rounds()
    log = sys.stderr if args.json == "-" else sys.stdout
    results: dict[str, Result] = {}
    for kind in kinds:
        print(f"measuring {kind} ...", file=log, flush=True)
        res = measure(kind, args, rounds)
        results[res.server] = res
    fl = floor(args.starts)
    fl["with_models_and_web"] = floor(args.starts, DEPENDENCY_USE)
    fl["http"] = http_floor(args)
    meta: dict[str, Any] = {
        "bcrypt_rounds": rounds,
        "bcrypt_s": bcrypt_s,
        "argon2_s": argon_s,
        "fsync": bool(args.fsync),
        "senders": args.senders,
        "messages_per_sender": args.messages,
        "wakeups": args.wakeups,
        "rooms": args.rooms,
        "room_messages": args.room_messages,
        "starts": args.starts,
    }
    try:
        from importlib.metadata import version

        meta["synapse_version"] = version("matrix-synapse")
    except Exception:  # not installed: --only ours
        meta["synapse_version"] = None
    out = report(results, fl, meta)
    if args.json:
        text = json.dumps(out, indent=2)
        if args.json == "-":
            print(text)
            return 0
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    print_table(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
