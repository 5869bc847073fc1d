"""POST /register with user-interactive auth, guests, username rules, /register/available."""

from __future__ import annotations

import asyncio

import pytest

from .auth_helpers import NO_LIMITS, PASSWORD, bearer, login, register
from .conftest import Harness

TOKEN_MODE = {"registration": "token"}
CLOSED = {"registration": "closed"}


async def test_first_request_gets_flows_and_session(harness: Harness) -> None:
    status, body = await harness.request("POST", "register", json={})
    assert status == 401
    assert body["flows"] == [
        {"stages": ["m.login.dummy"]},
        {"stages": ["m.login.registration_token", "m.login.dummy"]},
    ]
    assert isinstance(body["session"], str) and body["session"]
    assert body["params"] == {}
    assert "errcode" not in body and "completed" not in body


async def test_dummy_with_session_registers_and_logs_in(harness: Harness) -> None:
    status, first = await harness.request("POST", "register", json={"username": "alice", "password": PASSWORD})
    assert status == 401
    status, body = await harness.request(
        "POST",
        "register",
        json={
            "username": "alice",
            "password": PASSWORD,
            "initial_device_display_name": "Alice's phone",
            "auth": {"type": "m.login.dummy", "session": first["session"]},
        },
    )
    assert status == 200, body
    assert body["user_id"] == "@alice:hs.test"
    assert body["home_server"] == "hs.test"
    assert body["access_token"] and body["device_id"]
    assert "refresh_token" not in body and "expires_in_ms" not in body
    status, who = await harness.request("GET", "account/whoami", headers=bearer(body["access_token"]))
    assert status == 200 and who == {"user_id": "@alice:hs.test", "device_id": body["device_id"], "is_guest": False}
    status, dev = await harness.request("GET", f"devices/{body['device_id']}", headers=bearer(body["access_token"]))
    assert status == 200 and dev["display_name"] == "Alice's phone"
    # the session is used up: it cannot register a second account
    status, again = await harness.request(
        "POST",
        "register",
        json={
            "username": "alice2",
            "password": PASSWORD,
            "auth": {"type": "m.login.dummy", "session": first["session"]},
        },
    )
    assert status == 401 and again["errcode"] == "M_UNKNOWN" and again["session"] != first["session"]


async def test_dummy_without_session_as_nio_sends_it(harness: Harness) -> None:
    status, body = await register(harness, "nio")
    assert status == 200 and body["user_id"] == "@nio:hs.test"
    status, _ = await login(harness, "nio")
    assert status == 200


async def test_request_fields_are_remembered_by_the_session(harness: Harness) -> None:
    status, first = await harness.request(
        "POST", "register", json={"username": "carol", "password": PASSWORD, "device_id": "CAROLDEV"}
    )
    assert status == 401
    status, body = await harness.request(
        "POST", "register", json={"auth": {"type": "m.login.dummy", "session": first["session"]}}
    )
    assert status == 200, body
    assert body["user_id"] == "@carol:hs.test" and body["device_id"] == "CAROLDEV"


async def test_random_localpart_when_no_username(harness: Harness) -> None:
    status, body = await register(harness, None)
    assert status == 200
    localpart = body["user_id"][1:].split(":")[0]
    assert localpart and localpart == localpart.lower() and len(localpart) >= 8


async def test_username_is_lower_cased(harness: Harness) -> None:
    status, body = await register(harness, "Dave")
    assert status == 200 and body["user_id"] == "@dave:hs.test"
    assert (await login(harness, "DAVE"))[0] == 200


async def test_username_rules_before_auth(harness: Harness) -> None:
    await harness.user("taken")
    for username in ("bad name", "ünïcode", "a:b", "", "x" * 260):
        status, body = await harness.request("POST", "register", json={"username": username, "password": PASSWORD})
        assert status == 400 and body["errcode"] == "M_INVALID_USERNAME", (username, body)
    # spec: checked before UIA, so the first request (no auth) already says so
    status, body = await harness.request("POST", "register", json={"username": "taken", "password": PASSWORD})
    assert status == 400 and body["errcode"] == "M_USER_IN_USE"
    status, body = await register(harness, "taken")
    assert status == 400 and body["errcode"] == "M_USER_IN_USE"


