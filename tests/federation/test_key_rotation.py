"""Key rotation: `python -m homeserver keys rotate` makes a new signing key; the old one stays
published in `old_verify_keys` with when it expired, and still verifies what it signed before.

spec: server-server-api "Publishing Keys" (`old_verify_keys`), "Validating hashes and signatures on
received events" (keys that expired before an event's time are not used).
"""

from __future__ import annotations

from pathlib import Path

from homeserver.__main__ import main
from homeserver.config import Config
from homeserver.keys import load_old_keys, read_key_file
from homeserver.protocol.signing import encode_verify_key
from homeserver.server import HomeServer


def test_rotation_keeps_the_old_keys_published(tmp_path: Path) -> None:
    data = tmp_path / "data"
    hs = HomeServer(Config.model_validate({"data_dir": str(data), "server_name": "example.test"}))
    first_id = hs.identity.key_id
    first_public = encode_verify_key(hs.identity.signing_key)
    hs.close()
    assert main(["keys", "rotate", "--data-dir", str(data)]) == 0
    assert main(["keys", "rotate", "--data-dir", str(data)]) == 0
    current_id, _ = read_key_file(data / "signing.key")
    old = load_old_keys(data)
    assert first_id in old and current_id not in old and len(old) == 2
    assert old[first_id][0] == first_public
    hs = HomeServer(Config.model_validate({"data_dir": str(data), "server_name": "example.test"}))
    try:
        assert hs.identity.key_id == current_id
        assert hs.federation is not None
        answer = hs.federation.our_keys.response()
        assert list(answer["verify_keys"]) == [current_id]
        assert answer["old_verify_keys"][first_id] == {"key": first_public, "expired_ts": old[first_id][1]}
        expired = old[first_id][1]
        # the first key verifies what it signed before it expired, not after
        assert first_id in hs.federation.our_keys.verify_keys([first_id], expired - 1)
        assert first_id not in hs.federation.our_keys.verify_keys([first_id], expired + 1)
    finally:
        hs.close()


def test_a_broken_old_keys_file_stops_the_start_with_one_line(tmp_path: Path) -> None:
    from homeserver.server import StartupError

    data = tmp_path / "data"
    data.mkdir()
    (data / "old_signing_keys.json").write_text("{not json", encoding="utf-8")
    try:
        HomeServer(Config.model_validate({"data_dir": str(data)}))
    except StartupError as e:
        assert "old_signing_keys.json" in str(e) and "\n" not in str(e)
    else:
        raise AssertionError("the server started with a broken old keys file")
