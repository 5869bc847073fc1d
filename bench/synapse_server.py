"""Synapse (from PyPI, in `bench/.venv`) as a real server on loopback, configured for fair comparison.

The config is generated for each run: SQLite in a temporary directory, `server_name: localhost`, one
client listener on a free 127.0.0.1 port, every `rc_*` rate limit opened, presence off, open
registration plus a shared secret, logging at WARNING, and a chosen bcrypt cost. Synapse reads
YAML, and JSON is YAML, so the config is written with the standard library.

    bench/.venv/bin/python bench/synapse_server.py            # start one, print its URL, wait for ^C
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.interop.server import (  # noqa: E402  (the repository root is put on the path above)
    SHARED_SECRET,
    SYNAPSE_RATE_LIMITS,
    RunningServer,
    ServerStartError,
    free_port,
    wait_for_versions,
)

BENCH_PYTHON = REPO_ROOT / "bench" / ".venv" / "bin" / "python"


def synapse_available(python: Path = BENCH_PYTHON) -> bool:
    if not python.exists():
        return False
    done = subprocess.run([str(python), "-c", "import synapse"], capture_output=True, check=False)
    return done.returncode == 0


def write_config(
    data_dir: Path,
    port: int,
    *,
    server_name: str = "localhost",
    bcrypt_rounds: int = 4,
    log_level: str = "WARNING",
    room_version: str | None = None,
) -> Path:
    """Write `homeserver.yaml`, its log config and a signing key into `data_dir`; return the config path."""
    from signedjson.key import generate_signing_key, write_signing_keys

    data_dir.mkdir(parents=True, exist_ok=True)
    key_path = data_dir / "signing.key"
    with key_path.open("w", encoding="ascii") as f:
        write_signing_keys(f, [generate_signing_key("a_bench")])
    log_config = data_dir / "log.yaml"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
                "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
                "root": {"level": log_level, "handlers": ["console"]},
                "disable_existing_loggers": False,
            }
        ),
        encoding="utf-8",
    )
    config: dict[str, Any] = {
        "server_name": server_name,
        "pid_file": str(data_dir / "homeserver.pid"),
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
        "database": {"name": "sqlite3", "args": {"database": str(data_dir / "homeserver.db")}},
        "log_config": str(log_config),
        "media_store_path": str(data_dir / "media_store"),
        "signing_key_path": str(key_path),
        "report_stats": False,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "registration_shared_secret": SHARED_SECRET,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "presence": {"enabled": False},
        "bcrypt_rounds": bcrypt_rounds,
        "url_preview_enabled": False,
        "enable_metrics": False,
        # Rooms reach /publicRooms only if the publication rules allow it.
        "room_list_publication_rules": [{"action": "allow"}],
        "alias_creation_rules": [{"action": "allow"}],
        "user_directory": {"enabled": True, "search_all_users": True},
        **SYNAPSE_RATE_LIMITS,
    }
    if room_version is not None:
        config["default_room_version"] = room_version
    path = data_dir / "homeserver.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def start_synapse(
    data_dir: Path,
    *,
    port: int | None = None,
    python: Path = BENCH_PYTHON,
    bcrypt_rounds: int = 4,
    deadline_s: float = 120.0,
    room_version: str | None = None,
    poll_s: float = 0.02,
) -> RunningServer:
    """Start Synapse on 127.0.0.1 and wait until `/versions` answers (polled every `poll_s`)."""
    chosen = port or free_port()
    config = write_config(data_dir, chosen, bcrypt_rounds=bcrypt_rounds, room_version=room_version)
    log_path = data_dir / "synapse.log"
    command = [str(python), "-m", "synapse.app.homeserver", "--config-path", str(config)]
    with log_path.open("wb") as log:
        spawned_at = time.monotonic()
        proc = subprocess.Popen(command, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT)
    server = RunningServer(
        "synapse",
        f"http://127.0.0.1:{chosen}",
        "localhost",
        SHARED_SECRET,
        proc,
        log_path,
        data_dir,
        command=command,
        cwd=data_dir,
    )
    server.start_seconds = wait_for_versions(server, spawned_at, deadline_s, poll_s)
    return server


def main() -> int:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="synapse-") as tmp:
        try:
            server = start_synapse(Path(tmp))
        except ServerStartError as e:
            print(e, file=sys.stderr)
            return 1
        print(f"synapse on {server.base_url} (ready in {server.start_seconds:.2f} s); ^C stops it", flush=True)
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
