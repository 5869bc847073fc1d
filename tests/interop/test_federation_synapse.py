"""Our outbound federation code against a real Synapse (PyPI `matrix-synapse`) over TLS on loopback.

One Synapse per module (`tests/interop/federation.py`), named `127.0.0.1:<TLS port>`, trusting only
the test CA. Our side is the client of `federation/client.py` (discovery of an IP literal with an
explicit port, the address policy with loopback allowed, TLS with the test CA, X-Matrix signing) and,
for requests Synapse authenticates, a small aiohttp TLS server publishing our key from
`federation.keys.OurKeys`: Synapse fetches it from our origin name to check the X-Matrix signature.

spec: server-server-api "Request Authentication", "Retrieving server keys", "Resolving server
names", "TLS".
"""

from __future__ import annotations

import re
import ssl
import time
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from aiohttp import web

from federation.addresses import AddressPolicy
from federation.client import FederationClient, FederationError, Unreachable, path_of, ssl_context
from federation.dns import DnsPython
from federation.keys import MAX_VALIDITY_MS, OurKeys, parse_key_response
from homeserver.protocol.errors import SignatureError
from homeserver.protocol.signing import encode_verify_key, generate_signing_key
from storage.cache import LruCache

from .federation import LoopbackCA
from .server import RunningServer, http_json, register

SYNAPSE_VERSION = "1.163.2"  # what scripts/setup-synapse pins
LOOPBACK_ALLOW = ["127.0.0.0/8", "::1/128"]


class Origin:
    """Our side as Synapse sees it: a server name `<host>:<port>` whose TLS listener publishes our key
    at `/_matrix/key/v2/server` (the only thing Synapse asks of a server that sends it requests)."""

    def __init__(self, ca: LoopbackCA, host: str) -> None:
        self.ca = ca
        self.host = host
        self.key_id, self.signing_key = generate_signing_key("t_1")
        self.keys: OurKeys | None = None
        self.key_requests: list[dict[str, Any]] = []
        self.sni: list[str | None] = []
        self.runner: web.AppRunner | None = None
        self.server_name = ""

    async def serve_keys(self, request: web.Request) -> web.Response:
        assert self.keys is not None
        self.key_requests.append({"path": request.path_qs, "host": request.headers.get("Host")})
        return web.json_response(self.keys.response())

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/_matrix/key/v2/server", self.serve_keys)
        ctx = self.ca.server_context()

        def remember_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            self.sni.append(name)

        ctx.sni_callback = remember_sni
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.server_name = f"{self.host}:{port}"
        self.keys = OurKeys(self.server_name, self.key_id, self.signing_key)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def client(
        self, signing_key: nacl.signing.SigningKey | None = None, tls: ssl.SSLContext | None = None
    ) -> FederationClient:
        """Our federation client with this origin's name, its key (unless another is given), trusting
        the test CA (unless another TLS context is given)."""
        return FederationClient(
            self.server_name,
            self.key_id,
            signing_key or self.signing_key,
            DnsPython(),
            LruCache("well-known", 64),
            AddressPolicy(LOOPBACK_ALLOW),
            tls or self.ca.client_context(),
        )


@pytest.fixture(params=["127.0.0.1", "localhost"])
async def origin(request: pytest.FixtureRequest, ca: LoopbackCA) -> AsyncIterator[Origin]:
    """Our origin, named by an IP literal (no SNI) or by `localhost` (SNI), with an explicit port."""
    o = Origin(ca, request.param)
    await o.start()
    try:
        yield o
    finally:
        await o.stop()


@pytest.fixture
async def ip_origin(ca: LoopbackCA) -> AsyncIterator[Origin]:
    o = Origin(ca, "127.0.0.1")
    await o.start()
    try:
        yield o
    finally:
        await o.stop()


@pytest.fixture
async def client(ip_origin: Origin) -> AsyncIterator[FederationClient]:
    """Our client, its origin publishing its key: Synapse checks an X-Matrix header wherever one is
    sent, even on endpoints that need none (`/version`)."""
    c = ip_origin.client()
    try:
        yield c
    finally:
        await c.close()


def set_displayname(server: RunningServer, user_id: str, token: str, name: str) -> None:
    path = "/_matrix/client/v3/profile/" + urllib.parse.quote(user_id, safe="") + "/displayname"
    http_json("PUT", server.base_url + path, {"displayname": name}, token=token)


def profile_path(user_id: str) -> str:
    """The profile query as `path_of` writes it (ids percent-encoded), sent exactly as signed."""
    return path_of(
        "_matrix", "federation", "v1", "query", "profile", query={"user_id": user_id, "field": "displayname"}
    )


async def test_version_over_tls(synapse: RunningServer, client: FederationClient) -> None:
    answer = await client.request(synapse.server_name, "GET", "/_matrix/federation/v1/version")
    assert answer["server"]["name"] == "Synapse"
    # Synapse appends git details when its package sits inside a git checkout (.venv-synapse does)
    assert answer["server"]["version"].split()[0] == SYNAPSE_VERSION


