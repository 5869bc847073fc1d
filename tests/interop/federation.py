"""Synapse as a federation peer on loopback, over TLS, for the federation interop tests.

Synapse comes from PyPI (`matrix-synapse`, pinned in `scripts/setup-synapse`, which `scripts/test`
runs) in its own venv, `.venv-synapse/` at the repository root. Everything a peer needs is made per
run:

- `LoopbackCA`: a throw-away CA (trustme) written to a directory, and certificates for `127.0.0.1`
  and `localhost` (IP and DNS names in one certificate, so a server name may use either form);
- `write_synapse_config` / `start_synapse_peer`: a Synapse whose server name is `<host>:<TLS port>`
  (an explicit port: no `.well-known`, no SRV), with one TLS listener serving the `federation` and
  `client` resources and one plain-HTTP client listener for clients and the start-up probe. Outbound,
  it trusts only the test CA (`federation_custom_ca_list`), may connect to loopback (its default
  `ip_range_blacklist` holds 127.0.0.0/8 and ::1, and `ip_range_whitelist` does not cover IP-literal
  server names, so the blacklist is replaced), asks no notary (`trusted_key_servers: []`), and
  retries an unreachable destination after a second or two instead of ten minutes. SQLite, presence
  on, open registration plus the shared secret, every rate limit opened, logging to `synapse.log`.

The handle is a `RunningServer` (`tests/interop/server.py`): `base_url` (plain HTTP, client API),
`federation_url` (HTTPS), `server_name`, `ca_path`, and `restart()` on the same data (for the split
and restart scenarios). `extra["signing_key"]` is Synapse's signing key (key id, key) as written.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import nacl.signing
import trustme

from federation.client import ssl_context
from homeserver.protocol.signing import encode_seed, generate_signing_key

from .server import (
    REPO_ROOT,
    SHARED_SECRET,
    START_DEADLINE_S,
    SYNAPSE_RATE_LIMITS,
    RunningServer,
    ServerStartError,
    free_port,
    start_homeserver,
    wait_for_federation,
    wait_for_versions,
)

SYNAPSE_VENV = REPO_ROOT / ".venv-synapse"
SYNAPSE_PYTHON = SYNAPSE_VENV / "bin" / "python"
SYNAPSE_START_DEADLINE_S = 120.0
LOOPBACK_NAMES = ("127.0.0.1", "localhost")

# Synapse's default outbound blacklist without the loopback ranges (127.0.0.0/8, ::1): the private
# and special-purpose networks stay refused. 0.0.0.0 and :: are always refused by Synapse itself.
LOOPBACK_ALLOWED_BLACKLIST = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "169.254.0.0/16",
    "192.88.99.0/24",
    "198.18.0.0/15",
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "fe80::/10",
    "fc00::/7",
    "2001:db8::/32",
    "ff00::/8",
    "fec0::/10",
]

# Retries for tests: an unreachable destination is tried again after 1 s, doubling up to 10 s (its
# defaults: 10 minutes doubling up to a week), and one request gives up within seconds.
FAST_RETRIES: dict[str, Any] = {
    "destination_min_retry_interval": "1s",
    "destination_retry_multiplier": 2,
    "destination_max_retry_interval": "10s",
    "max_short_retry_delay": 500,
    "max_long_retry_delay": "2s",
    "max_short_retries": 2,
    "max_long_retries": 3,
    "client_timeout": "20s",
}


def synapse_installed(python: Path = SYNAPSE_PYTHON) -> bool:
    """Is the venv `scripts/setup-synapse` makes there (an interpreter that can import Synapse)?"""
    if not python.exists():
        return False
    done = subprocess.run([str(python), "-c", "import synapse.app.homeserver"], capture_output=True, check=False)
    return done.returncode == 0


class LoopbackCA:
    """A throw-away CA whose certificate is written to `<directory>/ca.pem`, issuing certificates for
    the loopback names (`127.0.0.1` and `localhost`, both in each certificate)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA()
        self.ca_path = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))

    def issue(self, names: tuple[str, ...] = LOOPBACK_NAMES) -> trustme.LeafCert:
        return self.ca.issue_cert(*names)

    def issue_files(self, stem: str, names: tuple[str, ...] = LOOPBACK_NAMES) -> tuple[Path, Path]:
        """A new certificate for `names`: (certificate chain PEM, private key PEM) paths."""
        leaf = self.issue(names)
        cert_path = self.directory / f"{stem}.crt.pem"
        key_path = self.directory / f"{stem}.key.pem"
        cert_path.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(str(key_path))
        key_path.chmod(0o600)
        return cert_path, key_path

    def server_context(self, names: tuple[str, ...] = LOOPBACK_NAMES) -> ssl.SSLContext:
        """A TLS server context with a new certificate for `names` (for an aiohttp site in a test)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.issue(names).configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """What our federation client uses to trust this CA (as `federation.ca_files` would)."""
        return ssl_context([str(self.ca_path)])


def write_synapse_signing_key(path: Path) -> tuple[str, nacl.signing.SigningKey]:
    """A new ed25519 key in Synapse's signing-key file format (`ed25519 <version> <seed>`); the version
    is made of `[a-zA-Z0-9_]` as the spec asks."""
    key_id, key = generate_signing_key("a_" + secrets.token_hex(3))
    path.write_text(f"ed25519 {key_id.split(':', 1)[1]} {encode_seed(key)}\n", encoding="ascii")
    path.chmod(0o600)
    return key_id, key


def write_synapse_config(
    data_dir: Path,
    ca: LoopbackCA,
    *,
    tls_port: int,
    http_port: int,
    host: str = "127.0.0.1",
    log_level: str = "INFO",
    room_version: str | None = None,
    presence: bool = True,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Write `homeserver.yaml` (JSON is YAML), its log config, a signing key and a TLS certificate
    into `data_dir`; return the config's path. `overrides` replace top-level keys."""
    data_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = ca.issue_files("synapse-tls", LOOPBACK_NAMES)
    log_config = data_dir / "log.yaml"
    log_config.write_text(
        json.dumps(
            {
                "version": 1,
                "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
                # stdout goes to synapse.log (the process's output, tracebacks at start-up included)
                "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
                "root": {"level": log_level, "handlers": ["console"]},
                "loggers": {"synapse.storage.SQL": {"level": "WARNING"}, "twisted": {"level": "WARNING"}},
                "disable_existing_loggers": False,
            }
        ),
        encoding="utf-8",
    )
    config: dict[str, Any] = {
        "server_name": f"{host}:{tls_port}",
        "pid_file": str(data_dir / "homeserver.pid"),
        "listeners": [
            {
                "port": tls_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": True,
                "x_forwarded": False,
                "resources": [{"names": ["federation", "client"], "compress": False}],
            },
            {
                "port": http_port,
                "bind_addresses": ["127.0.0.1"],
                "type": "http",
                "tls": False,
                "x_forwarded": False,
                "resources": [{"names": ["client"], "compress": False}],
            },
        ],
        "tls_certificate_path": str(cert_path),
        "tls_private_key_path": str(key_path),
        "federation_custom_ca_list": [str(ca.ca_path)],
        "federation_verify_certificates": True,
        "ip_range_blacklist": LOOPBACK_ALLOWED_BLACKLIST,
        "federation_ip_range_blacklist": LOOPBACK_ALLOWED_BLACKLIST,
        "trusted_key_servers": [],
        "suppress_key_server_warning": True,
        "federation": FAST_RETRIES,
        "allow_public_rooms_over_federation": True,
        "database": {"name": "sqlite3", "args": {"database": str(data_dir / "homeserver.db")}},
        "log_config": str(log_config),
        "media_store_path": str(data_dir / "media_store"),
        "signing_key_path": str(data_dir / "signing.key"),
        "report_stats": False,
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "registration_shared_secret": SHARED_SECRET,
        "macaroon_secret_key": secrets.token_hex(16),
        "form_secret": secrets.token_hex(16),
        "presence": {"enabled": presence},
        "bcrypt_rounds": 4,
        "url_preview_enabled": False,
        "enable_metrics": False,
        "room_list_publication_rules": [{"action": "allow"}],
        "alias_creation_rules": [{"action": "allow"}],
        "user_directory": {"enabled": True, "search_all_users": True},
        **SYNAPSE_RATE_LIMITS,
    }
    if room_version is not None:
        config["default_room_version"] = room_version
    config.update(overrides or {})
    path = data_dir / "homeserver.yaml"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def start_synapse_peer(
    data_dir: Path,
    ca: LoopbackCA,
    *,
    host: str = "127.0.0.1",
    python: Path = SYNAPSE_PYTHON,
    log_level: str = "INFO",
    room_version: str | None = None,
    presence: bool = True,
    overrides: dict[str, Any] | None = None,
    deadline_s: float = SYNAPSE_START_DEADLINE_S,
) -> RunningServer:
    """Start Synapse as a federation peer named `<host>:<TLS port>` (`host` is `127.0.0.1` or
    `localhost`) and wait until its client and federation listeners answer. Stop it with `.stop()`,
    start it again on the same data with `.restart()` (which waits for both listeners again)."""
    for attempt in range(3):  # a free port can be taken between probing and binding
        tls_port, http_port = free_port(), free_port()
        if tls_port == http_port:
            continue
        for stale in ("homeserver.db", "homeserver.db-wal", "homeserver.db-shm"):
            (data_dir / stale).unlink(missing_ok=True)
        config = write_synapse_config(
            data_dir,
            ca,
            tls_port=tls_port,
            http_port=http_port,
            host=host,
            log_level=log_level,
            room_version=room_version,
            presence=presence,
            overrides=overrides,
        )
        signing_key = write_synapse_signing_key(data_dir / "signing.key")
        log_path = data_dir / "synapse.log"
        command = [str(python), "-m", "synapse.app.homeserver", "--config-path", str(config)]
        with log_path.open("wb") as log:
            spawned_at = time.monotonic()
            proc = subprocess.Popen(command, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT)
        server = RunningServer(
            "synapse",
            f"http://127.0.0.1:{http_port}",
            f"{host}:{tls_port}",
            SHARED_SECRET,
            proc,
            log_path,
            data_dir,
            extra={"signing_key": signing_key, "config_path": config},
            command=command,
            cwd=data_dir,
            federation_url=f"https://127.0.0.1:{tls_port}",
            ca_path=ca.ca_path,
        )
        try:
            server.start_seconds = wait_for_versions(server, spawned_at, deadline_s)
            wait_for_federation(server, spawned_at + deadline_s)
            return server
        except ServerStartError:
            server.stop()
            if attempt == 2 or "address already in use" not in server.log_tail().lower():
                raise
    raise ServerStartError("no free pair of ports for synapse")