async def test_inhibit_login(harness: Harness) -> None:
    status, body = await register(harness, "quiet", inhibit_login=True)
    assert status == 200
    assert body["user_id"] == "@quiet:hs.test"
    assert "access_token" not in body and "device_id" not in body
    assert list(harness.hs.accounts.devices("@quiet:hs.test")) == []


async def test_device_id_and_refresh_token(harness: Harness) -> None:
    status, body = await register(harness, "erin", device_id="ERINDEV", refresh_token=True)
    assert status == 200
    assert body["device_id"] == "ERINDEV"
    assert body["refresh_token"] and body["expires_in_ms"] > 0
    status, refreshed = await harness.request("POST", "refresh", json={"refresh_token": body["refresh_token"]})
    assert status == 200 and refreshed["access_token"] != body["access_token"]


async def test_password_is_required_after_auth(harness: Harness) -> None:
    status, body = await harness.request(
        "POST", "register", json={"username": "nopass", "auth": {"type": "m.login.dummy"}}
    )
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    assert not harness.hs.accounts.exists("@nopass:hs.test")


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"username": 5}, "M_BAD_JSON"),
        ({"password": ["x"]}, "M_BAD_JSON"),
        ({"inhibit_login": "yes"}, "M_BAD_JSON"),
        ({"refresh_token": 1}, "M_BAD_JSON"),
        ({"password": ""}, "M_WEAK_PASSWORD"),
        ({"password": "x" * 600}, "M_INVALID_PARAM"),
        ({"device_id": ""}, "M_INVALID_PARAM"),
        ({"auth": "dummy"}, "M_BAD_JSON"),
        ({"auth": {"type": 3}}, "M_BAD_JSON"),
        ({"auth": {"type": "m.login.dummy", "session": 7}}, "M_BAD_JSON"),
    ],
)
async def test_bad_bodies(harness: Harness, body: dict[str, object], errcode: str) -> None:
    status, answer = await harness.request("POST", "register", json=body)
    assert status == 400 and answer["errcode"] == errcode, answer


async def test_not_json_and_not_an_object(harness: Harness) -> None:
    resp = await harness.client.post("/_matrix/client/v3/register", data=b"{nope")
    assert resp.status == 400 and (await resp.json())["errcode"] == "M_NOT_JSON"
    status, body = await harness.request("POST", "register", json=["a"])
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await harness.request("POST", "register?kind=robot", json={})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


async def test_stage_not_in_any_flow(harness: Harness) -> None:
    status, body = await harness.request(
        "POST", "register", json={"username": "x1", "password": PASSWORD, "auth": {"type": "m.login.recaptcha"}}
    )
    assert status == 401 and body["errcode"] == "M_FORBIDDEN" and body["flows"] and body["session"]


async def test_unknown_session_starts_again(harness: Harness) -> None:
    status, body = await harness.request(
        "POST", "register", json={"password": PASSWORD, "auth": {"type": "m.login.dummy", "session": "nope"}}
    )
    assert status == 401 and body["errcode"] == "M_UNKNOWN" and body["session"] != "nope"


async def test_sessions_expire(harness: Harness) -> None:
    now = [1_000_000.0]
    harness.hs.uia.clock = lambda: now[0]
    status, first = await harness.request("POST", "register", json={"username": "late", "password": PASSWORD})
    assert status == 401
    now[0] += 31 * 60
    status, body = await harness.request(
        "POST", "register", json={"password": PASSWORD, "auth": {"type": "m.login.dummy", "session": first["session"]}}
    )
    assert status == 401 and body["errcode"] == "M_UNKNOWN"


# -- guests ------------------------------------------------------------------------------------------


