"""matrix-nio (the Python client library) against a real server process.

Each test drives nio's own API and asserts what the other side received through its own sync.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    DownloadResponse,
    JoinResponse,
    LoginResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessagesResponse,
    RoomPutAliasResponse,
    RoomRedactResponse,
    RoomResolveAliasResponse,
    RoomSendResponse,
    RoomVisibility,
    SyncResponse,
    TypingNoticeEvent,
    UploadResponse,
)
from nio.events.ephemeral import Receipt
from nio.responses import (
    DevicesResponse,
    JoinedRoomsResponse,
    LogoutResponse,
    ProfileGetDisplayNameResponse,
    ProfileSetDisplayNameResponse,
    PublicRoomsResponse,
    RoomForgetResponse,
    RoomGetStateEventResponse,
    RoomLeaveResponse,
    RoomPutStateResponse,
    WhoamiError,
    WhoamiResponse,
)

from .conftest import CREATE_ROOM, INVITE, JOIN, LOGIN, MESSAGES, REGISTER, SEND, SYNC, require
from .server import RunningServer

pytestmark = pytest.mark.asyncio

PASSWORD = "interop password 1"
SYNC_DEADLINE_S = 15.0


def _config() -> AsyncClientConfig:
    # Encryption is not what these tests are about; sync tokens stay in memory.
    return AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False, request_timeout=30)


@asynccontextmanager
async def registered(server: RunningServer, localpart: str) -> AsyncIterator[AsyncClient]:
    """A new account registered by nio (m.login.dummy), logged in, closed afterwards."""
    client = AsyncClient(server.base_url, config=_config())
    try:
        resp = await client.register(localpart, PASSWORD, device_name=f"nio {localpart}")
        assert isinstance(resp, RegisterResponse), resp
        assert resp.user_id == f"@{localpart}:{server.server_name}"
        assert client.access_token and client.user_id == resp.user_id
        yield client
    finally:
        await client.close()


def timeline(resp: SyncResponse, room_id: str) -> list[dict[str, Any]]:
    room = resp.rooms.join.get(room_id)
    return [e.source for e in room.timeline.events] if room else []


def ephemeral(resp: SyncResponse, room_id: str) -> list[Any]:
    """The room's ephemeral events as nio parsed them (TypingNoticeEvent, ReceiptEvent, ...)."""
    room = resp.rooms.join.get(room_id)
    return list(room.ephemeral) if room else []


async def sync_until(
    client: AsyncClient, found: Callable[[SyncResponse], Any], what: str, deadline_s: float = SYNC_DEADLINE_S
) -> Any:
    """Long-poll /sync (from the client's last token) until `found(resp)` is truthy; return that value."""
    deadline = time.monotonic() + deadline_s
    while True:
        resp = await client.sync(timeout=1000)
        assert isinstance(resp, SyncResponse), resp
        value = found(resp)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{client.user_id} did not receive {what} within {deadline_s:.0f} s")


async def shared_room(server: RunningServer, alice: AsyncClient, bob: AsyncClient, **create: Any) -> str:
    """alice creates a room and invites bob at creation; bob sees the invite in /sync and joins."""
    created = await alice.room_create(name="interop", invite=[bob.user_id], **create)
    assert isinstance(created, RoomCreateResponse), created
    room_id = created.room_id
    await sync_until(bob, lambda r: room_id in r.rooms.invite, "the invite")
    joined = await bob.join(room_id)
    assert isinstance(joined, JoinResponse), joined
    assert joined.room_id == room_id
    return str(room_id)


async def test_register_and_login(server: RunningServer) -> None:
    require(server, REGISTER, LOGIN)
    async with registered(server, "alice") as alice:
        second = AsyncClient(server.base_url, alice.user_id, config=_config())
        try:
            resp = await second.login(PASSWORD, device_name="second device")
            assert isinstance(resp, LoginResponse), resp
            assert resp.user_id == alice.user_id
            assert resp.device_id and resp.device_id != alice.device_id
            assert resp.access_token and resp.access_token != alice.access_token
            wrong = await AsyncClient(server.base_url, alice.user_id, config=_config()).login("wrong password")
            assert not isinstance(wrong, LoginResponse)
            assert getattr(wrong, "status_code", None) == "M_FORBIDDEN"
        finally:
            await second.close()


