"""X-Matrix request authentication: signing, the header grammar, and verification.

spec: server-server-api "Request Authentication" (RFC 9110 section 11.4 for the header). The
signatures are checked against signedjson, what Synapse signs with.
"""

from __future__ import annotations

import nacl.signing
import pytest
import signedjson.key
import signedjson.sign

from federation.request_auth import (
    AuthHeaderError,
    XMatrix,
    authorization_header,
    parse_authorization,
    signed_request,
    verify_request,
)
from homeserver.protocol.errors import SignatureError
from homeserver.protocol.signing import generate_signing_key

ORIGIN = "origin.example:8448"
DEST = "dest.example"
URI = "/_matrix/federation/v1/send/txn1?x=1"
BODY = {"pdus": [], "edus": [{"edu_type": "m.typing", "content": {"typing": True}}], "origin": ORIGIN}


@pytest.fixture
def key() -> tuple[str, nacl.signing.SigningKey]:
    return generate_signing_key("k1")


def test_round_trip(key: tuple[str, nacl.signing.SigningKey]) -> None:
    key_id, sk = key
    header = authorization_header(ORIGIN, DEST, key_id, sk, "PUT", URI, BODY)
    assert header.startswith('X-Matrix origin="origin.example:8448",destination="dest.example",key="ed25519:k1",sig="')
    auth = parse_authorization(header)
    assert (auth.origin, auth.destination, auth.key) == (ORIGIN, DEST, key_id)
    verify_request(auth, "PUT", URI, DEST, BODY, sk.verify_key)


@pytest.mark.parametrize(
    ("method", "uri", "dest", "body"),
    [
        ("POST", URI, DEST, BODY),  # another method
        ("PUT", URI + "&y=2", DEST, BODY),  # another target
        ("PUT", URI, DEST, {**BODY, "pdus": [{}]}),  # another body
        ("PUT", URI, DEST, None),  # the body left out
        ("PUT", URI, "other.example", BODY),  # sent to another server
    ],
)
def test_any_change_breaks_the_signature(
    key: tuple[str, nacl.signing.SigningKey], method: str, uri: str, dest: str, body: object
) -> None:
    key_id, sk = key
    auth = parse_authorization(authorization_header(ORIGIN, DEST, key_id, sk, "PUT", URI, BODY))
    with pytest.raises(SignatureError):
        verify_request(auth, method, uri, dest, body, sk.verify_key)


def test_a_signature_made_by_signedjson_verifies() -> None:
    sk = signedjson.key.generate_signing_key("a1")
    version = "/_matrix/federation/v1/version"
    signed = signedjson.sign.sign_json(signed_request("GET", version, ORIGIN, DEST), ORIGIN, sk)
    sig = signed["signatures"][ORIGIN]["ed25519:a1"]
    header = f'X-Matrix origin={ORIGIN},destination="{DEST}",key="ed25519:a1",sig="{sig}"'
    auth = parse_authorization(header)
    verify_request(auth, "GET", version, DEST, None, sk.verify_key)
    # and ours verifies with signedjson
    key_id, ours = generate_signing_key("b2")
    ours_auth = parse_authorization(authorization_header(ORIGIN, DEST, key_id, ours, "PUT", URI, BODY))
    obj = signed_request("PUT", URI, ORIGIN, DEST, BODY)
    obj["signatures"] = {ORIGIN: {key_id: ours_auth.sig}}
    vk = signedjson.key.decode_verify_key_bytes(key_id, bytes(ours.verify_key))
    signedjson.sign.verify_signed_json(obj, ORIGIN, vk)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('X-Matrix origin="a.example",destination="b.example",key="ed25519:1",sig="c2ln"', ("a.example", "b.example")),
        ("X-Matrix   origin=a.example:8448 , \tkey=ed25519:1,sig=c2ln", ("a.example:8448", None)),  # old senders
        ('x-matrix ORIGIN="a.example",Key="ed25519:1",SIG="c2ln",Destination=b.example', ("a.example", "b.example")),
        ('X-Matrix origin="a\\.example",key="ed25519:1",sig="c2ln",extra="ignored, \\"really\\""', ("a.example", None)),
    ],
)
def test_header_grammar(header: str, expected: tuple[str, str | None]) -> None:
    auth = parse_authorization(header)
    assert (auth.origin, auth.destination) == expected
    assert auth == XMatrix(expected[0], expected[1], "ed25519:1", "c2ln")


@pytest.mark.parametrize(
    "header",
    [
        "",
        "Bearer abc",
        'X-Matrixorigin="a"',
        'X-Matrix origin="a.example",key="ed25519:1"',  # no sig
        'X-Matrix origin="a.example" key="ed25519:1",sig="x"',  # no comma
        'X-Matrix origin="a.example,key="ed25519:1",sig="x"',  # unterminated quote
        'X-Matrix origin=,key="ed25519:1",sig="x"',
    ],
)
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(AuthHeaderError):
        parse_authorization(header)
