"""EDUs from other servers: typing notifications, read receipts and presence.

spec: server-server-api "Typing Notifications", "Receipts", "Presence". An EDU speaks for users of
the server that sent it: anything about another server's users is ignored. Typing and receipts
are bound to a room: they count only when the room's server ACL admits the sender
("Server Access Control Lists") and the user is joined to the room here. Presence is taken only
when this server has presence on, and only for users who share a room with one of ours (nobody
here could see the rest).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from federation.transactions import AclCheck, EduHandler
from homeserver.ephemeral.presence import Presence
from homeserver.ephemeral.receipts import Receipts
from homeserver.ephemeral.typing import Typing
from homeserver.rooms.queries import RoomQueries
from storage.receipts import Receipt

TYPING_TIMEOUT_MS = 30_000  # spec: the sending server refreshes typing; we expire it as Synapse does


class Ephemeral(Protocol):
    """The services that keep typing, receipts and presence (homeserver/ephemeral/)."""

    async def remote_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None: ...

    async def remote_receipt(
        self, room_id: str, receipt_type: str, user_id: str, event_ids: list[str], data: dict[str, Any]
    ) -> None: ...

    async def remote_presence(self, user_id: str, update: dict[str, Any]) -> None: ...


def _of(origin: str, user_id: object) -> bool:
    return isinstance(user_id, str) and user_id.partition(":")[2] == origin


def edu_handlers(
    ephemeral: Ephemeral, acl_allows: AclCheck, is_joined: Callable[[str, str], bool], *, presence: bool
) -> dict[str, EduHandler]:
    async def typing(origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        room_id, user_id, is_typing = content.get("room_id"), content.get("user_id"), content.get("typing")
        if not isinstance(room_id, str) or not _of(origin, user_id) or not isinstance(is_typing, bool):
            return
        assert isinstance(user_id, str)
        if acl_allows(room_id, origin) and is_joined(user_id, room_id):
            await ephemeral.remote_typing(room_id, user_id, is_typing, TYPING_TIMEOUT_MS)

    async def receipt(origin: str, content: Any) -> None:
        if not isinstance(content, dict):
            return
        for room_id, by_type in content.items():
            if not isinstance(by_type, dict) or not acl_allows(room_id, origin):
                continue
            for receipt_type, by_user in by_type.items():
                if not isinstance(by_user, dict):
                    continue
                for user_id, value in by_user.items():
                    if not _of(origin, user_id) or not isinstance(value, dict) or not is_joined(user_id, room_id):
                        continue
                    event_ids = value.get("event_ids")
                    data = value.get("data")
                    if not isinstance(event_ids, list) or not all(isinstance(e, str) for e in event_ids):
                        continue
                    await ephemeral.remote_receipt(
                        room_id, receipt_type, user_id, event_ids, data if isinstance(data, dict) else {}
                    )

    async def presence_update(origin: str, content: Any) -> None:
        pushed = content.get("push") if isinstance(content, dict) else None
        for update in pushed if isinstance(pushed, list) else ():
            if isinstance(update, dict) and _of(origin, update.get("user_id")):
                await ephemeral.remote_presence(update["user_id"], update)

    handlers: dict[str, EduHandler] = {"m.typing": typing, "m.receipt": receipt}
    if presence:
        handlers["m.presence"] = presence_update
    return handlers


class EphemeralServices:
    """`Ephemeral` over this server's typing, receipts and presence services."""

    def __init__(self, typing: Typing, receipts: Receipts, presence: Presence, queries: RoomQueries) -> None:
        self.typing = typing
        self.receipts = receipts
        self.presence = presence
        self.queries = queries

    async def remote_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        room = self.queries.room(room_id)
        if room is not None:
            await self.typing.set_typing(room, user_id, typing, timeout_ms)

    async def remote_receipt(
        self, room_id: str, receipt_type: str, user_id: str, event_ids: list[str], data: dict[str, Any]
    ) -> None:
        await self.receipts.remote(user_id, room_id, receipt_type, event_ids, data)

    async def remote_presence(self, user_id: str, update: dict[str, Any]) -> None:
        # only for someone one of our users shares a room with: nobody here could see the rest
        if self.queries.shares_a_room_with_us(user_id):
            await self.presence.remote(user_id, update)


class EduRelay:
    """Our users' typing, public read receipts and presence, sent to the servers that share the
    room (or a room, for presence) with them. Private receipts stay here."""

    def __init__(self, queries: RoomQueries, send: Callable[[Iterable[str], str, dict[str, Any]], None]) -> None:
        self.queries = queries
        self.send = send

    def _servers(self, room: int) -> list[str]:
        return [s for s in self.queries.servers_in_room(room) if s != self.queries.server_name]

    def typing_changed(self, room: int, user_id: str, typing: bool) -> None:
        if self.queries.is_local(user_id):
            content = {"room_id": self.queries.room_id(room), "user_id": user_id, "typing": typing}
            self.send(self._servers(room), "m.typing", content)

    def receipt_written(self, room: int, receipt: Receipt) -> None:
        if receipt.receipt_type != "m.read" or not self.queries.is_local(receipt.user_id):
            return
        data: dict[str, Any] = {"ts": receipt.ts}
        if receipt.thread_id:
            data["thread_id"] = receipt.thread_id
        entry = {receipt.user_id: {"event_ids": [receipt.event_id], "data": data}}
        self.send(self._servers(room), "m.receipt", {self.queries.room_id(room): {"m.read": entry}})

    def presence_changed(self, user_id: str, content: dict[str, Any]) -> None:
        if not self.queries.is_local(user_id):
            return
        servers: set[str] = set()
        for room in self.queries.joined_rooms(user_id):
            servers.update(self._servers(room))
        if servers:
            self.send(sorted(servers), "m.presence", {"push": [{"user_id": user_id, **content}]})