async def test_create_send_and_receive_by_sync(server: RunningServer) -> None:
    require(server, REGISTER, CREATE_ROOM, SYNC, JOIN, SEND)
    async with registered(server, "alice") as alice, registered(server, "bob") as bob:
        room_id = await shared_room(server, alice, bob)
        # bob's first sync after joining shows the room with its state and him as a member.
        first = await sync_until(bob, lambda r: r if room_id in r.rooms.join else None, "the joined room")
        assert isinstance(first, SyncResponse)
        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hello from nio"})
        assert isinstance(sent, RoomSendResponse), sent

        def message(resp: SyncResponse) -> dict[str, Any] | None:
            return next((e for e in timeline(resp, room_id) if e.get("event_id") == sent.event_id), None)

        got = await sync_until(bob, message, "alice's message")
        assert got["sender"] == alice.user_id
        assert got["type"] == "m.room.message"
        assert got["content"] == {"msgtype": "m.text", "body": "hello from nio"}
        assert isinstance(got["origin_server_ts"], int)
        # The sender's own sync has it too, with the transaction id echoed in unsigned.
        own = await sync_until(alice, message, "her own message")
        assert own["unsigned"].get("transaction_id")


async def test_invite_join_and_history(server: RunningServer) -> None:
    require(server, REGISTER, CREATE_ROOM, INVITE, SYNC, JOIN, SEND, MESSAGES)
    async with registered(server, "alice") as alice, registered(server, "bob") as bob:
        created = await alice.room_create(name="later invite")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        for i in range(3):
            sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"early {i}"})
            assert isinstance(sent, RoomSendResponse), sent
        invited = await alice.room_invite(room_id, bob.user_id)
        assert isinstance(invited, RoomInviteResponse), invited
        invite = await sync_until(bob, lambda r: r.rooms.invite.get(room_id), "the invite")
        assert any(
            getattr(e, "state_key", None) == bob.user_id and getattr(e, "membership", None) == "invite"
            for e in invite.invite_state
        )
        assert isinstance(await bob.join(room_id), JoinResponse)
        await sync_until(bob, lambda r: room_id in r.rooms.join, "the joined room")
        # The history before the invite is visible (history_visibility shared by default).
        history = await bob.room_messages(room_id, limit=20)
        assert isinstance(history, RoomMessagesResponse), history
        bodies = [e.source["content"].get("body") for e in history.chunk if e.source["type"] == "m.room.message"]
        assert bodies[:3] == ["early 2", "early 1", "early 0"]
        assert history.start  # `end` is omitted when the start of the room is reached


async def test_edit_react_redact(server: RunningServer) -> None:
    require(
        server,
        REGISTER,
        CREATE_ROOM,
        SYNC,
        JOIN,
        SEND,
        "PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}",
    )
    async with registered(server, "alice") as alice, registered(server, "bob") as bob:
        room_id = await shared_room(server, alice, bob)
        original = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "helo"})
        assert isinstance(original, RoomSendResponse), original
        edit = await alice.room_send(
            room_id,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": "* hello",
                "m.new_content": {"msgtype": "m.text", "body": "hello"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": original.event_id},
            },
        )
        assert isinstance(edit, RoomSendResponse), edit
        reaction = await bob.room_send(
            room_id,
            "m.reaction",
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": original.event_id, "key": "👍"}},
        )
        assert isinstance(reaction, RoomSendResponse), reaction
        redaction = await bob.room_redact(room_id, reaction.event_id, reason="changed my mind")
        assert isinstance(redaction, RoomRedactResponse), redaction

        seen: dict[str, dict[str, Any]] = {}

        def all_three(resp: SyncResponse) -> bool:
            seen.update({e["event_id"]: e for e in timeline(resp, room_id) if "event_id" in e})
            return redaction.event_id in seen and edit.event_id in seen

        await sync_until(alice, all_three, "the edit, reaction and redaction")
        got_edit = seen[edit.event_id]
        assert got_edit["content"]["m.relates_to"] == {"rel_type": "m.replace", "event_id": original.event_id}
        assert got_edit["content"]["m.new_content"]["body"] == "hello"
        got_redaction = seen[redaction.event_id]
        assert got_redaction["type"] == "m.room.redaction" and got_redaction["sender"] == bob.user_id
        # spec: room v11 moved `redacts` into content; older versions carry it at the top level.
        assert reaction.event_id in (got_redaction.get("redacts"), got_redaction["content"].get("redacts"))
        if reaction.event_id in seen:  # in the same batch: the reaction is shown redacted
            redacted = seen[reaction.event_id]
            assert redacted["content"] == {}
            assert redacted["unsigned"]["redacted_because"]["event_id"] == redaction.event_id


