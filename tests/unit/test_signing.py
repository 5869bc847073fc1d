from __future__ import annotations

import copy
from typing import Any

import pytest

from homeserver.protocol import event_id, room_id_from_create_event, signing
from homeserver.protocol.errors import EventFormatError, HashMismatch, SignatureError
from homeserver.protocol.event_signing import (
    add_hashes_and_signatures,
    required_signers,
    verify_event_signature,
)
from homeserver.protocol.hashes import check_content_hash

from .vectors import load

V = load("signing.json")
KEY = signing.signing_key_from_seed(V["signing_key"]["seed_unpadded_base64"])
SERVER = V["signing_key"]["server_name"]
KEY_ID = V["signing_key"]["key_id"]
ALL_VERSIONS = [str(n) for n in range(1, 13)]


def test_public_key_derivation() -> None:
    assert signing.encode_verify_key(KEY) == V["signing_key"]["derived_public_key_unpadded_base64"]


@pytest.mark.parametrize("case", V["json_signing"]["cases"], ids=["empty", "one-two"])
def test_json_signing_vectors(case: dict[str, Any]) -> None:
    signed = signing.sign_json(copy.deepcopy(case["input"]), SERVER, KEY_ID, KEY)
    assert signed == case["expected_signed"]
    signing.verify_json(signed, SERVER, KEY_ID, KEY.verify_key)


def test_verify_rejects_tampering_and_missing_signatures() -> None:
    signed = signing.sign_json({"a": 1}, SERVER, KEY_ID, KEY)
    tampered = {**signed, "a": 2}
    with pytest.raises(SignatureError):
        signing.verify_json(tampered, SERVER, KEY_ID, KEY.verify_key)
    with pytest.raises(SignatureError):
        signing.verify_json(signed, "other", KEY_ID, KEY.verify_key)
    with pytest.raises(SignatureError):
        signing.verify_json(signed, SERVER, "ed25519:2", KEY.verify_key)
    with pytest.raises(SignatureError):
        signing.verify_json({"a": 1, "signatures": {SERVER: {KEY_ID: "!!"}}}, SERVER, KEY_ID, KEY.verify_key)
    # unsigned is not covered by the signature
    signing.verify_json({**signed, "unsigned": {"age": 5}}, SERVER, KEY_ID, KEY.verify_key)


def test_signing_keeps_other_signatures() -> None:
    _, other_key = signing.generate_signing_key("x")
    obj = signing.sign_json({"a": 1}, "other", "ed25519:x", other_key)
    signing.sign_json(obj, SERVER, KEY_ID, KEY)
    assert set(obj["signatures"]) == {"other", SERVER}
    signing.verify_json(obj, "other", "ed25519:x", other_key.verify_key)
    signing.verify_json(obj, SERVER, KEY_ID, KEY.verify_key)


def test_verify_signed_by_key() -> None:
    obj = signing.sign_json({"mxid": "@a:b", "token": "t"}, "idserver", "ed25519:0", KEY)
    pub = signing.encode_verify_key(KEY)
    assert signing.verify_signed_by_key(obj, pub)
    assert not signing.verify_signed_by_key({**obj, "token": "u"}, pub)
    assert not signing.verify_signed_by_key(obj, "notbase64!")
    urlsafe = pub.replace("+", "-").replace("/", "_")
    assert signing.verify_signed_by_key(obj, urlsafe)  # identity servers may publish URL-safe keys
    _, other = signing.generate_signing_key()
    assert not signing.verify_signed_by_key(obj, signing.encode_verify_key(other))


def _hash_and_sign(event: dict[str, Any], version: str) -> dict[str, Any]:
    return dict(add_hashes_and_signatures(copy.deepcopy(event), version, SERVER, KEY_ID, KEY))


@pytest.mark.parametrize("case_index", [0, 1])
@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_event_signing_vectors(case_index: int, version: str) -> None:
    case = V["event_signing"]["cases"][case_index]
    signed = _hash_and_sign(case["input"], version)
    if int(version) in case["spec_expected_applies_to_room_versions"]:
        assert signed == case["expected_signed"]
    else:
        derived = case["derived_for_room_versions_11_12"]
        assert signed["hashes"]["sha256"] == derived["hashes.sha256"]
        assert signed["signatures"] == {SERVER: {KEY_ID: derived["signature"]}}
    check_content_hash(signed, version)
    verify_event_signature(signed, version, SERVER, {KEY_ID: KEY.verify_key})


@pytest.mark.parametrize("version", ALL_VERSIONS[2:])
def test_event_id_vectors(version: str) -> None:
    derived = V["reference_hash_and_event_ids_derived"]
    signed = _hash_and_sign(V["event_signing"]["cases"][0]["input"], version)
    assert event_id(signed, version) == derived["event_id_by_room_version"][version]


def test_v1_v2_event_ids_come_from_the_event() -> None:
    signed = _hash_and_sign(V["event_signing"]["cases"][1]["input"], "1")
    assert event_id(signed, "1") == "$0:domain"
    with pytest.raises(EventFormatError):
        event_id({"type": "m.room.message"}, "2")


def test_v12_room_id_vector() -> None:
    vec = V["v12_room_id_derived"]
    signed = _hash_and_sign(vec["create_event_input"], "12")
    assert signed == vec["create_event_signed"]
    assert event_id(signed, "12") == vec["event_id"]
    assert room_id_from_create_event(signed, "12") == vec["room_id"]
    with pytest.raises(EventFormatError):
        room_id_from_create_event(signed, "11")


def test_redacted_copy_still_verifies_but_hash_mismatches() -> None:
    from homeserver.protocol.redaction import redact

    signed = _hash_and_sign(V["event_signing"]["cases"][1]["input"], "10")
    redacted = redact(signed, "10")
    verify_event_signature(redacted, "10", SERVER, {KEY_ID: KEY.verify_key})
    with pytest.raises(HashMismatch):
        check_content_hash(redacted, "10")
    tampered = {**signed, "content": {"body": "changed"}}
    with pytest.raises(HashMismatch):
        check_content_hash(tampered, "10")
    # the event id (reference hash) does not change when non-essential content does
    assert event_id(redacted, "10") == event_id(signed, "10")


def test_event_signature_with_unknown_keys_only_fails() -> None:
    signed = _hash_and_sign(V["event_signing"]["cases"][0]["input"], "10")
    with pytest.raises(SignatureError):
        verify_event_signature(signed, "10", SERVER, {"ed25519:other": KEY.verify_key})
    _, other = signing.generate_signing_key()
    with pytest.raises(SignatureError):
        verify_event_signature(signed, "10", SERVER, {KEY_ID: other.verify_key})


def test_required_signers() -> None:
    ev = {"sender": "@a:one", "event_id": "$x:two", "type": "m.room.message", "content": {}}
    assert required_signers(ev, "1") == {"one", "two"}
    assert required_signers(ev, "10") == {"one"}
    join = {
        "sender": "@a:one",
        "type": "m.room.member",
        "content": {"membership": "join", "join_authorised_via_users_server": "@b:three"},
    }
    assert required_signers(join, "9") == {"one", "three"}
    assert required_signers(join, "7") == {"one"}
