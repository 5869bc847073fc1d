from __future__ import annotations

import pytest

from .conftest import Harness

pytestmark = pytest.mark.asyncio


async def test_versions_and_well_known(harness: Harness) -> None:
    status, body = await harness.request("GET", "/_matrix/client/versions")
    assert status == 200 and "v1.1" in body["versions"]
    status, body = await harness.request("GET", "/.well-known/matrix/client")
    assert status == 200 and body["m.homeserver"]["base_url"].startswith("http")


async def test_unknown_endpoint_and_wrong_method(harness: Harness) -> None:
    status, body = await harness.request("GET", "/_matrix/client/v3/no/such/thing")
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED"
    status, body = await harness.request("DELETE", "/_matrix/client/versions")
    assert status == 405 and body["errcode"] == "M_UNRECOGNIZED"


async def test_cors_preflight_and_headers(harness: Harness) -> None:
    resp = await harness.client.options(
        "/_matrix/client/v3/sync",
        headers={"Origin": "https://app.element.io", "Access-Control-Request-Method": "GET"},
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
    resp = await harness.client.get("/_matrix/client/v3/no/such/thing")
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_access_tokens(harness: Harness) -> None:
    alice = await harness.user("alice")
    assert harness.hs.tokens.lookup(alice.access_token).user_id == "@alice:hs.test"
    resp = await harness.client.get("/_matrix/client/versions", headers={"Authorization": "Basic x"})
    assert resp.status == 200  # /versions does not need a token
