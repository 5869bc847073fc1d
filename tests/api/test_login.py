"""GET/POST /login, /refresh, /logout, /logout/all."""

from __future__ import annotations

from typing import Any

import pytest

from .auth_helpers import NO_LIMITS, PASSWORD, bearer, login
from .conftest import Harness


@pytest.mark.parametrize("harness", [{"oauth": {"enabled": False}}], indirect=True)  # OAuth adds m.login.sso
async def test_login_flows(harness: Harness) -> None:
    status, body = await harness.request("GET", "login")
    assert status == 200 and body == {
        "flows": [{"type": "m.login.password"}, {"type": "m.login.token", "get_login_token": True}]
    }
    status, body = await harness.request("GET", "/_matrix/client/r0/login")
    assert status == 200


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
@pytest.mark.parametrize(
    "body",
    [
        {"identifier": {"type": "m.id.user", "user": "alice"}},
        {"identifier": {"type": "m.id.user", "user": "@alice:hs.test"}},
        {"identifier": {"type": "m.id.user", "user": "ALICE"}},
        {"identifier": {"type": "m.id.user", "user": "@Alice:hs.test"}},
        {"user": "alice"},
        {"user": "@alice:hs.test"},
    ],
)
async def test_password_login_identifiers(harness: Harness, body: dict[str, Any]) -> None:
    await harness.user("alice", password=PASSWORD)
    status, answer = await harness.request(
        "POST", "login", json={"type": "m.login.password", "password": PASSWORD, **body}
    )
    assert status == 200, answer
    assert answer["user_id"] == "@alice:hs.test" and answer["home_server"] == "hs.test"
    assert answer["access_token"] and answer["device_id"]
    assert "refresh_token" not in answer and "expires_in_ms" not in answer
    status, who = await harness.request("GET", "account/whoami", headers=bearer(answer["access_token"]))
    assert status == 200 and who["device_id"] == answer["device_id"]


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_login_failures(harness: Harness) -> None:
    await harness.user("alice", password=PASSWORD)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"identifier": {"type": "m.id.user", "user": "alice"}, "password": "wrong"}, 403, "M_FORBIDDEN"),
        ({"identifier": {"type": "m.id.user", "user": "nobody"}, "password": PASSWORD}, 403, "M_FORBIDDEN"),
        ({"identifier": {"type": "m.id.user", "user": "@alice:other.test"}, "password": PASSWORD}, 403, "M_FORBIDDEN"),
        (
            {"identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"}, "password": PASSWORD},
            403,
            "M_FORBIDDEN",
        ),
        (
            {"identifier": {"type": "m.id.phone", "country": "GB", "phone": "1"}, "password": PASSWORD},
            403,
            "M_FORBIDDEN",
        ),
        ({"medium": "email", "address": "a@b.c", "password": PASSWORD}, 403, "M_FORBIDDEN"),
        ({"identifier": {"type": "m.id.carrier_pigeon"}, "password": PASSWORD}, 400, "M_UNKNOWN"),
        ({"password": PASSWORD}, 400, "M_MISSING_PARAM"),
        ({"identifier": {"type": "m.id.user", "user": "alice"}}, 400, "M_MISSING_PARAM"),
        ({"identifier": {"type": "m.id.user"}, "password": PASSWORD}, 400, "M_MISSING_PARAM"),
        ({"identifier": {"type": "m.id.user", "user": 5}, "password": PASSWORD}, 400, "M_BAD_JSON"),
        ({"identifier": "alice", "password": PASSWORD}, 400, "M_BAD_JSON"),
        ({"identifier": {"user": "alice"}, "password": PASSWORD}, 400, "M_MISSING_PARAM"),
        ({"identifier": {"type": "m.id.user", "user": "alice"}, "password": 123}, 400, "M_BAD_JSON"),
        (
            {"identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD, "refresh_token": "yes"},
            400,
            "M_BAD_JSON",
        ),
        (
            {"identifier": {"type": "m.id.user", "user": "alice"}, "password": PASSWORD, "device_id": 7},
            400,
            "M_BAD_JSON",
        ),
    ]
    for body, want_status, errcode in cases:
        status, answer = await harness.request("POST", "login", json={"type": "m.login.password", **body})
        assert (status, answer.get("errcode")) == (want_status, errcode), (body, answer)
    status, answer = await harness.request("POST", "login", json={"type": "m.login.token", "token": "x"})
    assert status == 403 and answer["errcode"] == "M_FORBIDDEN"  # no such login token
    status, answer = await harness.request("POST", "login", json={"type": "m.login.sso"})
    assert status == 400 and answer["errcode"] == "M_UNKNOWN"
    status, answer = await harness.request("POST", "login", json={"identifier": {}})
    assert status == 400 and answer["errcode"] == "M_MISSING_PARAM"
    status, answer = await harness.request("POST", "login", json={"type": ["m.login.password"]})
    assert status == 400 and answer["errcode"] == "M_BAD_JSON"
    status, answer = await harness.request("POST", "login", json="hello")
    assert status == 400 and answer["errcode"] == "M_BAD_JSON"
    resp = await harness.client.post("/_matrix/client/v3/login", data=b"not json")
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_NOT_JSON"


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_device_reuse_invalidates_old_tokens(harness: Harness) -> None:
    await harness.user("alice", password=PASSWORD)
    status, first = await login(harness, "alice", device_id="PHONE", initial_device_display_name="Phone")
    assert status == 200 and first["device_id"] == "PHONE"
    status, second = await login(harness, "alice", device_id="PHONE", initial_device_display_name="Renamed?")
    assert status == 200 and second["device_id"] == "PHONE"
    status, err = await harness.request("GET", "account/whoami", headers=bearer(first["access_token"]))
    assert status == 401 and err["errcode"] == "M_UNKNOWN_TOKEN" and err["soft_logout"] is False
    status, device = await harness.request("GET", "devices/PHONE", headers=bearer(second["access_token"]))
    # spec: initial_device_display_name is ignored when the device is known
    assert status == 200 and device["display_name"] == "Phone"
    assert device["last_seen_ip"] and device["last_seen_ts"] > 0
    status, third = await login(harness, "alice")
    assert status == 200 and third["device_id"] not in ("PHONE", second["device_id"])
    status, devices = await harness.request("GET", "devices", headers=bearer(third["access_token"]))
    assert {d["device_id"] for d in devices["devices"]} >= {"PHONE", third["device_id"]}