def start_homeserver_peer(data_dir: Path, ca: LoopbackCA, *, host: str = "127.0.0.1", **settings: Any) -> RunningServer:
    """Start our server as a federation peer named `<host>:<TLS port>`: its federation (and client)
    API on a TLS listener with a certificate from `ca`, the plain client listener as usual, trusting
    `ca` for outbound requests, and allowed to reach loopback (`federation.ip_range_allow`)."""
    for attempt in range(3):  # a free port can be taken between probing and binding
        tls_port = free_port()
        cert, key = ca.issue_files(f"homeserver-{tls_port}")
        try:
            server = start_homeserver(
                data_dir,
                server_name=f"{host}:{tls_port}",
                federation__listen=f"127.0.0.1:{tls_port}",
                federation__tls_certificate=str(cert),
                federation__tls_private_key=str(key),
                federation__ca_files=[str(ca.ca_path)],
                federation__ip_range_allow=["127.0.0.0/8", "::1/128"],
                **settings,
            )
        except ServerStartError as e:
            if attempt == 2 or "already in use" not in str(e).lower():
                raise
            continue
        server.federation_url = f"https://127.0.0.1:{tls_port}"
        server.ca_path = ca.ca_path
        wait_for_federation(server, time.monotonic() + START_DEADLINE_S)
        return server
    raise ServerStartError("no free port for the homeserver's federation listener")
