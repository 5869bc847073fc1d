"""EDUs speak only for the sending server's users, in rooms its ACL admits and they are joined to.

spec: server-server-api "Typing Notifications", "Receipts", "Presence", "Server Access Control Lists".
"""

from __future__ import annotations

from typing import Any

from federation.edus import edu_handlers

ROOM = "!r:here.test"
DENIED_ROOM = "!denied:here.test"


class Sink:
    def __init__(self) -> None:
        self.typing: list[tuple[str, str, bool]] = []
        self.receipts: list[tuple[str, str, str, list[str]]] = []
        self.presence: list[str] = []

    async def remote_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        self.typing.append((room_id, user_id, typing))

    async def remote_receipt(
        self, room_id: str, receipt_type: str, user_id: str, event_ids: list[str], data: dict[str, Any]
    ) -> None:
        self.receipts.append((room_id, receipt_type, user_id, event_ids))

    async def remote_presence(self, user_id: str, update: dict[str, Any]) -> None:
        self.presence.append(user_id)


def handlers(sink: Sink, *, presence: bool = True) -> Any:
    joined = {("@a:peer.test", ROOM), ("@a:peer.test", DENIED_ROOM), ("@b:other.test", ROOM)}
    return edu_handlers(
        sink, lambda room, server: room != DENIED_ROOM, lambda u, r: (u, r) in joined, presence=presence
    )


async def test_typing() -> None:
    sink = Sink()
    h = handlers(sink)
    await h["m.typing"]("peer.test", {"room_id": ROOM, "user_id": "@a:peer.test", "typing": True})
    await h["m.typing"]("peer.test", {"room_id": ROOM, "user_id": "@b:other.test", "typing": True})  # not its user
    await h["m.typing"]("peer.test", {"room_id": DENIED_ROOM, "user_id": "@a:peer.test", "typing": True})  # ACL
    await h["m.typing"]("peer.test", {"room_id": "!x:here.test", "user_id": "@a:peer.test", "typing": True})
    await h["m.typing"]("peer.test", {"room_id": ROOM, "user_id": "@a:peer.test", "typing": "yes"})
    await h["m.typing"]("peer.test", ["junk"])
    assert sink.typing == [(ROOM, "@a:peer.test", True)]


async def test_receipts() -> None:
    sink = Sink()
    h = handlers(sink)
    content = {
        ROOM: {
            "m.read": {
                "@a:peer.test": {"event_ids": ["$e"], "data": {"ts": 1}},
                "@b:other.test": {"event_ids": ["$e"], "data": {"ts": 1}},
                "@c:peer.test": {"event_ids": ["$e"], "data": {"ts": 1}},  # not joined
            }
        },
        DENIED_ROOM: {"m.read": {"@a:peer.test": {"event_ids": ["$e"]}}},
        "!bad:here.test": "junk",
    }
    await h["m.receipt"]("peer.test", content)
    assert sink.receipts == [(ROOM, "m.read", "@a:peer.test", ["$e"])]


async def test_presence_only_when_on_and_only_for_its_users() -> None:
    sink = Sink()
    h = handlers(sink)
    await h["m.presence"]("peer.test", {"push": [{"user_id": "@a:peer.test"}, {"user_id": "@b:other.test"}, 5]})
    assert sink.presence == ["@a:peer.test"]
    assert "m.presence" not in handlers(Sink(), presence=False)
