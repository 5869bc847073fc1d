"""Synapse-shaped admin APIs: shared-secret registration and registration tokens."""

from __future__ import annotations

import time
from typing import Any

import pytest

from .auth_helpers import NO_LIMITS, PASSWORD, admin_user, bearer, login, register_with_token, shared_secret_mac
from .conftest import Harness

REGISTER = "/_synapse/admin/v1/register"
TOKENS = "/_synapse/admin/v1/registration_tokens"
SECRET = "test-shared-secret"  # tests/api/conftest.py's registration_shared_secret


async def shared_secret_register(
    h: Harness, username: str, *, admin: bool = False, mac: str | None = None, **extra: Any
) -> tuple[int, Any]:
    status, nonce = await h.request("GET", REGISTER)
    assert status == 200 and isinstance(nonce["nonce"], str)
    body = {
        "nonce": nonce["nonce"],
        "username": username,
        "password": PASSWORD,
        "admin": admin,
        "mac": mac if mac is not None else shared_secret_mac(SECRET, nonce["nonce"], username, PASSWORD, admin),
        **extra,
    }
    return await h.request("POST", REGISTER, json=body)


# -- shared secret -------------------------------------------------------------------------------------


async def test_shared_secret_registration(harness: Harness) -> None:
    status, body = await shared_secret_register(harness, "boss", admin=True, displayname="The Boss")
    assert status == 200, body
    assert body["user_id"] == "@boss:hs.test" and body["home_server"] == "hs.test"
    assert body["access_token"] and body["device_id"]
    account = harness.hs.accounts.account("@boss:hs.test")
    assert account is not None and account["admin"] is True
    assert harness.hs.db.profiles.get("@boss:hs.test") == {"displayname": "The Boss"}
    status, who = await harness.request("GET", "account/whoami", headers=bearer(body["access_token"]))
    assert status == 200 and who["user_id"] == "@boss:hs.test"
    status, body = await shared_secret_register(harness, "worker")
    assert status == 200
    account = harness.hs.accounts.account("@worker:hs.test")
    assert account is not None and account["admin"] is False
    assert (await login(harness, "worker"))[0] == 200


async def test_shared_secret_with_user_type(harness: Harness) -> None:
    status, nonce = await harness.request("GET", REGISTER)
    mac = shared_secret_mac(SECRET, nonce["nonce"], "botty", PASSWORD, False, "bot")
    body = {"nonce": nonce["nonce"], "username": "botty", "password": PASSWORD, "mac": mac, "user_type": "bot"}
    status, answer = await harness.request("POST", REGISTER, json=body)
    assert status == 200, answer
    account = harness.hs.accounts.account("@botty:hs.test")
    assert account is not None and account["user_type"] == "bot"


async def test_shared_secret_failures(harness: Harness) -> None:
    status, body = await shared_secret_register(harness, "mallory", mac="00" * 20)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # the mac covers the admin flag
    status, nonce = await harness.request("GET", REGISTER)
    mac = shared_secret_mac(SECRET, nonce["nonce"], "mallory", PASSWORD, False)
    body = {"nonce": nonce["nonce"], "username": "mallory", "password": PASSWORD, "admin": True, "mac": mac}
    status, answer = await harness.request("POST", REGISTER, json=body)
    assert status == 403 and answer["errcode"] == "M_FORBIDDEN"
    # a nonce is good once, even after a wrong mac
    body["admin"] = False
    status, answer = await harness.request("POST", REGISTER, json=body)
    assert status == 400 and answer["errcode"] == "M_UNKNOWN"
    assert not harness.hs.accounts.exists("@mallory:hs.test")
    status, answer = await harness.request("POST", REGISTER, json={"nonce": "x", "username": "u", "password": "p"})
    assert status == 400 and answer["errcode"] == "M_MISSING_PARAM"
    status, answer = await harness.request(
        "POST", REGISTER, json={"nonce": "x", "username": "u", "password": "p", "mac": "m", "admin": "yes"}
    )
    assert status == 400 and answer["errcode"] == "M_INVALID_PARAM"
    assert (await shared_secret_register(harness, "dup"))[0] == 200
    status, answer = await shared_secret_register(harness, "dup")
    assert status == 400 and answer["errcode"] == "M_USER_IN_USE"
    status, answer = await shared_secret_register(harness, "bad name")
    assert status == 400 and answer["errcode"] == "M_INVALID_USERNAME"


