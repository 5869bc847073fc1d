"""Third-party networks: no application services, so no protocols and nothing to look up."""

from __future__ import annotations

from .conftest import Harness


async def test_no_protocols(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("GET", "thirdparty/protocols", alice)
    assert status == 200 and body == {}
    for path in (
        "thirdparty/protocol/irc",
        "thirdparty/location/irc?searchFields=x",
        "thirdparty/user/irc",
        "thirdparty/location?alias=%23room:hs.test",
        "thirdparty/user?userid=@alice:hs.test",
    ):
        status, body = await harness.request("GET", path, alice)
        assert status == 404 and body["errcode"] == "M_NOT_FOUND", path
    status, body = await harness.request("GET", "thirdparty/location", alice)
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await harness.request("GET", "thirdparty/protocols")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