@pytest.mark.parametrize("harness", [{"public_baseurl": "https://matrix.example.org/"}], indirect=True)
async def test_login_offers_well_known(harness: Harness) -> None:
    await harness.user("alice", password=PASSWORD)
    status, body = await login(harness, "alice")
    assert status == 200 and body["well_known"] == {"m.homeserver": {"base_url": "https://matrix.example.org"}}


async def test_deactivated_user_cannot_log_in(harness: Harness) -> None:
    await harness.user("gone", password=PASSWORD)
    await harness.hs.accounts.deactivate("@gone:hs.test")
    status, body = await login(harness, "gone")
    assert status == 403 and body["errcode"] == "M_USER_DEACTIVATED"


@pytest.mark.parametrize("harness", [{"rate_limits": {"login": {"per_second": 0.01, "burst": 3}}}], indirect=True)
async def test_login_rate_limits(harness: Harness) -> None:
    await harness.user("alice", password=PASSWORD)
    for _ in range(3):
        assert (await login(harness, "alice", password="wrong"))[0] == 403
    status, body = await login(harness, "alice")
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0


async def test_login_rate_limit_per_user(harness: Harness) -> None:
    """Guessing one user's password from many addresses still runs into that user's bucket."""
    await harness.user("alice", password=PASSWORD)
    for i in range(5):
        await harness.hs.login.verify("@alice:hs.test", PASSWORD, f"10.0.0.{i}")
    status, body = await login(harness, "alice")
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"


# -- refresh tokens ------------------------------------------------------------------------------------


