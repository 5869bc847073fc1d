"""End-to-end encryption across our server and a real Synapse, with matrix-nio (vodozemac) on both sides.

spec: server-server-api "Device Management", "End-to-End Encryption", "Send-to-device messaging".
A user on each server, each with a real Olm machine, in an encrypted room and in an encrypted direct
chat: each finds the other's devices through its own server's `/keys/query` (answered over
federation), claims a one-time key through `/keys/claim`, sends the room key as an Olm-encrypted
to-device message (an `m.direct_to_device` EDU), and decrypts the other's messages. A new device is
noticed and gets the keys of new messages; a removed one is marked deleted by the other side's
client, which then leaves it out of the next room key. Cross-signing keys uploaded on one server are
seen on the other with the self-signing key's signature by the master key intact (checked with
signedjson, not our own signing code).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    InviteMemberEvent,
    JoinResponse,
    KeysUploadResponse,
    LoginResponse,
    RoomCreateResponse,
    SyncResponse,
)
from nio.api import RoomPreset
from signedjson.key import decode_verify_key_bytes
from signedjson.sign import SignatureVerifyException, verify_signed_json

from homeserver.protocol import unpadded_base64
from homeserver.protocol.signing import sign_json

from .server import RunningServer, http_json
from .test_e2ee_nio import (
    DEADLINE_S,
    ENCRYPTION_STATE,
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


def query(server: RunningServer, client: AsyncClient, user_id: str) -> dict[str, Any]:
    url = f"{server.base_url}/_matrix/client/v3/keys/query"
    answer: dict[str, Any] = http_json("POST", url, {"device_keys": {user_id: []}}, client.access_token)
    return answer


def devices_of(server: RunningServer, client: AsyncClient, user_id: str) -> set[str]:
    return set(query(server, client, user_id)["device_keys"].get(user_id, {}))


def cross_signing_of(server: RunningServer, client: AsyncClient, user_id: str) -> tuple[str, str] | None:
    """(master, self-signing) public keys of `user_id` as `client`'s server answers, once both are
    there and the self-signing key carries a valid signature by the master key (signedjson)."""
    answer = query(server, client, user_id)
    master, ssk = answer["master_keys"].get(user_id), answer["self_signing_keys"].get(user_id)
    if master is None or ssk is None:
        return None
    ((master_id, master_pub),) = master["keys"].items()
    ((_, ssk_pub),) = ssk["keys"].items()
    assert master["usage"] == ["master"] and ssk["usage"] == ["self_signing"], (master, ssk)
    verify_key = decode_verify_key_bytes(master_id, unpadded_base64.decode(master_pub))
    try:
        verify_signed_json(ssk, user_id, verify_key)
    except SignatureVerifyException as e:
        raise AssertionError(f"{user_id}'s self-signing key is not signed by their master key: {ssk}") from e
    return str(master_pub), str(ssk_pub)


def upload_cross_signing(server: RunningServer, client: AsyncClient) -> tuple[str, str]:
    """Upload master, self-signing and user-signing keys (the first upload needs no UIA): the master's
    and the self-signing key's public keys."""
    user_id = client.user_id

    def key(usage: str) -> dict[str, Any]:
        pub = unpadded_base64.encode(bytes(nacl.signing.SigningKey.generate().verify_key))
        return {"user_id": user_id, "usage": [usage], "keys": {f"ed25519:{pub}": pub}}

    master_sk = nacl.signing.SigningKey.generate()
    master_pub = unpadded_base64.encode(bytes(master_sk.verify_key))
    master = {"user_id": user_id, "usage": ["master"], "keys": {f"ed25519:{master_pub}": master_pub}}
    signed: dict[str, Any] = {}
    for usage in ("self_signing", "user_signing"):
        signed[f"{usage}_key"] = sign_json(key(usage), user_id, f"ed25519:{master_pub}", master_sk)
    url = f"{server.base_url}/_matrix/client/v3/keys/device_signing/upload"
    http_json("POST", url, {"master_key": master, **signed}, client.access_token)
    (ssk_pub,) = signed["self_signing_key"]["keys"].values()
    return master_pub, str(ssk_pub)


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not seen within {DEADLINE_S:.0f} s: {what}")
        await asyncio.sleep(0.2)


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

            # A removed device is gone from the other server's answers (a `deleted` update both ways).
            await alice2.logout()
            await bob2.logout()
            await until(lambda: alice2.device_id not in devices_of(synapse, bob, alice.user_id), "alice's laptop gone")
            await until(lambda: bob2.device_id not in devices_of(ours, alice, bob.user_id), "bob's laptop gone")
            # ... and stops receiving room keys: each client hears of the change through its own
            # /sync (`device_lists.changed`), queries again, marks the device deleted, and the next
            # room key (a new session) goes to the remaining device only.
            for sender, receiver, removed in ((bob, alice, alice2), (alice, bob, bob2)):
                stored = sender.device_store[receiver.user_id]
                gone = removed.device_id
                await sync_until(
                    sender,
                    lambda _, d=stored, g=gone: d[g].deleted,
                    "the removed device deleted",
                )
                sender.invalidate_outbound_session(room_id)
                text = f"after {removed.device_id} was removed"
                await send_encrypted(sender, room_id, text)
                assert sender.olm is not None
                shared = sender.olm.outbound_group_sessions[room_id].users_shared_with
                assert (receiver.user_id, receiver.device_id) in shared, shared
                assert (receiver.user_id, removed.device_id) not in shared, shared
                await sync_until(receiver, decrypted_text(room_id, text), "the message after the removal")

        # Cross-signing keys uploaded on either side are seen by the other (m.signing_key_update),
        # the self-signing key verified with the master key as the other server gives them.
        alice_keys = upload_cross_signing(ours, alice)
        bob_keys = upload_cross_signing(synapse, bob)
        await until(lambda: cross_signing_of(synapse, bob, alice.user_id) == alice_keys, "alice's keys on Synapse")
        await until(lambda: cross_signing_of(ours, alice, bob.user_id) == bob_keys, "bob's keys on our server")


