"""matrix-nio against a real server: registering with a registration token (the server's default
mode), and notification counts from push rules that a read receipt clears."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from pathlib import Path

import pytest
from nio import AsyncClient, AsyncClientConfig, RegisterResponse, RoomSendResponse, SyncResponse

from .server import RunningServer, http_json, start_homeserver
from .test_nio import PASSWORD, registered, shared_room, sync_until

pytestmark = pytest.mark.asyncio


@pytest.fixture
def token_server(tmp_path: Path) -> Iterator[RunningServer]:
    """A server in the default registration mode: a registration token is needed."""
    srv = start_homeserver(tmp_path / "hs", registration="token", strict_indexes=True)
    try:
        yield srv
    finally:
        srv.stop(timeout=5)


def _admin_token(server: RunningServer) -> str:
    """An admin made by shared-secret registration, as admin tools do (Synapse's documented HMAC)."""
    nonce = http_json("GET", f"{server.base_url}/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(server.shared_secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join([nonce.encode(), b"admin", b"admin password", b"admin"]))
    body = {"nonce": nonce, "username": "admin", "password": "admin password", "admin": True, "mac": mac.hexdigest()}
    return str(http_json("POST", f"{server.base_url}/_synapse/admin/v1/register", body)["access_token"])


async def test_register_with_a_one_time_registration_token(token_server: RunningServer) -> None:
    admin = _admin_token(token_server)
    made = http_json(
        "POST", f"{token_server.base_url}/_synapse/admin/v1/registration_tokens/new", {"uses_allowed": 1}, token=admin
    )
    token = made["token"]
    config = AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False)
    first, second, third = (AsyncClient(token_server.base_url, config=config) for _ in range(3))
    try:
        resp = await first.register_with_token("carol", PASSWORD, token)
        assert isinstance(resp, RegisterResponse), resp
        assert resp.user_id == f"@carol:{token_server.server_name}" and first.access_token
        again = await second.register_with_token("dave", PASSWORD, token)  # the one use is spent
        assert not isinstance(again, RegisterResponse)
        dummy = await third.register("erin", PASSWORD)  # no token at all: the server's mode refuses
        assert not isinstance(dummy, RegisterResponse)
    finally:
        for client in (first, second, third):
            await client.close()
    listed = http_json("GET", f"{token_server.base_url}/_synapse/admin/v1/registration_tokens", token=admin)
    (info,) = [t for t in listed["registration_tokens"] if t["token"] == token]
    assert info["completed"] == 1 and info["pending"] == 0


async def test_mentions_count_as_highlights_until_read(server: RunningServer) -> None:
    async with registered(server, "alice") as alice, registered(server, "bob") as bob:
        room_id = await shared_room(server, alice, bob)
        await bob.sync(timeout=0)
        for body in ("hello", "still here"):
            sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
            assert isinstance(sent, RoomSendResponse), sent
        mention = await alice.room_send(
            room_id,
            "m.room.message",
            {"msgtype": "m.text", "body": "bob: look", "m.mentions": {"user_ids": [bob.user_id]}},
        )
        assert isinstance(mention, RoomSendResponse), mention

        def counts(resp: SyncResponse) -> tuple[int, int] | None:
            room = resp.rooms.join.get(room_id)
            unread = room.unread_notifications if room else None
            if unread is None or not unread.notification_count:
                return None
            return unread.notification_count, unread.highlight_count

        notifications, highlights = await sync_until(bob, counts, "notification counts")
        assert notifications == 3 and highlights == 1
        await bob.room_read_markers(room_id, mention.event_id, mention.event_id)

        def cleared(resp: SyncResponse) -> bool:
            room = resp.rooms.join.get(room_id)
            unread = room.unread_notifications if room else None
            return unread is not None and unread.notification_count == 0 and unread.highlight_count == 0

        assert await sync_until(bob, cleared, "the counts cleared by the read receipt")