async def test_relations(server: RunningServer) -> None:
    require(server, REGISTER, CREATE_ROOM, SEND, "GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}")
    async with registered(server, "alice") as alice:
        created = await alice.room_create(name="relations")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        parent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "parent"})
        assert isinstance(parent, RoomSendResponse), parent
        reacted = await alice.room_send(
            room_id,
            "m.reaction",
            {"m.relates_to": {"rel_type": "m.annotation", "event_id": parent.event_id, "key": "x"}},
        )
        assert isinstance(reacted, RoomSendResponse), reacted
        related = [e.source async for e in alice.room_get_event_relations(room_id, parent.event_id)]
        assert [e["event_id"] for e in related] == [reacted.event_id]
        assert related[0]["content"]["m.relates_to"]["key"] == "x"


async def test_typing_and_receipts(server: RunningServer) -> None:
    require(
        server,
        REGISTER,
        CREATE_ROOM,
        SYNC,
        JOIN,
        SEND,
        "PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}",
        "POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}",
    )
    async with registered(server, "alice") as alice, registered(server, "bob") as bob:
        room_id = await shared_room(server, alice, bob)
        await sync_until(alice, lambda r: True, "a first sync")  # alice's token starts after the join
        typing = await alice.room_typing(room_id, True, 30_000)
        assert getattr(typing, "transport_response", None) is None or typing.transport_response.status == 200

        def typing_users(resp: SyncResponse) -> list[str] | None:
            for e in ephemeral(resp, room_id):
                if isinstance(e, TypingNoticeEvent) and alice.user_id in e.users:
                    return list(e.users)
            return None

        assert await sync_until(bob, typing_users, "alice typing") == [alice.user_id]

        sent = await alice.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "read me"})
        assert isinstance(sent, RoomSendResponse), sent
        receipt = await bob.update_receipt_marker(room_id, sent.event_id)
        assert getattr(receipt, "transport_response", None) is None or receipt.transport_response.status == 200

        def bobs_receipt(resp: SyncResponse) -> Receipt | None:
            for e in ephemeral(resp, room_id):
                if isinstance(e, ReceiptEvent):
                    for r in e.receipts:
                        if r.user_id == bob.user_id and r.event_id == sent.event_id and r.receipt_type == "m.read":
                            return r
            return None

        got = await sync_until(alice, bobs_receipt, "bob's read receipt")
        assert isinstance(got.timestamp, int) and got.timestamp > 0
        assert got.thread_id == "main"  # nio sends its receipts for the main timeline


async def test_media_upload_and_download(server: RunningServer) -> None:
    require(
        server,
        REGISTER,
        "POST /_matrix/media/v3/upload",
        "GET /_matrix/client/v1/media/download/{serverName}/{mediaId}",
    )
    async with registered(server, "alice") as alice, registered(server, "bob") as bob:
        data = bytes(range(256)) * 40
        uploaded, keys = await alice.upload(
            io.BytesIO(data), content_type="application/octet-stream", filename="blob.bin", filesize=len(data)
        )
        assert isinstance(uploaded, UploadResponse), uploaded
        assert keys is None
        assert uploaded.content_uri.startswith(f"mxc://{server.server_name}/")
        downloaded = await bob.download(mxc=uploaded.content_uri)
        assert isinstance(downloaded, DownloadResponse), downloaded
        assert downloaded.body == data
        assert downloaded.content_type == "application/octet-stream"
        named = await bob.download(mxc=uploaded.content_uri, filename="other.bin")
        assert isinstance(named, DownloadResponse), named
        assert named.body == data and named.filename == "other.bin"


