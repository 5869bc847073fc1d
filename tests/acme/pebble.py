"""Let's Encrypt's test CA, pebble (Debian package `pebble`), on loopback for the ACME tests.

Its own ACME endpoint is served with a certificate from a throw-away CA (trustme), which the server
trusts through `public.acme_ca_files`; its challenge ports point at the server's `public.http_port`
and `public.https_port`. Names resolve through the system resolver (`localhost` is 127.0.0.1).
`root_pem()` is the root pebble signs certificates with (new at each start), from its management port.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.interop.server import free_port

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
START_DEADLINE_S = 20.0


@dataclass
class Pebble:
    process: subprocess.Popen[bytes]
    directory: str
    management: str
    ca_file: Path  # the CA of pebble's own HTTPS endpoints
    log: Path

    def _context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def root_pem(self) -> str:
        with urllib.request.urlopen(self.management + "/roots/0", context=self._context(), timeout=10) as r:
            text: str = r.read().decode()
        return text

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_pebble(workdir: Path, *, http_port: int, https_port: int) -> Pebble:
    workdir.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    cert.private_key_pem.write_to_path(str(workdir / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(workdir / "cert.pem"))
    acme_port, management_port = free_port(), free_port()
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{acme_port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(workdir / "cert.pem"),
            "privateKey": str(workdir / "key.pem"),
            "httpPort": http_port,
            "tlsPort": https_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (workdir / "pebble.json").write_text(json.dumps(config))
    log = workdir / "pebble.log"
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0", "PEBBLE_AUTHZREUSE": "0"}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [PEBBLE, "-config", str(workdir / "pebble.json")], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    pebble = Pebble(
        process,
        f"https://localhost:{acme_port}/dir",
        f"https://localhost:{management_port}",
        workdir / "ca.pem",
        log,
    )
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pebble exited: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", acme_port), timeout=1).close()
            socket.create_connection(("127.0.0.1", management_port), timeout=1).close()
            return pebble
        except OSError:
            time.sleep(0.05)
    pebble.stop()
    raise RuntimeError("pebble did not start listening")
