"""The tokens service decides on plain values (no HTTP below homeserver/api/): the token, whether
the route admits guests, whether a locked account may still call it."""

from __future__ import annotations

import pytest

from homeserver.errors import MatrixError

from .conftest import Harness


async def test_authenticate_applies_the_routes_rules(harness: Harness) -> None:
    tokens = harness.hs.tokens
    admin, alice = await harness.user("admin", admin=True), await harness.user("alice")
    assert tokens.authenticate(alice.access_token, guests_admitted=False, locked_admitted=False).user_id == (
        alice.user_id
    )
    status, _ = await harness.request(
        "PUT", f"/_matrix/client/v1/admin/lock/{alice.user_id}", admin, json={"locked": True}
    )
    assert status == 200
    with pytest.raises(MatrixError) as locked:
        tokens.authenticate(alice.access_token, guests_admitted=True, locked_admitted=False)
    assert (locked.value.status, locked.value.errcode) == (401, "M_USER_LOCKED")
    assert tokens.authenticate(alice.access_token, guests_admitted=False, locked_admitted=True).is_locked

    status, guest = await harness.request("POST", "/_matrix/client/v3/register?kind=guest", json={})
    assert status == 200
    with pytest.raises(MatrixError) as refused:
        tokens.authenticate(guest["access_token"], guests_admitted=False, locked_admitted=False)
    assert (refused.value.status, refused.value.errcode) == (403, "M_GUEST_ACCESS_FORBIDDEN")
    assert tokens.authenticate(guest["access_token"], guests_admitted=True, locked_admitted=False).is_guest

    with pytest.raises(MatrixError) as unknown:
        tokens.authenticate("mat_nonsense", guests_admitted=True, locked_admitted=True)
    assert (unknown.value.status, unknown.value.errcode) == (401, "M_UNKNOWN_TOKEN")
