"""The Complement image's entrypoint, run outside a container the way the image runs it: a
certificate for SERVER_NAME signed by Complement's CA, the client API on one port, federation over
TLS on another, open registration, shared-secret registration with the secret `complement`.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests.api.auth_helpers import shared_secret_mac
from tests.interop.server import REPO_ROOT, free_port


@pytest.fixture
def complement_server(tmp_path: Path) -> Iterator[tuple[int, int, Path]]:
    ca = trustme.CA()
    ca_dir = tmp_path / "ca"
    ca_dir.mkdir()
    ca.cert_pem.write_to_path(str(ca_dir / "ca.crt"))
    ca.private_key_pem.write_to_path(str(ca_dir / "ca.key"))
    client_port, federation_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOMESERVER_", "COMPLEMENT_"))}
    env.update(
        {
            "SERVER_NAME": f"localhost:{federation_port}",
            "COMPLEMENT_CA_DIR": str(ca_dir),
            "COMPLEMENT_CLIENT_PORT": str(client_port),
            "COMPLEMENT_FEDERATION_PORT": str(federation_port),
            "HOMESERVER_DATA_DIR": str(tmp_path / "data"),
            "HOMESERVER_LOG_LEVEL": "WARNING",
        }
    )
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "complement" / "entrypoint.py")], env=env, stdout=log, stderr=log
    )
    try:
        yield client_port, federation_port, ca_dir / "ca.crt"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def get_json(url: str, context: ssl.SSLContext | None = None, body: object = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if data:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=5, context=context) as resp:
        return json.loads(resp.read())


def wait_for(url: str, context: ssl.SSLContext | None = None, deadline_s: float = 60.0) -> object:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return get_json(url, context)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_the_entrypoint_serves_what_complement_expects(complement_server: tuple[int, int, Path]) -> None:
    client_port, federation_port, ca_path = complement_server
    versions = wait_for(f"http://127.0.0.1:{client_port}/_matrix/client/versions")
    assert "v1.11" in versions["versions"]  # type: ignore[index]
    # federation over TLS with a certificate for the server name, signed by Complement's CA
    tls = ssl.create_default_context(cafile=str(ca_path))
    fed = wait_for(f"https://localhost:{federation_port}/_matrix/federation/v1/version", tls)
    assert fed["server"]["name"]  # type: ignore[index]
    keys = get_json(f"https://localhost:{federation_port}/_matrix/key/v2/server", tls)
    assert keys["server_name"] == f"localhost:{federation_port}"  # type: ignore[index]
    # shared-secret registration with Complement's secret
    base = f"http://127.0.0.1:{client_port}/_synapse/admin/v1/register"
    nonce = get_json(base)["nonce"]  # type: ignore[index]
    mac = shared_secret_mac("complement", nonce, "alice", "password", admin=False)
    user = get_json(base, body={"nonce": nonce, "username": "alice", "password": "password", "mac": mac})
    assert user["user_id"] == f"@alice:localhost:{federation_port}"  # type: ignore[index]
