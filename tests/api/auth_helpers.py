"""Small helpers shared by the registration, login, account, device and admin API tests."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from .conftest import Harness, User

PASSWORD = "correct horse battery"
NO_LIMITS: dict[str, Any] = {"rate_limits": {"enabled": False}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(
    h: Harness, username: str | None, password: str = PASSWORD, **fields: Any
) -> tuple[int, dict[str, Any]]:
    """Register in one request with `m.login.dummy` and no session (what nio does; open mode)."""
    body: dict[str, Any] = {"password": password, "auth": {"type": "m.login.dummy"}, **fields}
    if username is not None:
        body["username"] = username
    return await h.request("POST", "register", json=body)


async def register_with_token(
    h: Harness, username: str, token: str, password: str = PASSWORD
) -> tuple[int, dict[str, Any]]:
    """The Element way: a first request for the flows and a session, the token stage, then the dummy
    stage that follows it in the flow."""
    status, body = await h.request("POST", "register", json={"username": username, "password": password})
    assert status == 401, body
    session = body["session"]
    auth = {"type": "m.login.registration_token", "token": token, "session": session}
    status, body = await h.request("POST", "register", json={"username": username, "password": password, "auth": auth})
    if status != 401 or body.get("completed") != ["m.login.registration_token"]:
        return status, body
    dummy = {"type": "m.login.dummy", "session": session}
    return await h.request("POST", "register", json={"username": username, "password": password, "auth": dummy})


async def login(h: Harness, user: str, password: str = PASSWORD, **fields: Any) -> tuple[int, dict[str, Any]]:
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password}
    return await h.request("POST", "login", json={**body, **fields})


def as_user(body: dict[str, Any]) -> User:
    return User(body["user_id"], body["device_id"], body["access_token"])


def password_auth(user_id: str, password: str, session: str | None = None) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user_id},
        "password": password,
    }
    if session is not None:
        auth["session"] = session
    return auth


async def with_password(
    h: Harness, method: str, path: str, user: User | None, body: dict[str, Any], password: str = PASSWORD
) -> tuple[int, Any]:
    """Run a UIA-protected request the way clients do: first without auth (expect the 401), then with
    `m.login.password` and the session."""
    status, first = await h.request(method, path, user, json=body)
    assert status == 401, first
    assert first["flows"] == [{"stages": ["m.login.password"]}]
    assert "errcode" not in first
    user_id = user.user_id if user is not None else body["_user_id"]
    clean = {k: v for k, v in body.items() if k != "_user_id"}
    auth = password_auth(user_id, password, first["session"])
    return await h.request(method, path, user, json={**clean, "auth": auth})


def shared_secret_mac(
    secret: str, nonce: str, user: str, password: str, admin: bool, user_type: str | None = None
) -> str:
    parts = [nonce, user, password, "admin" if admin else "notadmin"]
    if user_type:
        parts.append(user_type)
    return hmac.new(secret.encode(), "\x00".join(parts).encode(), hashlib.sha1).hexdigest()


async def admin_user(h: Harness, localpart: str = "admin") -> User:
    return await h.user(localpart, password=PASSWORD, admin=True)
