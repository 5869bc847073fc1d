"""The signing key file is Synapse's (signedjson's) format: a key written by either side loads on the other."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from signedjson.key import generate_signing_key, get_verify_key, read_signing_keys, write_signing_keys
from signedjson.sign import sign_json, verify_signed_json

from homeserver.keys import KeyFileError, load_or_create_signing_key, read_key_file
from homeserver.protocol.signing import sign_json as our_sign_json


def test_a_key_written_by_signedjson_loads(tmp_path: Path) -> None:
    theirs = generate_signing_key("a_Syn1")
    path = tmp_path / "signing.key"
    with path.open("w") as f:
        write_signing_keys(f, [theirs])
    key_id, key = load_or_create_signing_key(path)
    assert key_id == "ed25519:a_Syn1" and bytes(key) == bytes(theirs)
    # the same key: what we sign, signedjson verifies with the other side's verify key
    signed = our_sign_json({"a": 1}, "hs.test", key_id, key)
    verify_signed_json(signed, "hs.test", get_verify_key(theirs))


def test_a_key_we_write_loads_in_signedjson(tmp_path: Path) -> None:
    path = tmp_path / "data" / "signing.key"
    key_id, key = load_or_create_signing_key(path)  # no file yet: made and written
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (theirs,) = read_signing_keys(path.read_text().splitlines())
    assert f"{theirs.alg}:{theirs.version}" == key_id and bytes(theirs) == bytes(key)
    assert sign_json({"a": 1}, "hs.test", theirs) == our_sign_json({"a": 1}, "hs.test", key_id, key)
    assert load_or_create_signing_key(path) == (key_id, key)  # and it is kept, not remade


def test_the_first_of_several_keys_signs(tmp_path: Path) -> None:
    first, second = generate_signing_key("one"), generate_signing_key("two")
    path = tmp_path / "signing.key"
    with path.open("w") as f:
        write_signing_keys(f, [first, second])
    key_id, key = read_key_file(path)
    assert key_id == "ed25519:one" and bytes(key) == bytes(first)


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", b"garbage\n", b"\xff\xfe\x00", b"ed25519 a1 !!notbase64!!\n", b"rsa v1 AAAA\n", b"ed25519 v1 AAAA\n"],
)
def test_bad_files_name_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as e:
        load_or_create_signing_key(path)
    assert str(path) in str(e.value)