async def test_refresh_token_rotation(harness: Harness) -> None:
    await harness.user("alice", password=PASSWORD)
    status, first = await login(harness, "alice", refresh_token=True)
    assert status == 200
    assert first["refresh_token"] and first["expires_in_ms"] == 5 * 60 * 1000
    status, second = await harness.request("POST", "refresh", json={"refresh_token": first["refresh_token"]})
    assert status == 200
    assert set(second) == {"access_token", "refresh_token", "expires_in_ms"}
    # the old access token died; the new one belongs to the same device
    status, err = await harness.request("GET", "account/whoami", headers=bearer(first["access_token"]))
    assert status == 401 and err["errcode"] == "M_UNKNOWN_TOKEN"
    # spec: the old refresh token stays valid until the new tokens are used; repeating the refresh
    # replaces the answer the client lost
    status, retry = await harness.request("POST", "refresh", json={"refresh_token": first["refresh_token"]})
    assert status == 200
    status, err = await harness.request("GET", "account/whoami", headers=bearer(second["access_token"]))
    assert status == 401
    status, who = await harness.request("GET", "account/whoami", headers=bearer(retry["access_token"]))
    assert status == 200 and who["device_id"] == first["device_id"]
    await _settle(harness)
    # using the new access token retired the old refresh token
    status, err = await harness.request("POST", "refresh", json={"refresh_token": first["refresh_token"]})
    assert status == 401 and err["errcode"] == "M_UNKNOWN_TOKEN"
    # using the new refresh token retires it as well, and works
    status, third = await harness.request("POST", "refresh", json={"refresh_token": retry["refresh_token"]})
    assert status == 200
    status, _ = await harness.request("POST", "refresh", json={"refresh_token": third["refresh_token"]})
    assert status == 200
    status, err = await harness.request("POST", "refresh", json={"refresh_token": retry["refresh_token"]})
    assert status == 401


async def _settle(harness: Harness) -> None:
    import asyncio

    for _ in range(100):
        if not harness.hs.tokens._tasks:
            return
        await asyncio.sleep(0)
    await asyncio.gather(*harness.hs.tokens._tasks)


async def test_expired_access_token_is_a_soft_logout(harness: Harness) -> None:
    now = [5_000_000.0]
    harness.hs.tokens.clock = lambda: now[0]
    await harness.user("alice", password=PASSWORD)
    status, body = await login(harness, "alice", refresh_token=True)
    assert status == 200
    now[0] += 5 * 60 + 1
    status, err = await harness.request("GET", "account/whoami", headers=bearer(body["access_token"]))
    assert status == 401 and err["errcode"] == "M_UNKNOWN_TOKEN" and err["soft_logout"] is True
    status, fresh = await harness.request("POST", "refresh", json={"refresh_token": body["refresh_token"]})
    assert status == 200
    assert (await harness.request("GET", "account/whoami", headers=bearer(fresh["access_token"])))[0] == 200


async def test_refresh_errors(harness: Harness) -> None:
    status, body = await harness.request("POST", "refresh", json={"refresh_token": "mar_nope"})
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN" and body["soft_logout"] is False
    status, body = await harness.request("POST", "refresh", json={})
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await harness.request("POST", "refresh", json={"refresh_token": 1})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"


async def test_refresh_after_logout_fails(harness: Harness) -> None:
    await harness.user("alice", password=PASSWORD)
    status, body = await login(harness, "alice", refresh_token=True)
    assert (await harness.request("POST", "logout", headers=bearer(body["access_token"])))[0] == 200
    status, err = await harness.request("POST", "refresh", json={"refresh_token": body["refresh_token"]})
    assert status == 401 and err["errcode"] == "M_UNKNOWN_TOKEN"


# -- logout --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_logout_deletes_the_device(harness: Harness) -> None:
    await harness.user("alice", password=PASSWORD)
    _, one = await login(harness, "alice")
    _, two = await login(harness, "alice")
    status, body = await harness.request("POST", "logout", headers=bearer(one["access_token"]))
    assert status == 200 and body == {}
    status, err = await harness.request("GET", "account/whoami", headers=bearer(one["access_token"]))
    assert status == 401 and err["errcode"] == "M_UNKNOWN_TOKEN"
    status, devices = await harness.request("GET", "devices", headers=bearer(two["access_token"]))
    assert one["device_id"] not in {d["device_id"] for d in devices["devices"]}
    status, err = await harness.request("POST", "logout")
    assert status == 401 and err["errcode"] == "M_MISSING_TOKEN"


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_logout_all(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    _, one = await login(harness, "alice")
    _, two = await login(harness, "alice", refresh_token=True)
    bob = await harness.user("bob")
    status, body = await harness.request("POST", "logout/all", alice)
    assert status == 200 and body == {}
    for token in (alice.access_token, one["access_token"], two["access_token"]):
        assert (await harness.request("GET", "account/whoami", headers=bearer(token)))[0] == 401
    assert (await harness.request("POST", "refresh", json={"refresh_token": two["refresh_token"]}))[0] == 401
    assert list(harness.hs.accounts.devices("@alice:hs.test")) == []
    assert (await harness.request("GET", "account/whoami", bob))[0] == 200
    assert (await login(harness, "alice"))[0] == 200  # the account itself is fine