async def test_guest_registration(harness: Harness) -> None:
    status, body = await harness.request(
        "POST",
        "register?kind=guest",
        json={"username": "ignored", "password": "ignored", "device_id": "IGNORED", "initial_device_display_name": "G"},
    )
    assert status == 200, body
    assert body["user_id"] != "@ignored:hs.test" and body["device_id"] != "IGNORED"
    status, who = await harness.request("GET", "account/whoami", headers=bearer(body["access_token"]))
    assert status == 200 and who["is_guest"] is True
    status, dev = await harness.request("GET", "devices", headers=bearer(body["access_token"]))
    assert status == 200 and dev["devices"][0]["display_name"] == "G"
    # guests may not manage their account
    status, err = await harness.request(
        "POST", "account/password", json={"new_password": "x"}, headers=bearer(body["access_token"])
    )
    assert status == 403 and err["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


async def test_guest_upgrade(harness: Harness) -> None:
    status, guest = await harness.request("POST", "register?kind=guest", json={})
    assert status == 200
    localpart = guest["user_id"][1:].split(":")[0]
    status, body = await register(harness, localpart, guest_access_token=guest["access_token"])
    assert status == 200, body
    assert body["user_id"] == guest["user_id"]
    status, who = await harness.request("GET", "account/whoami", headers=bearer(body["access_token"]))
    assert who["is_guest"] is False
    assert (await login(harness, localpart))[0] == 200
    # a non-guest token cannot be used to upgrade
    status, err = await register(harness, "someone", guest_access_token=body["access_token"])
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("harness", [TOKEN_MODE], indirect=True)
async def test_guests_refused_unless_open(harness: Harness) -> None:
    status, body = await harness.request("POST", "register?kind=guest", json={})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


# -- registration modes ------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", [TOKEN_MODE], indirect=True)
async def test_token_mode_offers_only_the_token_stage(harness: Harness) -> None:
    status, body = await harness.request("POST", "register", json={})
    assert status == 401 and body["flows"] == [{"stages": ["m.login.registration_token", "m.login.dummy"]}]
    status, body = await register(harness, "sneaky")
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    assert not harness.hs.accounts.exists("@sneaky:hs.test")


@pytest.mark.parametrize("harness", [CLOSED], indirect=True)
async def test_closed_mode(harness: Harness) -> None:
    await harness.user("someone")  # past the first account
    status, body = await harness.request("POST", "register", json={})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("GET", "register/available?username=free")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request(
        "GET", "/_matrix/client/v1/register/m.login.registration_token/validity?token=abc"
    )
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


# -- /register/available -----------------------------------------------------------------------------


async def test_available(harness: Harness) -> None:
    await harness.user("bob")
    status, body = await harness.request("GET", "register/available?username=free")
    assert status == 200 and body == {"available": True}
    status, body = await harness.request("GET", "register/available?username=bob")
    assert status == 400 and body["errcode"] == "M_USER_IN_USE"
    status, body = await harness.request("GET", "register/available?username=BOB")
    assert status == 400 and body["errcode"] == "M_USER_IN_USE"
    status, body = await harness.request("GET", "register/available?username=no%20spaces")
    assert status == 400 and body["errcode"] == "M_INVALID_USERNAME"
    status, body = await harness.request("GET", "register/available")
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"


# -- 3PID registration -------------------------------------------------------------------------------


async def test_request_token_endpoints(harness: Harness) -> None:
    status, body = await harness.request(
        "POST", "register/email/requestToken", json={"client_secret": "s", "email": "a@b.c", "send_attempt": 1}
    )
    assert status == 403 and body["errcode"] == "M_THREEPID_DENIED"
    status, body = await harness.request(
        "POST",
        "register/msisdn/requestToken",
        json={"client_secret": "s", "country": "GB", "phone_number": "0", "send_attempt": 1},
    )
    assert status == 403 and body["errcode"] == "M_THREEPID_DENIED"
    status, body = await harness.request("POST", "register/email/requestToken", json={"email": "a@b.c"})
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"


# -- rate limits and races ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "harness", [{"rate_limits": {"registration": {"per_second": 0.01, "burst": 2}}}], indirect=True
)
async def test_registration_is_rate_limited_by_ip(harness: Harness) -> None:
    assert (await register(harness, "r1"))[0] == 200
    assert (await register(harness, "r2"))[0] == 200
    status, body = await register(harness, "r3")
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0
    # asking for the flows costs nothing
    assert (await harness.request("POST", "register", json={}))[0] == 401


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_parallel_registrations_of_one_name(harness: Harness) -> None:
    results = await asyncio.gather(*(register(harness, "popular", password=f"pw{i}") for i in range(8)))
    statuses = sorted(s for s, _ in results)
    assert statuses.count(200) == 1, results
    assert all(b["errcode"] == "M_USER_IN_USE" for s, b in results if s != 200)
