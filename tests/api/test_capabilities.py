"""GET /capabilities."""

from __future__ import annotations

import pytest

from .conftest import Harness


@pytest.mark.parametrize("harness", [{"default_room_version": "10"}], indirect=True)
async def test_capabilities(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("GET", "capabilities", alice)
    assert status == 200
    caps = body["capabilities"]
    assert caps["m.room_versions"] == {"default": "10", "available": {str(v): "stable" for v in range(1, 13)}}
    assert caps["m.change_password"] == {"enabled": True}
    assert caps["m.set_displayname"] == {"enabled": True}
    assert caps["m.set_avatar_url"] == {"enabled": True}
    assert caps["m.profile_fields"] == {"enabled": True}
    assert caps["m.3pid_changes"] == {"enabled": False}
    assert caps["m.get_login_token"] == {"enabled": True}
    status, body = await harness.request("GET", "capabilities")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
