"""Federation over the ACME certificate: our server (`python -m homeserver`, named `localhost:<https
port>`) gets its certificate from pebble, and a real Synapse that trusts pebble's root (and nothing
made for the test besides its own loopback CA) joins a room on it over TLS.

spec: server-server-api "TLS" (a certificate valid for the server name), "Joining rooms".
"""

from __future__ import annotations

import shutil
import socket
import ssl
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.acme.pebble import start_pebble
from tests.interop.federation import LoopbackCA, start_synapse_peer, synapse_installed
from tests.interop.server import free_port, http_json, register, start_homeserver

pytestmark = [
    pytest.mark.skipif(shutil.which("pebble") is None, reason="no pebble (scripts/setup-system installs it)"),
    pytest.mark.skipif(not synapse_installed(), reason="no Synapse (scripts/setup-synapse installs it)"),
]

DEADLINE_S = 60.0


def _wait_for_tls(port: int, context: ssl.SSLContext) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                context.wrap_socket(raw, server_hostname="localhost"),
            ):
                return
        except (OSError, ssl.SSLError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_synapse_joins_a_room_over_the_acme_certificate(tmp_path: Path) -> None:
    http_port, https_port = free_port(), free_port()
    pebble = start_pebble(tmp_path / "pebble", http_port=http_port, https_port=https_port)
    ours = synapse = None
    try:
        root = tmp_path / "pebble-root.pem"
        root.write_text(pebble.root_pem())
        ca = LoopbackCA(tmp_path / "ca")  # Synapse's own certificate
        ours = start_homeserver(
            tmp_path / "ours",
            server_name=f"localhost:{https_port}",
            public__domain="localhost",
            public__email="admin@example.org",
            public__acme_directory=pebble.directory,
            public__acme_ca_files=[str(pebble.ca_file)],
            public__http_port=http_port,
            public__https_port=https_port,
            public__federation_port=0,
            public__bind="127.0.0.1",
            federation__ca_files=[str(ca.ca_path)],
            federation__ip_range_allow=["127.0.0.0/8", "::1/128"],
        )
        _wait_for_tls(https_port, ssl.create_default_context(cafile=str(root)))
        # Synapse trusts its own test CA and pebble's root: our certificate must chain to the latter
        synapse = start_synapse_peer(
            tmp_path / "synapse", ca, overrides={"federation_custom_ca_list": [str(ca.ca_path), str(root)]}
        )
        alice, alice_token = register(ours, "alice")
        bob, bob_token = register(synapse, "bob")
        room = http_json(
            "POST", ours.base_url + "/_matrix/client/v3/createRoom", {"preset": "public_chat"}, alice_token
        )["room_id"]
        quoted = urllib.parse.quote(room, safe="")
        server = urllib.parse.quote(f"localhost:{https_port}")
        http_json("POST", f"{synapse.base_url}/_matrix/client/v3/join/{quoted}?server_name={server}", {}, bob_token)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            url = f"{ours.base_url}/_matrix/client/v3/rooms/{quoted}/joined_members"
            members = http_json("GET", url, None, alice_token)["joined"]
            if bob in members:
                break
            assert time.monotonic() < deadline, f"bob never joined on our side: {members}"
            time.sleep(0.2)
        assert alice in members
    finally:
        for s in (synapse, ours):
            if s is not None:
                s.stop()
        pebble.stop()