async def test_nonces_expire(harness: Harness) -> None:
    now = [1000.0]
    harness.hs.registration.clock = lambda: now[0]
    status, nonce = await harness.request("GET", REGISTER)
    now[0] += 61
    mac = shared_secret_mac(SECRET, nonce["nonce"], "late", PASSWORD, False)
    body = {"nonce": nonce["nonce"], "username": "late", "password": PASSWORD, "mac": mac}
    status, answer = await harness.request("POST", REGISTER, json=body)
    assert status == 400 and answer["errcode"] == "M_UNKNOWN"


@pytest.mark.parametrize("harness", [{"registration_shared_secret": None}], indirect=True)
async def test_shared_secret_disabled(harness: Harness) -> None:
    status, body = await harness.request("GET", REGISTER)
    assert status == 400 and body["errcode"] == "M_UNKNOWN"
    status, body = await harness.request(
        "POST", REGISTER, json={"nonce": "x", "username": "u", "password": "p", "mac": "m"}
    )
    assert status == 400 and body["errcode"] == "M_UNKNOWN"


# -- registration tokens -------------------------------------------------------------------------------


async def test_token_admin_api_is_for_admins(harness: Harness) -> None:
    user = await harness.user("plain")
    for method, path in [
        ("GET", TOKENS),
        ("POST", f"{TOKENS}/new"),
        ("GET", f"{TOKENS}/abc"),
        ("PUT", f"{TOKENS}/abc"),
        ("DELETE", f"{TOKENS}/abc"),
    ]:
        status, body = await harness.request(method, path, user, json={} if method in ("POST", "PUT") else None)
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", (method, path)
        status, body = await harness.request(method, path)
        assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"


async def test_create_tokens(harness: Harness) -> None:
    admin = await admin_user(harness)
    status, body = await harness.request("POST", f"{TOKENS}/new", admin, json={})
    assert status == 200
    assert len(body["token"]) == 16
    assert {k: v for k, v in body.items() if k != "token"} == {
        "uses_allowed": None,
        "pending": 0,
        "completed": 0,
        "expiry_time": None,
    }
    status, body = await harness.request("POST", f"{TOKENS}/new", admin, json={"length": 40, "uses_allowed": 3})
    assert status == 200 and len(body["token"]) == 40 and body["uses_allowed"] == 3
    expiry = int(time.time() * 1000) + 3_600_000
    status, body = await harness.request(
        "POST", f"{TOKENS}/new", admin, json={"token": "welcome-2026", "uses_allowed": 1, "expiry_time": expiry}
    )
    assert status == 200
    assert body == {"token": "welcome-2026", "uses_allowed": 1, "pending": 0, "completed": 0, "expiry_time": expiry}
    resp = await harness.client.post(f"{TOKENS}/new", headers=admin.headers)  # no body at all is {}
    assert resp.status == 200
    # generated tokens never start with "-" (a command line would read one as an option): 1 in 32
    # did, so 150 tokens would have shown one with a probability of 1 - (31/32)^150 > 99%
    firsts = set()
    for _ in range(150):
        status, body = await harness.request("POST", f"{TOKENS}/new", admin, json={"length": 3})
        assert status == 200
        firsts.add(body["token"][0])
    assert "-" not in firsts and len(firsts) > 20
    # and a length that has run out is a clear error, not a server looping for ever
    for _ in range(63):  # 62 tokens of length 1 exist at most: one of these must be refused
        status, body = await harness.request("POST", f"{TOKENS}/new", admin, json={"length": 1})
        if status != 200:
            break
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM") and "longer" in body["error"]