def invited_directly(room_id: str, user_id: str) -> Callable[[SyncResponse], Any]:
    """The invite of `user_id` to `room_id`, marked as a direct chat (`is_direct` on the member event)."""

    def found(resp: SyncResponse) -> Any:
        room = resp.rooms.invite.get(room_id)
        return room is not None and any(
            isinstance(e, InviteMemberEvent) and e.state_key == user_id and e.content.get("is_direct") is True
            for e in room.invite_state
        )

    return found


def mark_direct(server: RunningServer, client: AsyncClient, other: str, room_id: str) -> None:
    """What a client does with a direct chat: `m.direct` account data naming it (client-server "Direct Messaging")."""
    url = f"{server.base_url}/_matrix/client/v3/user/{client.user_id}/account_data/m.direct"
    http_json("PUT", url, {other: [room_id]}, client.access_token)


async def test_encrypted_direct_chat_across_servers(
    synapse: RunningServer, ours: RunningServer, tmp_path: Path
) -> None:
    """A direct chat started on Synapse with a user of ours, encrypted from its creation: the invite
    reaches us marked `is_direct`, and both decrypt, Synapse's side first."""
    async with (
        encrypted_client(synapse, tmp_path, "dm-syn") as carl,
        encrypted_client(ours, tmp_path, "dm-our") as dora,
    ):
        created = await carl.room_create(
            is_direct=True,
            preset=RoomPreset.trusted_private_chat,
            invite=[dora.user_id],
            initial_state=[ENCRYPTION_STATE],
        )
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        await sync_until(dora, invited_directly(room_id, dora.user_id), "the direct invite")
        joined = await dora.join(room_id)
        assert isinstance(joined, JoinResponse), joined
        mark_direct(synapse, carl, dora.user_id, room_id)
        mark_direct(ours, dora, carl.user_id, room_id)
        await members_joined(carl, room_id, [carl.user_id, dora.user_id])
        await members_joined(dora, room_id, [carl.user_id, dora.user_id])
        await send_encrypted(carl, room_id, "dm from synapse")
        await sync_until(dora, decrypted_text(room_id, "dm from synapse"), "carl's direct message")
        await send_encrypted(dora, room_id, "dm from our server")
        await sync_until(carl, decrypted_text(room_id, "dm from our server"), "dora's direct message")
        account_data = http_json(
            "GET",
            f"{ours.base_url}/_matrix/client/v3/user/{dora.user_id}/account_data/m.direct",
            None,
            dora.access_token,
        )
        assert account_data == {carl.user_id: [room_id]}


async def test_unreachable_server_is_a_failure(ours: RunningServer, tmp_path: Path) -> None:
    async with encrypted_client(ours, tmp_path, "carol") as carol:
        body: dict[str, Any] = {"device_keys": {"@x:127.0.0.1:1": []}, "timeout": 2000}
        answer = http_json("POST", f"{ours.base_url}/_matrix/client/v3/keys/query", body, carol.access_token)
        assert "127.0.0.1:1" in answer["failures"]


def to_device_events(server: RunningServer, token: str, since: str | None) -> tuple[list[dict[str, Any]], str]:
    url = f"{server.base_url}/_matrix/client/v3/sync?timeout=500" + (f"&since={since}" if since else "")
    answer = http_json("GET", url, token=token)
    return answer.get("to_device", {}).get("events", []), answer["next_batch"]


async def pings(server: RunningServer, client: AsyncClient, since: str) -> list[dict[str, Any]]:
    """The org.example.ping to-device events `client` receives after `since`, once there are any."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        events, since = to_device_events(server, client.access_token, since)
        got = [e for e in events if e.get("type") == "org.example.ping"]
        if got:
            return got
    raise AssertionError(f"{client.user_id} received no to-device message within {DEADLINE_S:.0f} s")


async def test_to_device_both_ways(synapse: RunningServer, ours: RunningServer, tmp_path: Path) -> None:
    async with (
        encrypted_client(ours, tmp_path, "erin") as erin,
        encrypted_client(synapse, tmp_path, "frank") as frank,
    ):
        for sender, sender_server, receiver, receiver_server in (
            (erin, ours, frank, synapse),
            (frank, synapse, erin, ours),
        ):
            _, since = to_device_events(receiver_server, receiver.access_token, None)
            url = f"{sender_server.base_url}/_matrix/client/v3/sendToDevice/org.example.ping/t1"
            body = {"messages": {receiver.user_id: {receiver.device_id: {"hello": sender.user_id}}}}
            http_json("PUT", url, body, sender.access_token)
            got = await pings(receiver_server, receiver, since)
            assert got == [{"type": "org.example.ping", "sender": sender.user_id, "content": {"hello": sender.user_id}}]
