"""The m.login.registration_token stage, the validity endpoint, pending/completed counts, races, and
the first account's admin token."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from homeserver.server import HomeServer

from .auth_helpers import NO_LIMITS, PASSWORD, bearer, register, register_with_token
from .conftest import Harness, make_config

TOKEN_MODE: dict[str, Any] = {"registration": "token", **NO_LIMITS}
VALIDITY = "/_matrix/client/v1/register/m.login.registration_token/validity"
ADMIN_TOKENS = "/_synapse/admin/v1/registration_tokens"


async def new_token(h: Harness, **fields: Any) -> str:
    record = await h.hs.registration_tokens.create(fields.pop("token", None), **fields)
    return str(record["token"])


def counts(h: Harness, token: str) -> tuple[int, int]:
    record = h.hs.registration_tokens.get(token)
    assert record is not None
    rendered = h.hs.registration_tokens.render(token, record)
    return rendered["pending"], rendered["completed"]


@pytest.mark.parametrize("harness", [TOKEN_MODE], indirect=True)
async def test_token_registration_counts_pending_then_completed(harness: Harness) -> None:
    token = await new_token(harness, uses_allowed=2)
    status, first = await harness.request("POST", "register", json={"username": "ann", "password": PASSWORD})
    assert status == 401 and first["flows"] == [{"stages": ["m.login.registration_token", "m.login.dummy"]}]
    assert counts(harness, token) == (0, 0)
    auth = {"type": "m.login.registration_token", "token": token, "session": first["session"]}
    status, body = await harness.request(
        "POST", "register", json={"username": "ann", "password": PASSWORD, "auth": auth}
    )
    assert status == 401 and body["completed"] == ["m.login.registration_token"]
    assert counts(harness, token) == (1, 0)  # the session holds a use while it finishes
    status, body = await harness.request(
        "POST", "register", json={"auth": {"type": "m.login.dummy", "session": first["session"]}}
    )
    assert status == 200, body
    assert body["user_id"] == "@ann:hs.test"
    assert counts(harness, token) == (0, 1)
    status, ok = await harness.request("GET", f"{VALIDITY}?token={token}")
    assert status == 200 and ok == {"valid": True}
    assert (await register_with_token(harness, "ben", token))[0] == 200
    assert counts(harness, token) == (0, 2)
    status, ok = await harness.request("GET", f"{VALIDITY}?token={token}")
    assert status == 200 and ok == {"valid": False}
    status, body = await register_with_token(harness, "cat", token)
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    assert body["flows"] and body["session"] and "completed" not in body
    assert not harness.hs.accounts.exists("@cat:hs.test")


@pytest.mark.parametrize("harness", [TOKEN_MODE], indirect=True)
async def test_pending_use_blocks_a_one_use_token_until_the_session_expires(harness: Harness) -> None:
    now = [2_000_000.0]
    harness.hs.uia.clock = lambda: now[0]
    harness.hs.registration_tokens.clock = lambda: now[0]
    token = await new_token(harness, uses_allowed=1)
    # someone passes the token stage but never finishes: the name was taken while they authenticated
    # (the session remembers the username, so the stage request does not repeat it)
    status, first = await harness.request("POST", "register", json={"username": "slow", "password": PASSWORD})
    auth = {"type": "m.login.registration_token", "token": token, "session": first["session"]}
    await harness.hs.accounts.create("slow", PASSWORD)
    status, body = await harness.request("POST", "register", json={"auth": auth})
    assert status == 401 and body["completed"] == ["m.login.registration_token"]
    dummy = {"type": "m.login.dummy", "session": first["session"]}
    status, body = await harness.request("POST", "register", json={"auth": dummy})
    assert status == 400 and body["errcode"] == "M_USER_IN_USE"
    assert counts(harness, token) == (1, 0)
    assert (await harness.request("GET", f"{VALIDITY}?token={token}"))[1] == {"valid": False}
    status, body = await register_with_token(harness, "other", token)
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    # the same session may finish with another name: the stage is already complete
    status, body = await harness.request(
        "POST", "register", json={"username": "slow2", "password": PASSWORD, "auth": {"session": first["session"]}}
    )
    assert status == 200 and body["user_id"] == "@slow2:hs.test"
    assert counts(harness, token) == (0, 1)

    token2 = await new_token(harness, uses_allowed=1)
    status, first = await harness.request("POST", "register", json={"username": "gone", "password": PASSWORD})
    auth = {"type": "m.login.registration_token", "token": token2, "session": first["session"]}
    await harness.hs.accounts.create("gone", PASSWORD)
    assert (await harness.request("POST", "register", json={"auth": auth}))[0] == 401
    dummy = {"type": "m.login.dummy", "session": first["session"]}
    assert (await harness.request("POST", "register", json={"auth": dummy}))[0] == 400
    assert counts(harness, token2) == (1, 0)
    now[0] += 31 * 60  # the session and its reservation run out
    assert counts(harness, token2) == (0, 0)
    assert (await register_with_token(harness, "finally", token2))[0] == 200


@pytest.mark.parametrize("harness", [TOKEN_MODE], indirect=True)
async def test_expired_and_unknown_tokens(harness: Harness) -> None:
    now = [3_000_000.0]
    harness.hs.registration_tokens.clock = lambda: now[0]
    token = await new_token(harness, expiry_time=int(now[0] * 1000) + 60_000)
    assert (await harness.request("GET", f"{VALIDITY}?token={token}"))[1] == {"valid": True}
    now[0] += 61
    assert (await harness.request("GET", f"{VALIDITY}?token={token}"))[1] == {"valid": False}
    status, body = await register_with_token(harness, "tardy", token)
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    for bad in ("nope", "has%20space", "x" * 65):
        status, body = await harness.request("GET", f"{VALIDITY}?token={bad}")
        assert status == 200 and body == {"valid": False}
    status, body = await harness.request("GET", VALIDITY)
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    status, body = await harness.request(
        "POST", "register", json={"username": "t", "password": PASSWORD, "auth": {"type": "m.login.registration_token"}}
    )
    assert status == 401 and body["errcode"] == "M_MISSING_PARAM" and body["flows"]


@pytest.mark.parametrize(
    "harness",
    [{"registration": "token", "rate_limits": {"registration": {"per_second": 0.01, "burst": 3}}}],
    indirect=True,
)
async def test_validity_is_rate_limited(harness: Harness) -> None:
    for _ in range(3):
        assert (await harness.request("GET", f"{VALIDITY}?token=guess"))[0] == 200
    status, body = await harness.request("GET", f"{VALIDITY}?token=guess")
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"


@pytest.mark.parametrize("harness", [TOKEN_MODE], indirect=True)
async def test_deleted_token_cannot_finish(harness: Harness) -> None:
    token = await new_token(harness, uses_allowed=1)
    status, first = await harness.request("POST", "register", json={"username": "dee", "password": PASSWORD})
    await harness.hs.accounts.create("dee", PASSWORD)
    auth = {"type": "m.login.registration_token", "token": token, "session": first["session"]}
    assert (await harness.request("POST", "register", json={"auth": auth}))[0] == 401
    dummy = {"type": "m.login.dummy", "session": first["session"]}
    assert (await harness.request("POST", "register", json={"auth": dummy}))[0] == 400
    await harness.hs.registration_tokens.delete(token)
    status, body = await harness.request(
        "POST", "register", json={"username": "dee2", "password": PASSWORD, "auth": {"session": first["session"]}}
    )
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert not harness.hs.accounts.exists("@dee2:hs.test")


@pytest.mark.parametrize("fsync", [False, True])
async def test_parallel_registrations_with_a_one_use_token(tmp_path: Any, fsync: bool) -> None:
    """N clients race one single-use token: exactly one account is made, and the counts add up."""
    from aiohttp.test_utils import TestClient, TestServer

    hs = HomeServer(make_config(tmp_path, registration="token", fsync=fsync, rate_limits={"enabled": False}))
    client = TestClient(TestServer(hs.build_app()))
    await client.start_server()
    try:
        h = Harness(hs, client)
        token = await new_token(h, uses_allowed=1)
        results = await asyncio.gather(*(register_with_token(h, f"racer{i}", token) for i in range(12)))
        winners = [b for s, b in results if s == 200]
        assert len(winners) == 1, results
        assert all(s == 401 and b["errcode"] == "M_FORBIDDEN" for s, b in results if s != 200)
        assert counts(h, token) == (0, 1)
        made = [u for u, _ in hs.db.accounts.accounts()]
        assert made == [winners[0]["user_id"]]
    finally:
        await client.close()


@pytest.mark.parametrize("harness", [{"registration": "open", **NO_LIMITS}], indirect=True)
async def test_open_mode_accepts_tokens_too(harness: Harness) -> None:
    token = await new_token(harness, uses_allowed=1)
    assert (await register_with_token(harness, "viatoken", token))[0] == 200
    assert counts(harness, token) == (0, 1)
    assert (await register(harness, "viadummy"))[0] == 200


# -- the first account ---------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", [TOKEN_MODE], indirect=True)
async def test_first_account_token_makes_an_admin(harness: Harness) -> None:
    notice = await harness.hs.registration.first_account_notice("http://example.test")
    assert notice is not None
    token = next(line.strip() for line in notice.splitlines() if line.startswith("      "))
    # the same token is shown again until it is used
    again = await harness.hs.registration.first_account_notice("http://example.test")
    assert again is not None and token in again
    status, body = await register_with_token(harness, "root", token)
    assert status == 200, body
    account = harness.hs.accounts.account("@root:hs.test")
    assert account is not None and account["admin"] is True
    assert await harness.hs.registration.first_account_notice("http://example.test") is None
    # the new admin can use the admin API at once
    status, listed = await harness.request("GET", ADMIN_TOKENS, headers=bearer(body["access_token"]))
    assert status == 200
    assert listed["registration_tokens"] == [
        {"token": token, "uses_allowed": 1, "pending": 0, "completed": 1, "expiry_time": None}
    ]
    # an ordinary token does not make admins
    plain = await new_token(harness, uses_allowed=1)
    assert (await register_with_token(harness, "pleb", plain))[0] == 200
    account = harness.hs.accounts.account("@pleb:hs.test")
    assert account is not None and account["admin"] is False


@pytest.mark.parametrize("harness", [{"registration": "closed", **NO_LIMITS}], indirect=True)
async def test_closed_server_still_takes_the_first_account_token(harness: Harness) -> None:
    notice = await harness.hs.registration.first_account_notice("http://example.test")
    assert notice is not None
    token = next(line.strip() for line in notice.splitlines() if line.startswith("      "))
    plain = await new_token(harness, uses_allowed=5)
    status, body = await harness.request("POST", "register", json={})
    assert status == 401 and body["flows"] == [{"stages": ["m.login.registration_token", "m.login.dummy"]}]
    assert (await harness.request("GET", f"{VALIDITY}?token={plain}"))[1] == {"valid": False}
    status, body = await register_with_token(harness, "notfirst", plain)
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    assert (await register_with_token(harness, "first", token))[0] == 200
    status, body = await harness.request("POST", "register", json={})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


@pytest.mark.parametrize("harness", [{"registration": "open", **NO_LIMITS}], indirect=True)
async def test_first_account_token_dies_when_someone_else_was_first(harness: Harness) -> None:
    notice = await harness.hs.registration.first_account_notice("http://example.test")
    assert notice is not None
    token = next(line.strip() for line in notice.splitlines() if line.startswith("      "))
    assert (await harness.request("GET", f"{VALIDITY}?token={token}"))[1] == {"valid": True}
    assert (await register(harness, "early"))[0] == 200  # open registration: someone came first
    assert (await harness.request("GET", f"{VALIDITY}?token={token}"))[1] == {"valid": False}
    status, body = await register_with_token(harness, "late", token)
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    # the next start tidies it away
    assert await harness.hs.registration.first_account_notice("http://example.test") is None
    assert harness.hs.registration_tokens.get(token) is None


async def test_serve_prints_the_first_account_token(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    hs = HomeServer(make_config(tmp_path))
    try:
        notice = await hs.registration.first_account_notice("http://localhost:8008")
        assert notice is not None
        print(notice)
        out = capsys.readouterr().out
        assert "one-time registration token" in out and "server admin" in out
    finally:
        hs.close()