async def test_synapse_cannot_be_reached_without_the_test_ca(synapse: RunningServer, ip_origin: Origin) -> None:
    """The certificate check is real: a client that trusts only the system's CAs cannot connect."""
    c = ip_origin.client(tls=ssl_context())
    try:
        with pytest.raises(Unreachable):
            await c.request(synapse.server_name, "GET", "/_matrix/federation/v1/version")
    finally:
        await c.close()


async def test_synapse_key_answer_verifies_with_our_code(synapse: RunningServer, client: FederationClient) -> None:
    answer = await client.request(synapse.server_name, "GET", "/_matrix/key/v2/server")
    now = int(time.time() * 1000)
    keys = parse_key_response(answer, synapse.server_name, now)
    key_id, signing_key = synapse.extra["signing_key"]
    assert keys[key_id].key == encode_verify_key(signing_key)  # the key its config holds
    assert now < keys[key_id].valid_until_ts <= now + MAX_VALIDITY_MS
    # The check is not vacuous: the same answer altered after signing is refused.
    forged = {**answer, "valid_until_ts": answer["valid_until_ts"] + 1}
    with pytest.raises(SignatureError):
        parse_key_response(forged, synapse.server_name, now)


async def test_synapse_checks_our_x_matrix_signature(synapse: RunningServer, origin: Origin) -> None:
    """Synapse fetches our key from our origin name over TLS (SNI for `localhost`, none for an IP)
    and accepts the request signed with it, but not one signed with another key under the same id."""
    localpart = "fed_" + re.sub(r"\W", "_", origin.server_name)
    user_id, token = register(synapse, localpart)
    set_displayname(synapse, user_id, token, "Alice over federation")
    forger = origin.client(nacl.signing.SigningKey.generate())
    ours = origin.client()
    try:
        with pytest.raises(FederationError) as refused:
            await forger.request(synapse.server_name, "GET", profile_path(user_id))
        assert (refused.value.status, refused.value.errcode) == (401, "M_UNAUTHORIZED")
        assert origin.key_requests, "synapse did not fetch our key"

        answer = await ours.request(synapse.server_name, "GET", profile_path(user_id))
        assert answer == {"displayname": "Alice over federation"}
    finally:
        await forger.close()
        await ours.close()
    assert origin.sni[0] == (None if origin.host == "127.0.0.1" else "localhost")
    assert origin.key_requests[0]["host"] == origin.server_name


async def test_restart_keeps_the_data(synapse: RunningServer, ip_origin: Origin) -> None:
    """The split and restart scenarios stop Synapse and start it again on the same data: same name,
    same key, same accounts; unreachable while it is down."""
    user_id, token = register(synapse, "restarted")
    set_displayname(synapse, user_id, token, "Still here")
    ours = ip_origin.client()
    try:
        synapse.stop()
        with pytest.raises(Unreachable):
            await ours.request(synapse.server_name, "GET", "/_matrix/federation/v1/version")
        synapse.restart(deadline_s=120)
        answer = await ours.request(synapse.server_name, "GET", "/_matrix/key/v2/server")
        key_id, signing_key = synapse.extra["signing_key"]
        assert parse_key_response(answer, synapse.server_name, int(time.time() * 1000))[key_id].key == (
            encode_verify_key(signing_key)
        )
        assert await ours.request(synapse.server_name, "GET", profile_path(user_id)) == {"displayname": "Still here"}
    finally:
        await ours.close()


async def test_a_path_of_request_with_escaped_ids_passes_synapse_signature_check(
    synapse: RunningServer, ip_origin: Origin
) -> None:
    user_id, token = register(synapse, "escaped")
    set_displayname(synapse, user_id, token, "Escaped")
    path = path_of(
        "_matrix", "federation", "v1", "query", "profile", query={"user_id": user_id, "field": "displayname"}
    )
    assert "%40" in path and "%3A" in path
    ours = ip_origin.client()
    try:
        assert await ours.request(synapse.server_name, "GET", path) == {"displayname": "Escaped"}
    finally:
        await ours.close()


KEY_VERSION = re.compile(r"[a-zA-Z0-9_]+")


def test_generated_key_versions_use_only_the_characters_the_spec_allows() -> None:
    versions = [generate_signing_key()[0].split(":", 1)[1] for _ in range(400)]  # 1,600 random characters
    assert [v for v in versions if not KEY_VERSION.fullmatch(v)] == []


def test_setup_script_pins_the_version_these_tests_expect() -> None:
    script = (Path(__file__).resolve().parents[2] / "scripts" / "setup-synapse").read_text(encoding="utf-8")
    assert f"SYNAPSE_VERSION={SYNAPSE_VERSION}\n" in script
