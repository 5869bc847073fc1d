"""End-to-end encryption across our server and a real Synapse, with matrix-nio (vodozemac) on both sides.

spec: server-server-api "Device Management", "End-to-End Encryption", "Send-to-device messaging".
A user on each server, each with a real Olm machine, in an encrypted room: each finds the other's
devices through its own server's `/keys/query` (answered over federation), claims a one-time key
through `/keys/claim`, sends the room key as an Olm-encrypted to-device message (an
`m.direct_to_device` EDU), and decrypts the other's messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .server import RunningServer, http_json
from .test_e2ee_nio import (
    create_encrypted_room,
    decrypted_text,
    encrypted_client,
    join_when_invited,
    members_joined,
    send_encrypted,
    sync_until,
)

pytestmark = pytest.mark.asyncio


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


async def test_unreachable_server_is_a_failure(ours: RunningServer, tmp_path: Path) -> None:
    async with encrypted_client(ours, tmp_path, "carol") as carol:
        body: dict[str, Any] = {"device_keys": {"@x:127.0.0.1:1": []}, "timeout": 2000}
        answer = http_json("POST", f"{ours.base_url}/_matrix/client/v3/keys/query", body, carol.access_token)
        assert "127.0.0.1:1" in answer["failures"]
