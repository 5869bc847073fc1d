"""tls-alpn-01 on the live TLS listener (homeserver/certificates/tls_alpn.py): while a challenge is
pending, only a ClientHello naming the domain and offering `acme-tls/1` gets the challenge
certificate; every other client keeps the normal one. Real handshakes on loopback (no CA needed:
the whole order against pebble is in test_pebble.py)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509

from homeserver.certificates.tls_alpn import (
    ACME_IDENTIFIER_OID,
    TlsAlpnResponder,
    challenge_certificate,
    challenge_context,
)


async def _close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[tuple[ssl.SSLContext, int]]:
    """A TLS server on loopback and its context (no certificate yet, like before the first order)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server = await asyncio.start_server(_close, "127.0.0.1", 0, ssl=context)
    yield context, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


def handshake(port: int, server_name: str, alpn: list[str]) -> tuple[x509.Certificate, str | None]:
    client = ssl.create_default_context()
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE  # we look at what is served
    if alpn:
        client.set_alpn_protocols(alpn)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client.wrap_socket(raw, server_hostname=server_name) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der), tls.selected_alpn_protocol()


def is_challenge(cert: x509.Certificate) -> bool:
    oids = [e.oid.dotted_string for e in cert.extensions]
    return ACME_IDENTIFIER_OID in oids


async def test_only_the_acme_client_gets_the_challenge_certificate(
    listener: tuple[ssl.SSLContext, int], tmp_path: Path
) -> None:
    context, port = listener
    responder = TlsAlpnResponder(context)
    loop = asyncio.get_running_loop()

    async def served(name: str, alpn: list[str]) -> tuple[x509.Certificate, str | None]:
        return await loop.run_in_executor(None, handshake, port, name, alpn)

    # before the first certificate: the listener has none, yet the CA's check is answered
    responder.publish("hs.test", challenge_context(*challenge_certificate("hs.test", "t.k"), tmp_path))
    cert, protocol = await served("HS.test", ["acme-tls/1"])
    assert is_challenge(cert) and protocol == "acme-tls/1"
    assert list(tmp_path.iterdir()) == []  # the challenge key did not stay on disk

    # the normal certificate arrives while the challenge is still pending
    trustme.CA().issue_cert("hs.test").configure_cert(context)
    for name, alpn in [("hs.test", ["h2", "http/1.1"]), ("hs.test", []), ("other.test", ["acme-tls/1"])]:
        cert, protocol = await served(name, alpn)
        assert not is_challenge(cert), (name, alpn)
        assert protocol is None
        assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        ) == ["hs.test"]
    cert, protocol = await served("hs.test", ["h2", "acme-tls/1"])  # the CA, again
    assert is_challenge(cert) and protocol == "acme-tls/1"

    # withdrawn: the CA's client gets the normal certificate, and the hooks are gone
    responder.withdraw("hs.test")
    cert, _ = await served("hs.test", ["acme-tls/1"])
    assert not is_challenge(cert)
    assert context.sni_callback is None
