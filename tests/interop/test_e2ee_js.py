"""End-to-end encryption with matrix-js-sdk's Rust crypto (the crypto under Element) against a real server.

`js/e2ee.mjs` runs two js-sdk users in Node (WebAssembly crypto, in-memory stores) and prints what
each client decrypted; the test asserts on it. The server only ever sees ciphertext and keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .conftest import CREATE_ROOM, JOIN, LOGIN, REGISTER, SEND, SYNC, require
from .server import RunningServer
from .test_js_sdk import START_CLIENT, run_scenario

JS_DIR = Path(__file__).resolve().parent / "js"
E2EE_SCRIPT = JS_DIR / "e2ee.mjs"

# Every endpoint the scenario's E2EE flows call (besides the basic ones).
E2EE_ENDPOINTS = (
    "POST /_matrix/client/v3/keys/upload",
    "POST /_matrix/client/v3/keys/query",
    "POST /_matrix/client/v3/keys/claim",
    "POST /_matrix/client/v3/keys/device_signing/upload",
    "POST /_matrix/client/v3/keys/signatures/upload",
    "PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}",
    "GET /_matrix/client/v3/room_keys/version",
    "POST /_matrix/client/v3/room_keys/version",
    "GET /_matrix/client/v3/room_keys/version/{version}",
    "PUT /_matrix/client/v3/room_keys/keys",
    "GET /_matrix/client/v3/room_keys/keys",
    "GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}",
    "PUT /_matrix/client/v3/user/{userId}/account_data/{type}",
    "GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}",
)
DEHYDRATION_PROBE = "GET /_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
RTC_TRANSPORTS_PROBE = "GET /_matrix/client/unstable/org.matrix.msc4143/rtc/transports"


def run_e2ee_scenario(server: RunningServer, name: str) -> dict[str, Any]:
    """Run one scenario of `js/e2ee.mjs`."""
    return run_scenario(server, name, E2EE_SCRIPT)


def test_encrypted_room_cross_signing_backup_and_restore(server: RunningServer) -> None:
    require(server, REGISTER, LOGIN, CREATE_ROOM, JOIN, SEND, SYNC, *START_CLIENT, *E2EE_ENDPOINTS)
    r = run_e2ee_scenario(server, "js_to_js")
    alice, bob = r["alice"], r["bob"]
    sent = r["sent"]

    # An encrypted room; each side decrypted the other's message, which the server holds only as ciphertext.
    assert r["room_encrypted"] is True
    assert r["bob_received"] == {
        "event_id": sent["alice_event_id"],
        "sender": alice,
        "wire_type": "m.room.encrypted",
        "type": "m.room.message",
        "body": sent["alice"],
        "decryption_failure": None,
    }
    assert r["alice_received"]["event_id"] == sent["bob_event_id"]
    assert r["alice_received"]["wire_type"] == "m.room.encrypted"
    assert (r["alice_received"]["sender"], r["alice_received"]["body"]) == (bob, sent["bob"])
    assert r["server_copy"] == {"type": "m.room.encrypted", "algorithm": "m.megolm.v1.aes-sha2", "has_body": False}

    # Cross-signing and secret storage are set up, with the private keys in secret storage.
    assert r["cross_signing"] == {
        "public_keys_on_device": True,
        "private_keys_in_secret_storage": True,
        "ready": True,
    }
    assert r["secret_storage_ready"] is True

    # The key backup exists and both room keys (alice's session and bob's) reached the server.
    backup = r["backup"]
    assert backup["version"] == r["backup_version"]
    assert backup["algorithm"] == "m.megolm_backup.v1.curve25519-aes-sha2"
    assert backup["sessions"] >= 2 and backup["count"] == backup["sessions"]

    # alice's second device: unable to decrypt the old message at first...
    second = r["second_device"]
    assert len(set(r["alice_devices"])) == 2
    before = second["before_restore"]
    assert before["event_id"] == sent["alice_event_id"] and before["decryption_failure"]
    assert second["cross_signing_verified_before"] is False
    assert second["account_has_cross_signing"] is True
    # ...verified by cross-signing once the recovery key gave it the cross-signing keys, as it sees
    # itself, as the first device sees it, and signed by alice as bob sees it...
    assert second["own_status"] == {"cross_signing_verified": True}
    assert second["seen_by_first"] == {"cross_signing_verified": True}
    assert second["seen_by_bob"] == {"signed_by_owner": True}
    # ...and after restoring the backup with the recovery key it reads both old messages.
    assert second["restored"]["total"] >= 2
    assert second["after_restore"]["body"] == sent["alice"]
    assert second["after_restore"]["wire_type"] == "m.room.encrypted"
    assert second["after_restore"]["decryption_failure"] is None
    assert second["bob_message_after_restore"]["body"] == sent["bob"]

    # All of bob's one-time keys claimed: his client learns it from /sync and uploads new ones.
    otk = r["one_time_keys"]
    assert otk["claimed"] >= 1 and otk["count_after_claims"] == 0
    assert otk["count_after_replenish"] > 0

    # MSC3814 dehydrated devices: the SDK made no request of its own; the one request is the probe the
    # scenario makes as Element does (isDehydrationSupported), which would go on to use dehydration
    # only if the server's .well-known opted in. M_UNRECOGNIZED is its "not supported".
    assert r["dehydration"]["requests"] == [DEHYDRATION_PROBE]
    # Every other endpoint the SDK called in these flows is served (the MatrixRTC probe may 404).
    assert set(r["unrecognized"]) <= {DEHYDRATION_PROBE, RTC_TRANSPORTS_PROBE}, r["unrecognized"]
