"""GET /voip/turnServer: HMAC credentials from the shared secret, 200 `{}` when TURN is not configured."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from homeserver.api.client.voip import turn_credentials

from .conftest import Harness

TURN = {
    "turn_uris": ["turn:turn.example.org:3478?transport=udp", "turns:turn.example.org:443?transport=tcp"],
    "turn_shared_secret": "s3cret",
    "turn_user_lifetime_s": 3600,
}


async def test_not_configured(harness: Harness) -> None:
    # Element (matrix-js-sdk checkTurnServers) reads `uris` only when present: `{}` is "no TURN",
    # as Synapse answers; the spec defines 200 and 429 only, so a 404 was an error to the client
    # (the OpenAPI check admits this `{}`: tests/api/openapi_check.py _EMPTY_OBJECT_ALLOWED)
    alice = await harness.user("alice")
    status, body = await harness.request("GET", "voip/turnServer", alice)
    assert status == 200 and body == {}
    status, body = await harness.request("GET", "voip/turnServer")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"


@pytest.mark.parametrize("harness", [TURN], indirect=True)
async def test_credentials(harness: Harness) -> None:
    alice = await harness.user("alice")
    before = int(time.time())
    status, body = await harness.request("GET", "voip/turnServer", alice)
    assert status == 200
    assert body["uris"] == TURN["turn_uris"] and body["ttl"] == 3600
    expiry, _, user_id = body["username"].partition(":")
    assert user_id == alice.user_id
    assert before + 3600 <= int(expiry) <= int(time.time()) + 3600
    mac = hmac.new(b"s3cret", body["username"].encode(), hashlib.sha1).digest()
    assert body["password"] == base64.b64encode(mac).decode()


def test_turn_rest_api_vector() -> None:
    # coturn's use-auth-secret scheme: password = base64(hmac-sha1(secret, "<expiry>:<user>"))
    creds = turn_credentials(["turn:t"], "north", "@u:x", 100, 1_000_000.0)
    assert creds["username"] == "1000100:@u:x"
    assert creds["password"] == base64.b64encode(hmac.new(b"north", b"1000100:@u:x", hashlib.sha1).digest()).decode()
