"""Admin lock/suspend/whois, login tokens, OpenID tokens, and the support well-known."""

from __future__ import annotations

import pytest

from .conftest import Harness, User


async def _uia(harness: Harness, method: str, path: str, user: User, body: dict) -> tuple[int, dict]:  # type: ignore[type-arg]
    status, challenge = await harness.request(method, path, user, json=body)
    assert status == 401 and "session" in challenge
    auth = {
        "type": "m.login.password",
        "session": challenge["session"],
        "password": "correct horse",
        "identifier": {"type": "m.id.user", "user": user.user_id},
    }
    return await harness.request(method, path, user, json={**body, "auth": auth})


async def test_lock_needs_an_admin_and_locks_out(harness: Harness) -> None:
    admin = await harness.user("admin", admin=True)
    alice, bob = await harness.user("alice"), await harness.user("bob")
    path = f"/_matrix/client/v1/admin/lock/{alice.user_id}"
    status, body = await harness.request("PUT", path, bob, json={"locked": True})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # authorisation comes before the lookup: no user enumeration
    status, body = await harness.request("GET", "/_matrix/client/v1/admin/lock/@nobody:hs.test", bob)
    assert status == 403
    status, body = await harness.request("GET", "/_matrix/client/v1/admin/lock/@nobody:hs.test", admin)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", "/_matrix/client/v1/admin/lock/@x:elsewhere", admin)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request(
        "PUT", f"/_matrix/client/v1/admin/lock/{admin.user_id}", admin, json={"locked": True}
    )
    assert status == 403  # not your own account

    status, body = await harness.request("PUT", path, admin, json={"locked": True})
    assert status == 200 and body == {"locked": True}
    status, body = await harness.request("GET", path, admin)
    assert body == {"locked": True}
    status, body = await harness.request("GET", "account/whoami", alice)
    assert status == 401 and body["errcode"] == "M_USER_LOCKED" and body["soft_logout"] is True
    status, _ = await harness.request("POST", "logout", alice, json={})
    assert status == 200  # spec: a locked account may still log out
    await harness.request("PUT", path, admin, json={"locked": False})


async def test_suspended_users_read_but_do_not_act(harness: Harness) -> None:
    admin = await harness.user("admin", admin=True)
    alice, bob = await harness.user("alice"), await harness.user("bob")
    status, created = await harness.request("POST", "createRoom", bob, json={"preset": "public_chat"})
    room_id = created["room_id"]
    await harness.request("POST", f"rooms/{room_id}/join", alice, json={})
    status, sent = await harness.request(
        "PUT", f"rooms/{room_id}/send/m.room.message/t1", alice, json={"msgtype": "m.text", "body": "before"}
    )
    own_event = sent["event_id"]
    path = f"/_matrix/client/v1/admin/suspend/{alice.user_id}"
    status, body = await harness.request("PUT", path, admin, json={"suspended": True})
    assert status == 200 and body == {"suspended": True}

    status, body = await harness.request(
        "PUT", f"rooms/{room_id}/send/m.room.message/t2", alice, json={"msgtype": "m.text", "body": "during"}
    )
    assert status == 403 and body["errcode"] == "M_USER_SUSPENDED"
    status, body = await harness.request("POST", "createRoom", alice, json={})
    assert status == 403 and body["errcode"] == "M_USER_SUSPENDED"
    status, body = await harness.request(
        "PUT", f"profile/{alice.user_id}/displayname", alice, json={"displayname": "x"}
    )
    assert status == 403 and body["errcode"] == "M_USER_SUSPENDED"
    # reading and redacting one's own events still work
    status, _ = await harness.request("GET", f"rooms/{room_id}/messages?dir=b", alice)
    assert status == 200
    status, _ = await harness.request("PUT", f"rooms/{room_id}/redact/{own_event}/r1", alice, json={})
    assert status == 200
    status, _ = await harness.request("POST", f"rooms/{room_id}/leave", alice, json={})
    assert status == 200
    status, body = await harness.request("PUT", path, admin, json={"suspended": False})
    status, _ = await harness.request("POST", f"rooms/{room_id}/join", alice, json={})
    assert status == 200


async def test_capabilities_show_moderation_to_admins_only(harness: Harness) -> None:
    admin, alice = await harness.user("admin", admin=True), await harness.user("alice")
    _, caps = await harness.request("GET", "capabilities", admin)
    assert caps["capabilities"]["m.account_moderation"] == {"lock": True, "suspend": True}
    _, caps = await harness.request("GET", "capabilities", alice)
    assert "m.account_moderation" not in caps["capabilities"]
    assert caps["capabilities"]["m.get_login_token"] == {"enabled": True}


async def test_whois(harness: Harness) -> None:
    admin, alice, bob = await harness.user("admin", admin=True), await harness.user("alice"), await harness.user("bob")
    status, body = await harness.request("GET", f"admin/whois/{alice.user_id}", admin)
    assert status == 200 and body["user_id"] == alice.user_id and alice.device_id in body["devices"]
    status, body = await harness.request("GET", f"admin/whois/{alice.user_id}", alice)
    assert status == 200
    status, body = await harness.request("GET", f"admin/whois/{alice.user_id}", bob)
    assert status == 403


async def test_login_token_logs_a_new_device_in_once(harness: Harness) -> None:
    alice = await harness.user("alice")
    _, flows = await harness.request("GET", "login")
    assert {"type": "m.login.token", "get_login_token": True} in flows["flows"]
    status, body = await _uia(harness, "POST", "/_matrix/client/v1/login/get_token", alice, {})
    assert status == 200 and body["expires_in_ms"] > 0
    token = body["login_token"]
    status, body = await harness.request("POST", "login", json={"type": "m.login.token", "token": token})
    assert status == 200 and body["user_id"] == alice.user_id and body["device_id"] != alice.device_id
    status, body = await harness.request("POST", "login", json={"type": "m.login.token", "token": token})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"  # single use


async def test_openid_token(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    status, body = await harness.request("POST", f"user/{alice.user_id}/openid/request_token", alice, json={})
    assert status == 200 and body["token_type"] == "Bearer" and body["matrix_server_name"] == "hs.test"
    assert harness.hs.db.openid.get(body["access_token"])[0] == alice.user_id
    status, body = await harness.request("POST", f"user/{alice.user_id}/openid/request_token", bob, json={})
    assert status == 403


@pytest.mark.parametrize(
    "harness",
    [{"support_page": "https://help.example", "support_contacts": [{"matrix_id": "@admin:hs.test"}]}],
    indirect=True,
)
async def test_support_well_known_configured(harness: Harness) -> None:
    status, body = await harness.request("GET", "/.well-known/matrix/support")
    assert status == 200 and body["support_page"] == "https://help.example"
    assert body["contacts"] == [{"role": "m.role.admin", "matrix_id": "@admin:hs.test"}]


@pytest.mark.parametrize("harness", [{"oauth": {"enabled": False}}], indirect=True)  # OAuth offers m.login.sso
async def test_support_well_known_unconfigured_and_sso_absent(harness: Harness) -> None:
    status, body = await harness.request("GET", "/.well-known/matrix/support")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", "login/sso/redirect?redirectUrl=http://x")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
