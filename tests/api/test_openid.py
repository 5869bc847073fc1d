"""OpenID tokens (spec: client-server-api "OpenID"): issued to the requester, owned until they expire."""

from __future__ import annotations

from homeserver.auth.openid import OPENID_TOKEN_LIFETIME_S

from .conftest import Harness


async def test_openid_token_names_its_owner_until_it_expires(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("POST", f"user/{alice.user_id}/openid/request_token", alice, json={})
    assert status == 200 and body["expires_in"] == OPENID_TOKEN_LIFETIME_S
    openid = harness.hs.openid
    assert openid.owner(body["access_token"]) == alice.user_id
    assert openid.owner("not-a-token") is None
    now = openid.clock()
    openid.clock = lambda: now + OPENID_TOKEN_LIFETIME_S + 1
    assert openid.owner(body["access_token"]) is None
