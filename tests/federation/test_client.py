"""The outbound client against a real TLS server on loopback (a throw-away CA from trustme).

spec: server-server-api "TLS" (certificate for the IP or the hostname, SNI) and "Request
Authentication" (the receiving side checks the X-Matrix header with its own code here).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import nacl.signing
import orjson
import pytest
import trustme
from aiohttp import web

from federation.addresses import AddressPolicy
from federation.client import FederationClient, FederationError, Unreachable, path_of, ssl_context
from federation.discovery import SrvRecord
from federation.dns import DnsPython
from federation.request_auth import parse_authorization, verify_request
from homeserver.protocol.signing import generate_signing_key
from storage.cache import LruCache

ORIGIN = "origin.test"


class LoopbackDns(DnsPython):
    """No SRV records; host addresses from the system (localhost is in /etc/hosts)."""

    async def srv(self, name: str) -> list[SrvRecord]:
        return []


class Peer:
    def __init__(self, ca: trustme.CA, names: list[str], key: nacl.signing.VerifyKey) -> None:
        self.cert = ca.issue_cert(*names)
        self.key = key
        self.seen: list[dict[str, Any]] = []
        self.port = 0
        self.sni: str | None = None  # the server name the last TLS handshake asked for
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        auth = parse_authorization(request.headers["Authorization"])
        raw = await request.read()
        content = orjson.loads(raw) if raw else None
        destination = request.headers["Host"]
        verify_request(auth, request.method, request.path_qs, destination, content, self.key)
        self.seen.append({"host": destination, "sni": self.sni, "path": request.path_qs, "content": content})
        if request.path.endswith("/missing"):
            return web.json_response({"errcode": "M_NOT_FOUND", "error": "no such thing"}, status=404)
        return web.json_response({"ok": True, "origin": auth.origin})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)

        def remember_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            self.sni = name

        ctx.sni_callback = remember_sni
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def signing() -> tuple[str, nacl.signing.SigningKey]:
    return generate_signing_key("c1")


@pytest.fixture
async def peer(ca: trustme.CA, signing: tuple[str, nacl.signing.SigningKey]) -> AsyncIterator[Peer]:
    p = Peer(ca, ["127.0.0.1", "localhost"], signing[1].verify_key)
    await p.start()
    yield p
    await p.stop()


def client(signing: tuple[str, nacl.signing.SigningKey], ca: trustme.CA | None, allow: list[str]) -> FederationClient:
    tls = ssl_context()
    if ca is not None:
        ca.configure_trust(tls)
    return FederationClient(
        ORIGIN, signing[0], signing[1], LoopbackDns(), LruCache("wk", 10), AddressPolicy(allow), tls
    )


async def test_signed_request_to_an_ip_literal(peer: Peer, ca: trustme.CA, signing: Any) -> None:
    c = client(signing, ca, ["127.0.0.0/8"])
    try:
        dest = f"127.0.0.1:{peer.port}"
        path = path_of("_matrix", "federation", "v1", "send", "t/1", query={"a": ["1", "2"]})
        assert path == "/_matrix/federation/v1/send/t%2F1?a=1&a=2"
        answer = await c.request(dest, "PUT", path, content={"pdus": []})
        assert answer == {"ok": True, "origin": ORIGIN}
        assert peer.seen[-1]["host"] == dest and peer.seen[-1]["sni"] is None  # no SNI for an IP
        with pytest.raises(FederationError) as err:
            await c.request(dest, "GET", "/_matrix/federation/v1/missing")
        assert (err.value.status, err.value.errcode) == (404, "M_NOT_FOUND")
    finally:
        await c.close()


async def test_hostname_with_port_sends_sni_and_host(peer: Peer, ca: trustme.CA, signing: Any) -> None:
    c = client(signing, ca, ["127.0.0.0/8", "::1/128"])
    try:
        dest = f"localhost:{peer.port}"
        assert await c.request(dest, "GET", "/_matrix/federation/v1/version") == {"ok": True, "origin": ORIGIN}
        assert peer.seen[-1]["host"] == dest and peer.seen[-1]["sni"] == "localhost"
    finally:
        await c.close()


async def test_private_addresses_are_refused_without_an_allow_list(peer: Peer, ca: trustme.CA, signing: Any) -> None:
    c = client(signing, ca, [])
    try:
        with pytest.raises(Unreachable):
            await c.request(f"127.0.0.1:{peer.port}", "GET", "/_matrix/federation/v1/version")
        assert peer.seen == []
    finally:
        await c.close()


async def test_an_untrusted_certificate_is_refused(peer: Peer, signing: Any) -> None:
    c = client(signing, trustme.CA(), ["127.0.0.0/8"])  # trusts another CA
    try:
        with pytest.raises(Unreachable):
            await c.request(f"127.0.0.1:{peer.port}", "GET", "/_matrix/federation/v1/version")
        assert peer.seen == []
    finally:
        await c.close()


async def test_a_certificate_for_another_name_is_refused(ca: trustme.CA, signing: Any) -> None:
    p = Peer(ca, ["other.example"], signing[1].verify_key)
    await p.start()
    c = client(signing, ca, ["127.0.0.0/8", "::1/128"])
    try:
        with pytest.raises(Unreachable):
            await c.request(f"localhost:{p.port}", "GET", "/_matrix/federation/v1/version")
        assert p.seen == []
    finally:
        await c.close()
        await p.stop()
