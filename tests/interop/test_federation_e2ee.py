"""End-to-end encryption across our server and a real Synapse, with matrix-nio (vodozemac) on both sides.

spec: server-server-api "Device Management", "End-to-End Encryption", "Send-to-device messaging".
A user on each server, each with a real Olm machine, in an encrypted room: each finds the other's
devices through its own server's `/keys/query` (answered over federation), claims a one-time key
through `/keys/claim`, sends the room key as an Olm-encrypted to-device message (an
`m.direct_to_device` EDU), and decrypts the other's messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from nio import AsyncClient, AsyncClientConfig, KeysUploadResponse, LoginResponse, SyncResponse

from .server import RunningServer, http_json
from .test_e2ee_nio import (
    PASSWORD,
    create_encrypted_room,
    decrypted_text,
    encrypted_client,
    join_when_invited,
    members_joined,
    send_encrypted,
    sync_until,
)

pytestmark = pytest.mark.asyncio


@asynccontextmanager
async def another_device(
    server: RunningServer, store: Path, user: AsyncClient, name: str
) -> AsyncIterator[AsyncClient]:
    """A new device of an existing account: logged in by nio, its keys uploaded."""
    path = store / name
    path.mkdir(parents=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True, request_timeout=30)
    client = AsyncClient(server.base_url, user.user_id, store_path=str(path), config=config)
    try:
        resp = await client.login(PASSWORD, device_name=name)
        assert isinstance(resp, LoginResponse), resp
        uploaded = await client.keys_upload()
        assert isinstance(uploaded, KeysUploadResponse), uploaded
        yield client
    finally:
        await client.close()


def knows_device(client: AsyncClient, user_id: str, device_id: str) -> Any:
    def found(_: SyncResponse) -> bool:
        return device_id in client.device_store[user_id]

    return found


async def test_encrypted_room_across_servers(synapse: RunningServer, ours: RunningServer, tmp_path: Path) -> None:
    async with (
        encrypted_client(ours, tmp_path, "alice") as alice,
        encrypted_client(synapse, tmp_path, "bob") as bob,
    ):
        room_id = await create_encrypted_room(alice, [bob.user_id])
        await join_when_invited(bob, room_id)
        await members_joined(alice, room_id, [alice.user_id, bob.user_id])
        await members_joined(bob, room_id, [alice.user_id, bob.user_id])

        # our server answered alice's query for bob's keys by asking Synapse, and the other way round
        assert bob.device_id in alice.device_store[bob.user_id], "alice does not know bob's device"
        assert alice.device_id in bob.device_store[alice.user_id], "bob does not know alice's device"

        event_id = await send_encrypted(alice, room_id, "secret from our server")
        got = await sync_until(bob, decrypted_text(room_id, "secret from our server"), "alice's message decrypted")
        assert got.event_id == event_id and got.decrypted

        reply_id = await send_encrypted(bob, room_id, "secret from synapse")
        reply = await sync_until(alice, decrypted_text(room_id, "secret from synapse"), "bob's message decrypted")
        assert reply.event_id == reply_id and reply.decrypted

        # A new device on either side is noticed by the other (m.device_list_update both ways) and
        # receives the keys of new messages.
        async with (
            another_device(ours, tmp_path, alice, "alice-laptop") as alice2,
            another_device(synapse, tmp_path, bob, "bob-laptop") as bob2,
        ):
            await sync_until(bob, knows_device(bob, alice.user_id, alice2.device_id), "alice's new device")
            await sync_until(alice, knows_device(alice, bob.user_id, bob2.device_id), "bob's new device")
            await sync_until(bob2, lambda _: room_id in bob2.rooms, "the room on bob's new device")
            await sync_until(alice2, lambda _: room_id in alice2.rooms, "the room on alice's new device")
            await send_encrypted(alice, room_id, "for all of bob's devices")
            await sync_until(bob2, decrypted_text(room_id, "for all of bob's devices"), "decrypted on bob's laptop")
            await send_encrypted(bob, room_id, "for all of alice's devices")
            await sync_until(
                alice2, decrypted_text(room_id, "for all of alice's devices"), "decrypted on alice's laptop"
            )


async def test_unreachable_server_is_a_failure(ours: RunningServer, tmp_path: Path) -> None:
    async with encrypted_client(ours, tmp_path, "carol") as carol:
        body: dict[str, Any] = {"device_keys": {"@x:127.0.0.1:1": []}, "timeout": 2000}
        answer = http_json("POST", f"{ours.base_url}/_matrix/client/v3/keys/query", body, carol.access_token)
        assert "127.0.0.1:1" in answer["failures"]
