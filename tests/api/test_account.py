"""whoami, password change, deactivation, third-party identifier endpoints."""

from __future__ import annotations

import pytest

from homeserver.rooms.creation import RoomCreation, create_room

from .auth_helpers import NO_LIMITS, PASSWORD, bearer, login, password_auth, with_password
from .conftest import Harness


async def test_whoami(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("GET", "account/whoami", alice)
    assert status == 200
    assert body == {"user_id": "@alice:hs.test", "device_id": alice.device_id, "is_guest": False}
    status, body = await harness.request("GET", f"account/whoami?access_token={alice.access_token}")
    assert status == 200 and body["user_id"] == "@alice:hs.test"
    status, body = await harness.request("GET", "account/whoami")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    status, body = await harness.request("GET", "account/whoami", headers=bearer("mat_bogus"))
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"


# -- password ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_change_password_logs_out_other_devices(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    _, other = await login(harness, "alice")
    status, body = await with_password(harness, "POST", "account/password", alice, {"new_password": "new secret"})
    assert status == 200 and body == {}
    # spec: the caller's token survives; logout_devices defaults to true for the others
    assert (await harness.request("GET", "account/whoami", alice))[0] == 200
    assert (await harness.request("GET", "account/whoami", headers=bearer(other["access_token"])))[0] == 401
    assert (await login(harness, "alice"))[0] == 403
    assert (await login(harness, "alice", password="new secret"))[0] == 200


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_change_password_keeping_devices(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    _, other = await login(harness, "alice")
    status, _ = await with_password(
        harness, "POST", "account/password", alice, {"new_password": "new secret", "logout_devices": False}
    )
    assert status == 200
    assert (await harness.request("GET", "account/whoami", headers=bearer(other["access_token"])))[0] == 200


async def test_change_password_wrong_password(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    status, first = await harness.request("POST", "account/password", alice, json={"new_password": "x1"})
    assert status == 401 and first["flows"] == [{"stages": ["m.login.password"]}] and "errcode" not in first
    auth = password_auth(alice.user_id, "wrong", first["session"])
    status, body = await harness.request("POST", "account/password", alice, json={"new_password": "x1", "auth": auth})
    # spec: a failed stage is a 401 with errcode plus the UIA fields, and the session goes on
    assert status == 401
    assert body["errcode"] == "M_FORBIDDEN" and body["error"]
    assert body["flows"] == [{"stages": ["m.login.password"]}] and body["session"] == first["session"]
    assert body.get("completed", []) == []
    auth = password_auth(alice.user_id, PASSWORD, first["session"])
    status, body = await harness.request("POST", "account/password", alice, json={"new_password": "x1", "auth": auth})
    assert status == 200


async def test_password_stage_only_for_yourself(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    await harness.user("bob", password="bobs password")
    status, first = await harness.request("POST", "account/password", alice, json={"new_password": "x1"})
    auth = password_auth("@bob:hs.test", "bobs password", first["session"])
    status, body = await harness.request("POST", "account/password", alice, json={"new_password": "x1", "auth": auth})
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"
    # without an identifier the session's user is meant
    auth = {"type": "m.login.password", "password": PASSWORD, "session": first["session"]}
    status, body = await harness.request("POST", "account/password", alice, json={"new_password": "x1", "auth": auth})
    assert status == 200


async def test_change_password_without_access_token(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    status, _ = await with_password(
        harness, "POST", "account/password", None, {"new_password": "forgotten no more", "_user_id": "@alice:hs.test"}
    )
    assert status == 200
    # no token was given, so every device is logged out
    assert (await harness.request("GET", "account/whoami", alice))[0] == 401
    assert (await login(harness, "alice", password="forgotten no more"))[0] == 200


async def test_change_password_bad_bodies(harness: Harness) -> None:
    alice = await harness.user("alice")
    for body, errcode in [
        ({}, "M_MISSING_PARAM"),
        ({"new_password": 5}, "M_BAD_JSON"),
        ({"new_password": ""}, "M_WEAK_PASSWORD"),
        ({"new_password": "ok", "logout_devices": "no"}, "M_BAD_JSON"),
        ({"new_password": "ok", "auth": []}, "M_BAD_JSON"),
    ]:
        status, answer = await harness.request("POST", "account/password", alice, json=body)
        assert status == 400 and answer["errcode"] == errcode, (body, answer)


async def test_session_is_bound_to_its_request(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    status, first = await harness.request("POST", "account/password", alice, json={"new_password": "x1"})
    auth = password_auth(alice.user_id, PASSWORD, first["session"])
    status, body = await harness.request("POST", "account/deactivate", alice, json={"auth": auth})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert harness.hs.accounts.account(alice.user_id)["deactivated"] is False  # type: ignore[index]


# -- deactivation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_deactivate(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    bob = await harness.user("bob")
    room_id = await create_room(harness.hs.pipeline, RoomCreation(creator=alice.user_id, room_version="11"))
    status, body = await with_password(harness, "POST", "account/deactivate", alice, {"erase": False})
    assert status == 200 and body == {"id_server_unbind_result": "success"}
    assert (await harness.request("GET", "account/whoami", alice))[0] == 401
    status, err = await login(harness, "alice")
    assert status == 403 and err["errcode"] == "M_USER_DEACTIVATED"
    # the user id is never handed out again
    status, err = await harness.request("GET", "register/available?username=alice")
    assert status == 400 and err["errcode"] == "M_USER_IN_USE"
    room = harness.hs.db.ids.room(room_id)
    assert room is not None
    membership = harness.hs.db.rooms.user_room(alice.user_id, room)
    assert membership is not None and membership.membership == "leave"
    assert list(harness.hs.accounts.devices(alice.user_id)) == []
    assert (await harness.request("GET", "account/whoami", bob))[0] == 200


async def test_deactivate_needs_auth_and_a_valid_body(harness: Harness) -> None:
    alice = await harness.user("alice", password=PASSWORD)
    status, body = await harness.request("POST", "account/deactivate", alice, json={})
    assert status == 401 and body["flows"] == [{"stages": ["m.login.password"]}]
    status, body = await harness.request("POST", "account/deactivate", alice, json={"erase": "yes"})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    status, body = await harness.request(
        "POST", "account/deactivate", alice, json={"auth": {"type": "m.login.dummy", "session": "x"}}
    )
    assert status == 401 and body["errcode"] in ("M_UNKNOWN", "M_FORBIDDEN")
    status, body = await harness.request("POST", "account/deactivate", alice, json={"auth": {"type": "m.login.dummy"}})
    assert status == 401 and body["errcode"] == "M_FORBIDDEN"  # dummy is not a flow here
    assert harness.hs.accounts.account(alice.user_id)["deactivated"] is False  # type: ignore[index]


async def test_deactivate_without_access_token(harness: Harness) -> None:
    await harness.user("alice", password=PASSWORD)
    status, _ = await with_password(harness, "POST", "account/deactivate", None, {"_user_id": "alice"})
    assert status == 200
    assert harness.hs.accounts.account("@alice:hs.test")["deactivated"] is True  # type: ignore[index]


# -- third-party identifiers ----------------------------------------------------------------------------


async def test_threepid_endpoints(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("GET", "account/3pid", alice)
    assert status == 200 and body == {"threepids": []}
    assert (await harness.request("GET", "account/3pid"))[0] == 401
    creds = {"client_secret": "s", "id_server": "id.example", "id_access_token": "t", "sid": "1"}
    cases = [
        ("account/3pid", {"three_pid_creds": creds}, 403, "M_THREEPID_AUTH_FAILED"),
        ("account/3pid", {}, 400, "M_MISSING_PARAM"),
        ("account/3pid/add", {"client_secret": "s", "sid": "1"}, 400, "M_THREEPID_AUTH_FAILED"),
        ("account/3pid/add", {"sid": "1"}, 400, "M_MISSING_PARAM"),
        ("account/3pid/bind", creds, 400, "M_SERVER_NOT_TRUSTED"),
        ("account/3pid/delete", {"medium": "fax", "address": "1"}, 400, "M_BAD_JSON"),
        ("account/3pid/unbind", {"medium": "email"}, 400, "M_MISSING_PARAM"),
        (
            "account/3pid/email/requestToken",
            {"client_secret": "s", "email": "a@b.c", "send_attempt": 1},
            400,
            "M_THREEPID_MEDIUM_NOT_SUPPORTED",
        ),
        (
            "account/3pid/msisdn/requestToken",
            {"client_secret": "s", "country": "GB", "phone_number": "1", "send_attempt": 1},
            400,
            "M_THREEPID_MEDIUM_NOT_SUPPORTED",
        ),
        (
            "account/password/email/requestToken",
            {"client_secret": "s", "email": "a@b.c", "send_attempt": 1},
            400,
            "M_THREEPID_NOT_FOUND",
        ),
        (
            "account/password/msisdn/requestToken",
            {"client_secret": "s", "country": "GB", "phone_number": "1", "send_attempt": "1"},
            400,
            "M_BAD_JSON",
        ),
    ]
    for path, body, want, errcode in cases:
        status, answer = await harness.request("POST", path, alice, json=body)
        assert (status, answer.get("errcode")) == (want, errcode), (path, body, answer)
    for path in ("account/3pid/delete", "account/3pid/unbind"):
        status, answer = await harness.request("POST", path, alice, json={"medium": "email", "address": "a@b.c"})
        assert status == 200 and answer == {"id_server_unbind_result": "no-support"}


async def test_uia_require_for_other_endpoints(harness: Harness) -> None:
    """`hs.auth.require` lets any endpoint ask for the password again (e.g. replacing cross-signing keys)."""
    from aiohttp.test_utils import make_mocked_request

    from homeserver.auth.uia import AuthRequired
    from homeserver.errors import MatrixError

    alice = await harness.user("alice", password=PASSWORD)
    requester = harness.hs.tokens.lookup(alice.access_token)
    request = make_mocked_request("POST", "/_matrix/client/v3/keys/device_signing/upload")
    with pytest.raises(AuthRequired) as needed:
        await harness.hs.auth.require(request, requester, {}, "replace your cross-signing keys")
    session = needed.value.to_json()["session"]
    with pytest.raises(MatrixError) as failed:
        await harness.hs.auth.require(
            request, requester, {"auth": password_auth(alice.user_id, "wrong", session)}, "replace keys"
        )
    assert failed.value.status == 401 and failed.value.errcode == "M_FORBIDDEN"
    await harness.hs.auth.require(request, requester, {"auth": password_auth(alice.user_id, PASSWORD, session)}, "x")
