"""A real server in a subprocess: our `python -m homeserver`, or Synapse (see `bench/synapse_server.py`
and, as a federation peer, `tests/interop/federation.py`).

Used by the interop tests (real clients against a real server over loopback) and by the client-API
benchmark. Each server gets a temporary data directory and a free port on 127.0.0.1; `start_*`
returns once `/versions` answers 200, or raises with the tail of the server's log. A server can be
stopped and started again on the same data and ports (`RunningServer.restart`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_SECRET = "interop-shared-secret"
START_DEADLINE_S = 60.0

# Synapse's `rc_*` rate limits, all opened: generous enough that no benchmark or test ever meets one
# (its defaults allow a room creation per minute and a registration every six seconds). Used by
# `bench/synapse_server.py` and `tests/interop/federation.py`.
_OPEN = {"per_second": 100_000, "burst_count": 1_000_000}
SYNAPSE_RATE_LIMITS: dict[str, Any] = {
    "rc_message": _OPEN,
    "rc_registration": _OPEN,
    "rc_registration_token_validity": _OPEN,
    "rc_login": {"address": _OPEN, "account": _OPEN, "failed_attempts": _OPEN},
    "rc_admin_redaction": _OPEN,
    "rc_joins": {"local": _OPEN, "remote": _OPEN},
    "rc_joins_per_room": _OPEN,
    "rc_key_requests": _OPEN,
    "rc_3pid_validation": _OPEN,
    "rc_invites": {"per_room": _OPEN, "per_user": _OPEN, "per_issuer": _OPEN},
    "rc_third_party_invite": _OPEN,
    "rc_media_create": _OPEN,
    "rc_presence": {"per_user": _OPEN},
    "rc_delayed_event_mgmt": _OPEN,
    "rc_room_creation": _OPEN,
    "rc_reports": _OPEN,
    "rc_user_directory": _OPEN,
    "rc_profile": _OPEN,
    # Inbound federation per origin: no sleeping, no rejections, no cap on concurrent requests.
    "rc_federation": {
        "window_size": 1000,
        "sleep_limit": 1_000_000,
        "sleep_delay": 1,
        "reject_limit": 1_000_000,
        "concurrent": 1_000,
    },
}


class ServerStartError(RuntimeError):
    pass


@dataclass
class RunningServer:
    kind: str  # "homeserver" or "synapse"
    base_url: str
    server_name: str
    shared_secret: str
    process: subprocess.Popen[bytes]
    log_path: Path
    data_dir: Path
    start_seconds: float = 0.0  # from spawn to the first 200 from /versions
    extra: dict[str, Any] = field(default_factory=dict)
    # How the process was spawned, for `restart` (same data directory, same ports, same config).
    command: list[str] = field(default_factory=list)
    cwd: Path | None = None
    env: dict[str, str] | None = None
    # Servers that federate: the HTTPS base URL of their federation listener and the CA (PEM) that
    # issued its certificate.
    federation_url: str | None = None
    ca_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def restart(self, *, deadline_s: float = START_DEADLINE_S, poll_s: float = 0.02) -> float:
        """Stop the server if it runs, spawn it again the way it was first spawned (its data and
        ports kept; the log appended to), and wait for `/versions`; returns the seconds that took."""
        if not self.command:
            raise ServerStartError(f"{self.kind}: started without a recorded command, cannot restart")
        self.stop()
        with self.log_path.open("ab") as log:
            log.write(f"\n==== restart at {time.strftime('%H:%M:%S')} ====\n".encode())
            log.flush()
            spawned_at = time.monotonic()
            self.process = subprocess.Popen(
                self.command, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.start_seconds = wait_for_versions(self, spawned_at, deadline_s, poll_s)
        if self.federation_url is not None:
            wait_for_federation(self, spawned_at + deadline_s)
        return self.start_seconds


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(method: str, url: str, body: Any = None, token: str | None = None, timeout: float = 30.0) -> Any:
    """One JSON request with the standard library (no event loop needed); HTTP errors raise."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def wait_for_versions(
    server: RunningServer, spawned_at: float, deadline_s: float = START_DEADLINE_S, poll_s: float = 0.02
) -> float:
    """Poll `/versions` every `poll_s` until it answers 200; seconds since `spawned_at`. Raises if the
    process dies."""
    url = server.base_url + "/_matrix/client/versions"
    deadline = spawned_at + deadline_s
    while True:
        if server.process.poll() is not None:
            raise ServerStartError(
                f"{server.kind} exited with status {server.process.returncode} before serving /versions; "
                f"log:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - spawned_at
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise ServerStartError(
                f"{server.kind} did not serve /versions within {deadline_s:.0f} s; log:\n{server.log_tail()}"
            )
        time.sleep(poll_s)


def wait_for_federation(server: RunningServer, deadline: float, poll_s: float = 0.05) -> None:
    """Poll `<federation_url>/_matrix/federation/v1/version` over TLS (trusting `ca_path`) until it
    answers 200 or the monotonic clock passes `deadline`. Raises if the process dies."""
    assert server.federation_url is not None
    ctx = ssl.create_default_context(cafile=str(server.ca_path) if server.ca_path else None)
    url = server.federation_url + "/_matrix/federation/v1/version"
    while True:
        if server.process.poll() is not None:
            raise ServerStartError(
                f"{server.kind} exited with status {server.process.returncode} before serving federation; "
                f"log:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise ServerStartError(f"{server.kind}'s federation listener did not answer; log:\n{server.log_tail()}")
        time.sleep(poll_s)


def homeserver_env(data_dir: Path, port: int, **settings: Any) -> dict[str, str]:
    """The environment for `python -m homeserver`: ours, with no stray HOMESERVER_* from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
    values: dict[str, Any] = {
        "server_name": "localhost",
        "listen": f"127.0.0.1:{port}",
        "data_dir": str(data_dir),
        "registration": "open",
        "registration_shared_secret": SHARED_SECRET,
        "password_hash_cost": "low",
        "rate_limits__enabled": False,
        "log_level": "WARNING",
    }
    values.update(settings)
    for key, value in values.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = json.dumps(value)  # a TOML string: stays a string ("11" too) and odd characters survive
        else:
            text = str(value)
        env["HOMESERVER_" + key.upper()] = text
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def start_homeserver(
    data_dir: Path,
    *,
    port: int | None = None,
    python: str = sys.executable,
    deadline_s: float = START_DEADLINE_S,
    poll_s: float = 0.02,
    source: Path = REPO_ROOT,
    **settings: Any,
) -> RunningServer:
    """Start `python -m homeserver` on 127.0.0.1 and wait for `/versions`.

    Defaults suit tests: registration open with a shared secret, low password-hash cost, rate limits
    off, log level WARNING; `settings` override them (config keys, nested ones joined with `__`).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):  # a free port can be taken between probing and binding
        chosen = port or free_port()
        log_path = data_dir / f"server-{chosen}.log"
        env = homeserver_env(data_dir / "data", chosen, **settings)
        command = [python, "-m", "homeserver"]
        with log_path.open("wb") as log:
            spawned_at = time.monotonic()
            proc = subprocess.Popen(command, cwd=source, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = RunningServer(
            "homeserver",
            f"http://127.0.0.1:{chosen}",
            str(settings.get("server_name", "localhost")),
            SHARED_SECRET,
            proc,
            log_path,
            data_dir,
            command=command,
            cwd=source,
            env=env,
        )
        try:
            server.start_seconds = wait_for_versions(server, spawned_at, deadline_s, poll_s)
            return server
        except ServerStartError:
            server.stop()
            if port is not None or attempt == 2 or "address already in use" not in server.log_tail().lower():
                raise
    raise AssertionError("unreachable")


def rss_kib(pid: int) -> int:
    """Resident set size of a process, in KiB (Linux)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def register(server: RunningServer, localpart: str, password: str = "interop-password") -> tuple[str, str]:
    """A new account on `server` by open registration (`m.login.dummy`): (user id, access token)."""
    url = server.base_url + "/_matrix/client/v3/register"
    body: dict[str, Any] = {"username": localpart, "password": password, "inhibit_login": False}
    try:
        answer = http_json("POST", url, body)
    except urllib.error.HTTPError as e:
        session = json.loads(e.read() or b"{}").get("session")
        if e.code != 401 or session is None:
            raise
        answer = http_json("POST", url, {**body, "auth": {"type": "m.login.dummy", "session": session}})
    return str(answer["user_id"]), str(answer["access_token"])


@contextlib.contextmanager
def running_homeserver(data_dir: Path, **settings: Any) -> Any:
    server = start_homeserver(data_dir, **settings)
    try:
        yield server
    finally:
        server.stop()
