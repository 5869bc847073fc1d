"""What a server that has started and answered requests but served no page, QR code or OpenID
Connect sign-in has loaded: none of the libraries only those need. Jinja2, segno and joserfc (with
cryptography) cost some 12 MiB of idle RSS together (bench/client_api.py), so they load on first use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ON_FIRST_USE = ("jinja2", "segno", "joserfc", "cryptography", "acme")

SCRIPT = """
import asyncio, sys, tempfile
from pathlib import Path
from aiohttp.test_utils import TestClient, TestServer
from homeserver.config import Config
from homeserver.server import HomeServer

async def main():
    data = Path(tempfile.mkdtemp()) / "data"
    config = Config.model_validate({"server_name": "hs.test", "data_dir": data, "password_hash_cost": "low"})
    hs = HomeServer(config)
    client = TestClient(TestServer(hs.build_app()))
    await client.start_server()
    try:
        for path in ("/_matrix/client/versions", "/_matrix/client/v3/login", "/.well-known/matrix/client"):
            resp = await client.get(path)
            await resp.read()
    finally:
        await client.close()

asyncio.run(main())
print(" ".join(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_libraries_of_pages_qr_codes_and_oidc_load_on_first_use() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    assert "homeserver" in loaded and "aiohttp" in loaded  # the script did run the server
    assert loaded.isdisjoint(ON_FIRST_USE), sorted(loaded & set(ON_FIRST_USE))
