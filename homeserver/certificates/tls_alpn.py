"""The tls-alpn-01 challenge (RFC 8737), answered on the server's own TLS port.

The CA connects to `public.https_port` with SNI = the domain and ALPN offering only `acme-tls/1`,
and expects a self-signed certificate for the domain carrying the critical acmeIdentifier
extension: the SHA-256 of the key authorization (RFC 8737 §3).

How the live listener answers without a second socket: while a challenge is pending, the server
context's message callback reads each ClientHello's ALPN offer, and its SNI callback moves only a
connection that offers `acme-tls/1` for a pending domain onto a challenge context (the challenge
certificate, ALPN `["acme-tls/1"]`). OpenSSL selects the certificate and the ALPN protocol from the
swapped context. Every other client, a browser or a Matrix client offering h2/http/1.1 included,
keeps the normal certificate. Both callbacks are set only while a challenge is pending.

certbot's `acme` library dropped its TLSALPN01 types in 5.0 (certbot#10274): the challenge type is
declared in acme_order.py the way the library declares HTTP01, the certificate is built here with
`cryptography`. Nothing heavy is imported until a challenge is answered.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import ssl
import tempfile
import weakref
from pathlib import Path
from typing import Any

ACME_TLS_1 = b"acme-tls/1"
ACME_IDENTIFIER_OID = "1.3.6.1.5.5.7.1.31"  # spec: RFC 8737 §6.1, id-pe-acmeIdentifier

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_ALPN_EXTENSION = 16


def challenge_certificate(domain: str, key_authorization: str) -> tuple[bytes, bytes]:
    """The self-signed certificate (PEM) and key (PEM) that prove control of `domain` (RFC 8737 §3):
    one dNSName, the critical acmeIdentifier extension holding SHA-256(key authorization)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_authorization.encode("ascii")).digest()
    # the extension's value is the DER encoding of `Authorization ::= OCTET STRING (SIZE (32))`
    acme_identifier = x509.UnrecognizedExtension(x509.ObjectIdentifier(ACME_IDENTIFIER_OID), b"\x04\x20" + digest)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acme-tls-alpn-01 challenge")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
        .add_extension(acme_identifier, critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def challenge_context(cert_pem: bytes, key_pem: bytes, workdir: Path) -> ssl.SSLContext:
    """A server context that speaks only `acme-tls/1` with the challenge certificate. The PEMs pass
    through a private temporary file (OpenSSL loads certificates from files) that is removed at once."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # TLS 1.2 or newer (RFC 8737 §4)
    context.set_alpn_protocols([ACME_TLS_1.decode()])
    fd, name = tempfile.mkstemp(prefix="tls-alpn-01.", suffix=".pem", dir=workdir)  # 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem + cert_pem)
        context.load_cert_chain(name)
    finally:
        os.unlink(name)
    return context


def offered_alpn(client_hello: bytes) -> list[bytes]:
    """The protocols a ClientHello (handshake message, with its 4-byte header) offers in its ALPN
    extension (RFC 7301 §3.1); [] when there is none or the message is malformed."""
    try:
        view = memoryview(client_hello)
        at = 4 + 2 + 32  # header, legacy_version, random
        at += 1 + view[at]  # legacy_session_id
        at += 2 + int.from_bytes(view[at : at + 2], "big")  # cipher_suites
        at += 1 + view[at]  # legacy_compression_methods
        end = at + 2 + int.from_bytes(view[at : at + 2], "big")
        at += 2
        while at + 4 <= end:
            kind, length = int.from_bytes(view[at : at + 2], "big"), int.from_bytes(view[at + 2 : at + 4], "big")
            at += 4
            if kind == _ALPN_EXTENSION:
                names, stop = [], at + 2 + int.from_bytes(view[at : at + 2], "big")
                at += 2
                while at < stop:
                    size = view[at]
                    names.append(bytes(view[at + 1 : at + 1 + size]))
                    at += 1 + size
                return names
            at += length
    except IndexError:
        pass
    return []


class TlsAlpnResponder:
    """Pending tls-alpn-01 challenges, answered on `context` (the live TLS listeners' context).
    Used on the event loop only."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.pending: dict[str, ssl.SSLContext] = {}  # domain -> challenge context
        self._offers_acme: weakref.WeakSet[Any] = weakref.WeakSet()  # connections whose hello offered acme-tls/1

    def publish(self, domain: str, context: ssl.SSLContext) -> None:
        self.pending[domain.lower()] = context
        self.context.sni_callback = self._on_server_name
        self.context._msg_callback = self._on_message  # type: ignore[attr-defined]  # CPython's TLS message hook

    def withdraw(self, domain: str) -> None:
        self.pending.pop(domain.lower(), None)
        if not self.pending:
            self.context._msg_callback = None  # type: ignore[attr-defined]
            self.context.sni_callback = None
            self._offers_acme.clear()

    def _on_message(self, conn: Any, direction: str, version: Any, content_type: Any, msg_type: Any, data: Any) -> None:
        # runs before the SNI callback for the same ClientHello; must not raise (it would fail the handshake)
        hello = direction == "read" and content_type == _HANDSHAKE and msg_type == _CLIENT_HELLO
        if hello and ACME_TLS_1 in offered_alpn(bytes(data)):
            self._offers_acme.add(conn)

    def _on_server_name(self, conn: Any, server_name: str | None, context: ssl.SSLContext) -> None:
        challenge = self.pending.get((server_name or "").lower())
        if challenge is not None and conn in self._offers_acme:
            self._offers_acme.discard(conn)
            conn.context = challenge
