"""End-to-end encryption with matrix-nio (vodozemac), between two nio clients and between nio and
matrix-js-sdk's Rust crypto, against a real server.

nio keeps its Olm account and sessions in a store under the test's temporary directory. The js-sdk
side is `js/e2ee.mjs peer`: one js-sdk user driven by JSON commands over stdin.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysUploadResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    ShareGroupSessionResponse,
    SyncResponse,
)

from .conftest import CREATE_ROOM, JOIN, REGISTER, SEND, SYNC, require
from .server import RunningServer, http_json
from .test_e2ee_js import E2EE_SCRIPT, JS_DIR
from .test_js_sdk import _node

pytestmark = pytest.mark.asyncio

PASSWORD = "interop password 1"
DEADLINE_S = 20.0
MEGOLM = "m.megolm.v1.aes-sha2"
ENCRYPTION_STATE = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
E2EE_ENDPOINTS = (
    "POST /_matrix/client/v3/keys/upload",
    "POST /_matrix/client/v3/keys/query",
    "POST /_matrix/client/v3/keys/claim",
    "PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}",
)


@asynccontextmanager
async def encrypted_client(server: RunningServer, store: Path, localpart: str) -> AsyncIterator[AsyncClient]:
    """A new account registered by nio, with encryption on and its Olm store under `store`."""
    path = store / localpart
    path.mkdir(parents=True)
    config = AsyncClientConfig(encryption_enabled=True, store_sync_tokens=True, request_timeout=30)
    client = AsyncClient(server.base_url, store_path=str(path), config=config)
    try:
        resp = await client.register(localpart, PASSWORD, device_name=f"nio {localpart}")
        assert isinstance(resp, RegisterResponse), resp
        assert client.olm is not None, "nio has no Olm machine: is the e2e extra installed?"
        assert client.should_upload_keys
        uploaded = await client.keys_upload()
        assert isinstance(uploaded, KeysUploadResponse), uploaded
        assert uploaded.signed_curve25519_count > 0
        yield client
    finally:
        await client.close()


async def tick(client: AsyncClient, timeout_ms: int = 500) -> SyncResponse:
    """One round of what nio's sync_forever does: /sync, then the key uploads, queries, claims and
    to-device messages the Olm machine asks for."""
    resp = await client.sync(timeout=timeout_ms)
    assert isinstance(resp, SyncResponse), resp
    if client.should_upload_keys:
        await client.keys_upload()
    if client.should_query_keys:
        await client.keys_query()
    if client.should_claim_keys:
        await client.keys_claim(client.get_users_for_key_claiming())
    await client.send_to_device_messages()
    return resp


async def sync_until(client: AsyncClient, found: Callable[[SyncResponse], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = found(await tick(client))
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{client.user_id} did not see {what} within {DEADLINE_S:.0f} s")


def decrypted_text(room_id: str, body: str) -> Callable[[SyncResponse], RoomMessageText | None]:
    """Finds the message with this plaintext body in a sync response, once nio decrypted it."""

    def found(resp: SyncResponse) -> RoomMessageText | None:
        room = resp.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if isinstance(event, MegolmEvent):
                continue  # not (yet) decryptable: nio keeps it as the encrypted event
            if isinstance(event, RoomMessageText) and event.body == body:
                return event
        return None

    return found


async def members_joined(client: AsyncClient, room_id: str, users: list[str]) -> None:
    """Sync until `client` sees every user joined (it shares the room key with the members it knows)."""

    def all_there(_: SyncResponse) -> bool:
        room = client.rooms.get(room_id)
        return room is not None and room.encrypted and all(u in room.users for u in users)

    await sync_until(client, all_there, f"{users} joined in {room_id}")


async def create_encrypted_room(creator: AsyncClient, invite: list[str]) -> str:
    created = await creator.room_create(name="nio e2ee", invite=invite, initial_state=[ENCRYPTION_STATE])
    assert isinstance(created, RoomCreateResponse), created
    return str(created.room_id)


async def join_when_invited(client: AsyncClient, room_id: str) -> None:
    await sync_until(client, lambda r: room_id in r.rooms.invite, "the invite")
    joined = await client.join(room_id)
    assert isinstance(joined, JoinResponse), joined


async def send_encrypted(client: AsyncClient, room_id: str, body: str) -> str:
    # No interactive verification in a test: unverified devices still get the room key.
    sent = await client.room_send(
        room_id, "m.room.message", {"msgtype": "m.text", "body": body}, ignore_unverified_devices=True
    )
    assert isinstance(sent, RoomSendResponse), sent
    return str(sent.event_id)


def server_copy(server: RunningServer, client: AsyncClient, room_id: str, event_id: str) -> dict[str, Any]:
    """The event as the server stores it."""
    url = f"{server.base_url}/_matrix/client/v3/rooms/{quote(room_id, safe='')}/event/{quote(event_id, safe='')}"
    event: dict[str, Any] = http_json("GET", url, token=client.access_token)
    return event


async def test_nio_to_nio_encrypted_exchange(server: RunningServer, tmp_path: Path) -> None:
    require(server, REGISTER, CREATE_ROOM, JOIN, SEND, SYNC, *E2EE_ENDPOINTS)
    async with (
        encrypted_client(server, tmp_path, "alice") as alice,
        encrypted_client(server, tmp_path, "bob") as bob,
    ):
        room_id = await create_encrypted_room(alice, [bob.user_id])
        await join_when_invited(bob, room_id)
        await members_joined(alice, room_id, [alice.user_id, bob.user_id])
        await members_joined(bob, room_id, [alice.user_id, bob.user_id])

        event_id = await send_encrypted(alice, room_id, "secret from nio alice")
        got = await sync_until(bob, decrypted_text(room_id, "secret from nio alice"), "alice's message decrypted")
        assert got.event_id == event_id and got.sender == alice.user_id and got.decrypted
        assert got.session_id  # decrypted with alice's megolm session, shared over Olm
        stored = server_copy(server, bob, room_id, event_id)
        assert stored["type"] == "m.room.encrypted" and stored["content"]["algorithm"] == MEGOLM
        assert "body" not in stored["content"] and "ciphertext" in stored["content"]

        # bob shares his room key ahead of sending (what room_send otherwise does first)
        shared = await bob.share_group_session(room_id, ignore_unverified_devices=True)
        assert isinstance(shared, ShareGroupSessionResponse), shared
        assert (alice.user_id, alice.device_id) in shared.users_shared_with
        reply_id = await send_encrypted(bob, room_id, "secret reply from nio bob")
        reply = await sync_until(alice, decrypted_text(room_id, "secret reply from nio bob"), "bob's reply decrypted")
        assert reply.event_id == reply_id and reply.sender == bob.user_id and reply.decrypted

        # The room keys travelled over an Olm session that both devices now hold for each other.
        assert alice.olm and bob.olm
        assert alice.olm.session_store.get(bob.olm.account.identity_keys["curve25519"])
        assert bob.olm.session_store.get(alice.olm.account.identity_keys["curve25519"])


class JsPeer:
    """One js-sdk user (Rust crypto) in a Node process, driven by JSON commands (see js/e2ee.mjs)."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.proc = proc
        self.stderr_path = stderr_path
        self.user_id = ""
        self.device_id = ""

    async def _line(self, prefix: str, what: str, timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"js-sdk peer: no answer to {what} within {timeout_s:.0f} s{self.stderr()}")
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            except TimeoutError:
                continue
            if not raw:
                raise AssertionError(f"js-sdk peer exited (status {self.proc.returncode}) during {what}{self.stderr()}")
            line = raw.decode()
            if line.startswith(prefix + " "):
                value: dict[str, Any] = json.loads(line.split(" ", 1)[1])
                if "error" in value:
                    raise AssertionError(f"js-sdk peer failed {what}: {value['error']}{self.stderr()}")
                return value

    def stderr(self) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n--- node stderr ---\n" + "\n".join(line for line in lines[-20:] if "push rule" not in line)

    async def ready(self) -> None:
        me = await self._line("@@READY@@", "start-up", 60)
        self.user_id, self.device_id = me["user_id"], me["device_id"]

    async def command(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        return await self._line("@@REPLY@@", cmd, DEADLINE_S + 5)


@asynccontextmanager
async def js_peer(server: RunningServer, tmp_path: Path) -> AsyncIterator[JsPeer]:
    stderr_path = tmp_path / "js-peer.stderr"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            _node(),
            str(E2EE_SCRIPT),
            server.base_url,
            "peer",
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    peer = JsPeer(proc, stderr_path)
    try:
        await peer.ready()
        yield peer
    finally:
        if proc.returncode is None:
            with suppress(ConnectionError):
                assert proc.stdin is not None
                proc.stdin.write(b'{"cmd": "stop"}\n')
                await proc.stdin.drain()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def test_nio_and_js_sdk_exchange_both_ways(server: RunningServer, tmp_path: Path) -> None:
    require(server, REGISTER, CREATE_ROOM, JOIN, SEND, SYNC, *E2EE_ENDPOINTS)
    async with encrypted_client(server, tmp_path, "nina") as nina, js_peer(server, tmp_path) as carol:
        members = [nina.user_id, carol.user_id]

        # A room nio creates: nio -> js-sdk, then js-sdk -> nio.
        room_id = await create_encrypted_room(nina, [carol.user_id])
        await carol.command("join", room_id=room_id)
        await members_joined(nina, room_id, members)
        event_id = await send_encrypted(nina, room_id, "from nio to js-sdk")
        got = await carol.command("receive", room_id=room_id, body="from nio to js-sdk")
        assert got == {
            "event_id": event_id,
            "sender": nina.user_id,
            "wire_type": "m.room.encrypted",
            "type": "m.room.message",
            "body": "from nio to js-sdk",
            "decryption_failure": None,
        }
        sent = await carol.command("send", room_id=room_id, body="from js-sdk to nio", members=members)
        reply = await sync_until(nina, decrypted_text(room_id, "from js-sdk to nio"), "js-sdk's message decrypted")
        assert reply.event_id == sent["event_id"] and reply.sender == carol.user_id and reply.decrypted

        # A room js-sdk creates: js-sdk -> nio, then nio -> js-sdk.
        other = (await carol.command("create_room", invite=[nina.user_id]))["room_id"]
        await join_when_invited(nina, other)
        first = await carol.command("send", room_id=other, body="js-sdk's own room", members=members)
        seen = await sync_until(nina, decrypted_text(other, "js-sdk's own room"), "the message in js-sdk's room")
        assert seen.event_id == first["event_id"] and seen.decrypted
        await members_joined(nina, other, members)
        answer_id = await send_encrypted(nina, other, "nio answers in js-sdk's room")
        answer = await carol.command("receive", room_id=other, body="nio answers in js-sdk's room")
        assert answer["event_id"] == answer_id and answer["wire_type"] == "m.room.encrypted"
        assert server_copy(server, nina, other, answer_id)["type"] == "m.room.encrypted"
