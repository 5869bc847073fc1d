"""EDUs from other servers: typing notifications, read receipts and presence.

spec: server-server-api "Typing Notifications", "Receipts", "Presence". An EDU speaks for users of
the server that sent it: anything about another server's users is ignored. Typing and receipts
are bound to a room: they count only when the room's server ACL admits the sender
("Server Access Control Lists") and the user is joined to the room here. Presence is taken only
when this server has presence on, and only for users who share a room with one of ours (nobody
here could see the rest).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from federation.transactions import AclCheck, EduHandler

TYPING_TIMEOUT_MS = 30_000  # spec: the sending server refreshes typing; we expire it as Synapse does


class Ephemeral(Protocol):
    """The services that keep typing, receipts and presence (homeserver/ephemeral/)."""

    def remote_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None: ...

    async def remote_receipt(
        self, room_id: str, receipt_type: str, user_id: str, event_ids: list[str], data: dict[str, Any]
    ) -> None: ...

    def remote_presence(self, user_id: str, update: dict[str, Any]) -> None: ...


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
            ephemeral.remote_typing(room_id, user_id, is_typing, TYPING_TIMEOUT_MS)

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
                ephemeral.remote_presence(update["user_id"], update)

    handlers: dict[str, EduHandler] = {"m.typing": typing, "m.receipt": receipt}
    if presence:
        handlers["m.presence"] = presence_update
    return handlers