async def test_room_directory(server: RunningServer) -> None:
    require(
        server,
        REGISTER,
        CREATE_ROOM,
        JOIN,
        "GET /_matrix/client/v3/directory/room/{roomAlias}",
        "GET /_matrix/client/v3/publicRooms",
    )
    async with registered(server, "alice") as alice, registered(server, "bob") as bob:
        created = await alice.room_create(
            visibility=RoomVisibility.public, alias="interop-lobby", name="Lobby", topic="for everyone"
        )
        assert isinstance(created, RoomCreateResponse), created
        alias = f"#interop-lobby:{server.server_name}"
        resolved = await bob.room_resolve_alias(alias)
        assert isinstance(resolved, RoomResolveAliasResponse), resolved
        assert resolved.room_id == created.room_id
        extra = await alice.room_put_alias(f"#interop-second:{server.server_name}", created.room_id)
        assert isinstance(extra, RoomPutAliasResponse), extra
        assert (await bob.room_resolve_alias(f"#interop-second:{server.server_name}")).room_id == created.room_id
        listed = await bob.list_public_rooms(limit=10)
        assert isinstance(listed, PublicRoomsResponse), listed
        rooms = {r.room_id: r for r in listed.public_rooms}
        assert created.room_id in rooms, listed
        lobby = rooms[created.room_id]
        assert (lobby.name, lobby.topic, lobby.canonical_alias) == ("Lobby", "for everyone", alias)
        assert lobby.num_joined_members == 1 and lobby.world_readable is False
        joined = await bob.join(alias)
        assert isinstance(joined, JoinResponse) and joined.room_id == created.room_id


async def test_search(server: RunningServer) -> None:
    require(server, REGISTER, CREATE_ROOM, SEND, "POST /_matrix/client/v3/search")
    async with registered(server, "alice") as alice:
        created = await alice.room_create(name="searchable")
        assert isinstance(created, RoomCreateResponse), created
        for body in ("the quick brown fox", "a lazy dog", "foxes are quick"):
            sent = await alice.room_send(created.room_id, "m.room.message", {"msgtype": "m.text", "body": body})
            assert isinstance(sent, RoomSendResponse), sent
        query = {"search_categories": {"room_events": {"search_term": "quick", "keys": ["content.body"]}}}
        resp = await alice.send(
            "POST",
            "/_matrix/client/v3/search",
            json.dumps(query),
            headers={"Authorization": f"Bearer {alice.access_token}", "Content-Type": "application/json"},
        )
        assert resp.status == 200, await resp.text()
        events = (await resp.json())["search_categories"]["room_events"]
        bodies = sorted(r["result"]["content"]["body"] for r in events["results"])
        assert bodies == ["foxes are quick", "the quick brown fox"]
        assert events["count"] == 2


async def test_profile_state_devices_leave_logout(server: RunningServer) -> None:
    require(
        server,
        REGISTER,
        CREATE_ROOM,
        "PUT /_matrix/client/v3/profile/{userId}/{keyName}",
        "GET /_matrix/client/v3/profile/{userId}/{keyName}",
        "PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
        "GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}",
        "GET /_matrix/client/v3/devices",
        "GET /_matrix/client/v3/joined_rooms",
        "POST /_matrix/client/v3/rooms/{roomId}/leave",
        "POST /_matrix/client/v3/rooms/{roomId}/forget",
        "POST /_matrix/client/v3/logout",
        "GET /_matrix/client/v3/account/whoami",
    )
    async with registered(server, "alice") as alice:
        assert isinstance(await alice.set_displayname("Alice N."), ProfileSetDisplayNameResponse)
        name = await alice.get_displayname()
        assert isinstance(name, ProfileGetDisplayNameResponse) and name.displayname == "Alice N."
        created = await alice.room_create(name="state")
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        # nio writes an empty state key without the trailing slash: `state/m.room.topic`.
        put = await alice.room_put_state(room_id, "m.room.topic", {"topic": "from nio"})
        assert isinstance(put, RoomPutStateResponse), put
        got = await alice.room_get_state_event(room_id, "m.room.topic")
        assert isinstance(got, RoomGetStateEventResponse), got
        assert got.content == {"topic": "from nio"}
        devices = await alice.devices()
        assert isinstance(devices, DevicesResponse), devices
        assert [d.id for d in devices.devices] == [alice.device_id]
        assert devices.devices[0].display_name == "nio alice"
        rooms = await alice.joined_rooms()
        assert isinstance(rooms, JoinedRoomsResponse) and rooms.rooms == [room_id]
        assert isinstance(await alice.room_leave(room_id), RoomLeaveResponse)
        assert isinstance(await alice.room_forget(room_id), RoomForgetResponse)
        after = await alice.joined_rooms()
        assert isinstance(after, JoinedRoomsResponse) and after.rooms == []
        me = await alice.whoami()
        assert isinstance(me, WhoamiResponse) and me.user_id == alice.user_id and me.device_id == alice.device_id
        token = alice.access_token
        assert isinstance(await alice.logout(), LogoutResponse)
        alice.access_token = token  # nio forgets the token on logout; ask with the old one
        gone = await alice.whoami()
        assert isinstance(gone, WhoamiError) and gone.status_code == "M_UNKNOWN_TOKEN"