async def test_create_token_validation(harness: Harness) -> None:
    admin = await admin_user(harness)
    await harness.request("POST", f"{TOKENS}/new", admin, json={"token": "exists"})
    for body in [
        {"token": "exists"},
        {"token": "has space"},
        {"token": "x" * 65},
        {"token": ""},
        {"token": 5},
        {"length": 0},
        {"length": 65},
        {"length": "16"},
        {"uses_allowed": -1},
        {"uses_allowed": 1.5},
        {"uses_allowed": True},
        {"expiry_time": 1000},
        {"expiry_time": "tomorrow"},
    ]:
        status, answer = await harness.request("POST", f"{TOKENS}/new", admin, json=body)
        assert status == 400 and answer["errcode"] == "M_INVALID_PARAM", (body, answer)
    status, answer = await harness.request("POST", f"{TOKENS}/new", admin, json=[1])
    assert status == 400 and answer["errcode"] == "M_BAD_JSON"


@pytest.mark.parametrize("harness", [{"registration": "token", **NO_LIMITS}], indirect=True)
async def test_list_get_update_delete(harness: Harness) -> None:
    admin = await admin_user(harness)
    for body in [{"token": "fresh"}, {"token": "spent", "uses_allowed": 1}, {"token": "zero", "uses_allowed": 0}]:
        assert (await harness.request("POST", f"{TOKENS}/new", admin, json=body))[0] == 200
    assert (await register_with_token(harness, "newbie", "spent"))[0] == 200

    status, body = await harness.request("GET", TOKENS, admin)
    assert status == 200
    assert sorted(t["token"] for t in body["registration_tokens"]) == ["fresh", "spent", "zero"]
    status, body = await harness.request("GET", f"{TOKENS}?valid=true", admin)
    assert [t["token"] for t in body["registration_tokens"]] == ["fresh"]
    status, body = await harness.request("GET", f"{TOKENS}?valid=false", admin)
    assert sorted(t["token"] for t in body["registration_tokens"]) == ["spent", "zero"]
    status, body = await harness.request("GET", f"{TOKENS}?valid=maybe", admin)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"

    status, body = await harness.request("GET", f"{TOKENS}/spent", admin)
    assert status == 200
    assert body == {"token": "spent", "uses_allowed": 1, "pending": 0, "completed": 1, "expiry_time": None}
    status, body = await harness.request("GET", f"{TOKENS}/missing", admin)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"

    expiry = int(time.time() * 1000) + 86_400_000
    status, body = await harness.request(
        "PUT", f"{TOKENS}/spent", admin, json={"uses_allowed": 5, "expiry_time": expiry}
    )
    assert status == 200 and body["uses_allowed"] == 5 and body["expiry_time"] == expiry and body["completed"] == 1
    status, body = await harness.request("PUT", f"{TOKENS}/spent", admin, json={"uses_allowed": None})
    assert status == 200 and body["uses_allowed"] is None and body["expiry_time"] == expiry  # omitted: unchanged
    status, body = await harness.request("PUT", f"{TOKENS}/spent", admin, json={"expiry_time": None})
    assert status == 200 and body["expiry_time"] is None
    status, body = await harness.request("PUT", f"{TOKENS}/spent", admin, json={"uses_allowed": -2})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("PUT", f"{TOKENS}/spent", admin, json={"expiry_time": 5})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("PUT", f"{TOKENS}/missing", admin, json={"uses_allowed": 1})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    # the token "zero" made usable by an update
    assert (await harness.request("PUT", f"{TOKENS}/zero", admin, json={"uses_allowed": 1}))[0] == 200
    assert (await register_with_token(harness, "second", "zero"))[0] == 200

    status, body = await harness.request("DELETE", f"{TOKENS}/fresh", admin)
    assert status == 200 and body == {}
    status, body = await harness.request("DELETE", f"{TOKENS}/fresh", admin)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await register_with_token(harness, "toolate", "fresh")
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"


async def test_admin_status_follows_the_account(harness: Harness) -> None:
    status, body = await shared_secret_register(harness, "chief", admin=True)
    assert status == 200
    status, listed = await harness.request("GET", TOKENS, headers=bearer(body["access_token"]))
    assert status == 200 and listed == {"registration_tokens": []}
