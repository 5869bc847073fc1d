"""EDUs speak only for the sending server's users, in rooms its ACL admits and they are joined to.

spec: server-server-api "Typing Notifications", "Receipts", "Presence", "Server Access Control Lists".
"""

from __future__ import annotations

from typing import Any

from federation.edus import EduRelay, EphemeralServices, edu_handlers
from homeserver.ephemeral.presence import Presence

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


MEMBERS: dict[int, list[str]] = {
    1: ["@alice:here.test", "@a:peer.test"],
    2: ["@alice:here.test", "@bob:here.test"],
    3: ["@z:far.test"],
}


class Rooms:
    """The room questions EduRelay and EphemeralServices ask (RoomQueries' names): alice of here.test
    is in room 1 with peer.test, and in room 2 with nobody from elsewhere; zed of far.test shares
    no room with anyone here."""

    server_name = "here.test"
    members = MEMBERS

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(":here.test")

    def joined_rooms(self, user_id: str) -> list[int]:
        return [r for r, users in self.members.items() if user_id in users]

    def servers_in_room(self, room: int) -> list[str]:
        return sorted({u.partition(":")[2] for u in self.members[room]})

    def users_sharing_a_room(self, user_id: str) -> set[str]:
        return {u for r in self.joined_rooms(user_id) for u in self.members[r]}

    def shares_a_room_with_us(self, user_id: str) -> bool:
        return any(self.is_local(u) for u in self.users_sharing_a_room(user_id))


async def test_presence_goes_only_to_servers_sharing_a_room() -> None:
    """spec: server-server "Presence": a server tells of its users' presence to the servers it shares
    a room with; nothing about another server's users, nothing to servers it shares no room with."""
    sent: list[tuple[list[str], str, dict[str, Any]]] = []
    relay = EduRelay(Rooms(), lambda servers, t, c: sent.append((list(servers), t, c)))  # type: ignore[arg-type]
    relay.presence_changed("@alice:here.test", {"presence": "online", "status_msg": "hi"})
    relay.presence_changed("@bob:here.test", {"presence": "online"})  # shares rooms only with here.test
    relay.presence_changed("@a:peer.test", {"presence": "online"})  # not ours to tell of
    assert sent == [
        (
            ["peer.test"],
            "m.presence",
            {"push": [{"user_id": "@alice:here.test", "presence": "online", "status_msg": "hi"}]},
        )
    ]


async def test_presence_of_users_nobody_here_can_see_is_not_kept() -> None:
    seen: list[str] = []

    class PresenceSink:
        async def remote(self, user_id: str, update: dict[str, Any]) -> None:
            seen.append(user_id)

    services = EphemeralServices(None, None, PresenceSink(), Rooms())  # type: ignore[arg-type]
    await services.remote_presence("@a:peer.test", {"presence": "online"})
    await services.remote_presence("@z:far.test", {"presence": "online"})  # shares no room with ours
    assert seen == ["@a:peer.test"]


async def test_presence_off_sends_and_takes_nothing() -> None:
    """With presence off, a change is never made, so no listener (the relay) hears of one; and the
    `m.presence` handler is not registered (test_presence_only_when_on_and_only_for_its_users)."""
    presence = Presence(None, None, Rooms(), None, enabled=False)  # type: ignore[arg-type]
    heard: list[str] = []
    presence.add_change_listener(heard.append)
    await presence.set("@alice:here.test", "online", "hi")
    await presence.remote("@a:peer.test", {"presence": "online"})
    await presence.syncing("@alice:here.test", None)
    assert heard == []
