"""The checks of keys other servers send (federation/e2ee.py): a signature that verified once is
remembered by a digest of what it covers, so a changed object, key or signature is verified again."""

from __future__ import annotations

import copy
from typing import Any

import nacl.signing
import pytest

import federation.e2ee as e2ee
from homeserver.protocol import unpadded_base64
from homeserver.protocol.signing import sign_json

USER = "@u:remote.example"


def device_keys() -> tuple[dict[str, Any], nacl.signing.SigningKey]:
    sk = nacl.signing.SigningKey.generate()
    pub = unpadded_base64.encode(bytes(sk.verify_key))
    keys = {
        "user_id": USER,
        "device_id": "DEV",
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {"ed25519:DEV": pub, "curve25519:DEV": "c" * 43},
    }
    return sign_json(keys, USER, "ed25519:DEV", sk), sk


def test_a_verified_signature_is_not_verified_again_but_any_change_is(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = e2ee.verify_json

    def counting(*args: Any, **kwargs: Any) -> None:
        calls.append(args[2])
        real(*args, **kwargs)

    monkeypatch.setattr(e2ee, "verify_json", counting)
    keys, _ = device_keys()
    assert e2ee.valid_device_keys(USER, "DEV", keys) and len(calls) == 1
    assert e2ee.valid_device_keys(USER, "DEV", copy.deepcopy(keys)) and len(calls) == 1  # remembered
    # unsigned data is not covered by the signature: still the same
    assert e2ee.valid_device_keys(USER, "DEV", {**keys, "unsigned": {"device_display_name": "x"}})
    assert len(calls) == 1
    tampered = copy.deepcopy(keys)
    tampered["algorithms"] = ["m.olm.v1.curve25519-aes-sha2"]
    assert not e2ee.valid_device_keys(USER, "DEV", tampered) and len(calls) == 2
    resigned = copy.deepcopy(keys)
    resigned["signatures"][USER]["ed25519:DEV"] = unpadded_base64.encode(bytes(64))
    assert not e2ee.valid_device_keys(USER, "DEV", resigned) and len(calls) == 3
    # the same object and signature claimed under another key: verified (and refused) again
    other, _ = device_keys()
    swapped = copy.deepcopy(keys)
    swapped["keys"]["ed25519:DEV"] = other["keys"]["ed25519:DEV"]
    assert not e2ee.valid_device_keys(USER, "DEV", swapped) and len(calls) == 4


def test_the_memory_of_verified_signatures_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e2ee, "_VERIFIED_MAX", 3)
    monkeypatch.setattr(e2ee, "_verified", type(e2ee._verified)())
    for _ in range(5):
        keys, _ = device_keys()
        assert e2ee.valid_device_keys(USER, "DEV", keys)
    assert len(e2ee._verified) == 3
