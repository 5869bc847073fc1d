"""What `PushService.write_hook` writes for each event equals each member's own ruleset evaluated
alone (spec: modules/push.md), through the shortcuts it takes: the audience kept per room and sender,
one answer for the members an event does not name, and the room facts looked up only when asked."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from homeserver.config import Config
from homeserver.protocol.power_levels import get_notification_level, get_user_power_level
from homeserver.push import rules as push_rules
from homeserver.push.evaluator import EventContext, evaluate, is_highlight
from homeserver.rooms.creation import RoomCreation
from homeserver.server import HomeServer

HIGHLIGHT = ["notify", {"set_tweak": "highlight"}]


@pytest_asyncio.fixture
async def hs(tmp_path: Path) -> AsyncIterator[HomeServer]:
    config = Config.model_validate(
        {"server_name": "hs.test", "data_dir": tmp_path / "data", "password_hash_cost": "low", "registration": "open"}
    )
    server = HomeServer(config)
    try:
        yield server
    finally:
        server.close()


class Room:
    def __init__(self, hs: HomeServer, room_id: str) -> None:
        self.hs = hs
        self.room_id = room_id
        self.short = hs.db.ids.room(room_id) or 0
        self.txn = 0
        self.everyone: list[str] = []  # whose notifications `written` looks at (default: the members)

    def state(self, event_type: str, state_key: str = "") -> dict[str, Any] | None:
        event = self.hs.queries.current_state_event(self.short, event_type, state_key)
        return dict(event.raw) if event is not None else None

    def expected(self, event: dict[str, Any], invitee: str | None = None) -> dict[str, tuple[list[Any], bool]]:
        """Each local member's (and an invitee's) actions for `event`, their own ruleset evaluated alone."""
        push, db = self.hs.push, self.hs.db
        sender = event["sender"]
        version = str(db.rooms.info(self.short)["version"])
        levels = self.state("m.room.power_levels")
        ctx = EventContext(
            event,
            member_count=lambda: db.rooms.member_count(self.short, "join"),
            sender_power=lambda: get_user_power_level(sender, levels, self.state("m.room.create"), version),
            notification_level=lambda key: get_notification_level(levels, key, version),
            display_name=lambda user: None,
        )
        users = [u for u, _ in db.rooms.members(self.short, "join")]
        if invitee is not None and invitee not in users:
            users.append(invitee)
        out = {}
        for user in users:
            if user == sender or sender in self.hs.account_data.ignored(user):
                continue
            actions = evaluate(push.rules.ruleset(user), ctx, user)
            if actions and "notify" in actions:
                out[user] = (actions, is_highlight(actions))
        return out

    def written(self, short: int) -> dict[str, tuple[list[Any], bool]]:
        """The notifications stored for the event, by user."""
        db = self.hs.db
        meta = db.events.get_meta(short)
        assert meta is not None
        position = meta.stream
        out = {}
        members = [u for u, _ in [*db.rooms.members(self.short, "join"), *db.rooms.members(self.short, "invite")]]
        for user in self.everyone or members:
            for at, record in db.push.notifications(user, before=position + 1):
                if at == position:
                    assert record["event"] == short
                    out[user] = (record["actions"], record["highlight"])
                break
        return out

    async def send(self, sender: str, content: dict[str, Any], event_type: str = "m.room.message") -> int:
        self.txn += 1
        send = self.hs.rooms.sender.send_message
        event_id = await send(sender, "DEV", self.room_id, event_type, content, str(self.txn))
        short = self.hs.db.ids.event(event_id)
        assert short is not None
        event = self.hs.db.events.get_json(short)
        assert event is not None
        assert self.written(short) == self.expected(event), content
        return short


async def test_notifications_equal_each_members_rules_alone(hs: HomeServer) -> None:
    push, accounts = hs.push, hs.accounts
    alice, bob, carol, dave, erin = [await accounts.create(n, "pw") for n in ("alice", "bob", "carol", "dave", "erin")]
    room_id = await hs.rooms.create_room(RoomCreation(alice, "11", preset="public_chat"))
    for user in (bob, carol, dave):
        await hs.rooms.membership.join(user, room_id)
    room = Room(hs, room_id)
    room.everyone = [alice, bob, carol, dave, erin]

    def carol_rules(record: dict[str, Any]) -> dict[str, Any]:
        record = push_rules.put_rule(record, "content", "tea", {"pattern": "tea", "actions": HIGHLIGHT}, None, None)
        record = push_rules.put_rule(
            record,
            "override",
            "bots",
            {
                "conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}],
                "actions": ["notify"],
            },
            None,
            None,
        )
        return push_rules.set_attribute(record, "underride", ".m.rule.message", "enabled", False)

    await push.rules.change_rules(carol, carol_rules)
    messages: list[tuple[str, dict[str, Any]]] = [
        (alice, {"msgtype": "m.text", "body": "plain"}),
        (bob, {"msgtype": "m.text", "body": "plain from bob"}),
        (alice, {"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [bob, carol.upper()]}}),
        (alice, {"msgtype": "m.text", "body": "all", "m.mentions": {"room": True}}),  # alice may @room
        (bob, {"msgtype": "m.text", "body": "all?", "m.mentions": {"room": True}}),  # bob may not
        (bob, {"msgtype": "m.notice", "body": "a bot"}),
        (alice, {"msgtype": "m.text", "body": "tea time"}),
        (alice, {"msgtype": "m.text", "body": "* x", "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}),
    ]
    for sender, content in messages:
        await room.send(sender, content)
    await room.send(bob, {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}, "m.room.encrypted")
    await room.send(bob, {"anything": True}, "org.example.custom")

    # someone ignoring the sender: a change of ignore list takes effect at once
    await hs.account_data.set(dave, "m.ignored_user_list", {"ignored_users": {alice: {}}})
    await room.send(alice, {"msgtype": "m.text", "body": "dave ignores me"})
    await room.send(bob, {"msgtype": "m.text", "body": "dave hears me"})
    # a change of rules too
    mute = lambda r: push_rules.set_attribute(r, "override", ".m.rule.master", "enabled", True)  # noqa: E731
    await push.rules.change_rules(bob, mute)
    await room.send(alice, {"msgtype": "m.text", "body": "bob muted everything"})
    # and of membership: a new member is notified by the next event, one who left is not
    await hs.rooms.membership.join(erin, room_id)
    welcome = await room.send(alice, {"msgtype": "m.text", "body": "welcome erin"})
    assert erin in room.written(welcome)
    await hs.rooms.membership.leave(erin, room_id)
    assert erin not in room.written(await room.send(alice, {"msgtype": "m.text", "body": "bye erin"}))
    # two rooms of the same server keep their audiences apart
    other = Room(hs, await hs.rooms.create_room(RoomCreation(bob, "11", preset="public_chat")))
    other.everyone = room.everyone
    await other.send(bob, {"msgtype": "m.text", "body": "alone"})
    await hs.rooms.membership.join(alice, other.room_id)
    await other.send(bob, {"msgtype": "m.text", "body": "dm"})


async def test_an_invite_notifies_the_invitee_alongside_the_members(hs: HomeServer) -> None:
    accounts = hs.accounts
    alice, bob, erin = [await accounts.create(n, "pw") for n in ("alice", "bob", "erin")]
    room_id = await hs.rooms.create_room(RoomCreation(alice, "11", preset="public_chat"))
    await hs.rooms.membership.join(bob, room_id)
    room = Room(hs, room_id)
    await room.send(alice, {"msgtype": "m.text", "body": "hello"})
    await hs.rooms.membership.invite(alice, room_id, erin)
    short = hs.db.rooms.state_event(room.short, hs.db.ids.state_key("m.room.member", erin) or 0)
    assert short is not None
    invite = hs.db.events.get_json(short)
    assert invite is not None and invite["content"]["membership"] == "invite"
    written = room.written(short)
    assert written == room.expected(invite, invitee=erin)
    assert written[erin] == (["notify", {"set_tweak": "sound", "value": "default"}], False)


def test_the_audience_of_a_sender() -> None:
    from homeserver.push.evaluator import CompiledRuleset
    from homeserver.push.service import _RoomRules

    default, custom = CompiledRuleset({}), CompiledRuleset({})
    rules = _RoomRules([(default, ["@a:hs", "@b:hs", "@c*:hs"]), (custom, ["@d:hs"])], {"@b:hs": frozenset({"@x:hs"})})
    assert rules.audience("@a:hs") == [(default, ["@b:hs", "@c*:hs"], False), (custom, ["@d:hs"], True)]
    assert rules.audience("@x:hs") == [(default, ["@a:hs", "@c*:hs"], False), (custom, ["@d:hs"], True)]
    assert rules.audience("@d:hs") == [(default, ["@a:hs", "@b:hs", "@c*:hs"], False)]
    # senders no member is or ignores share one audience: everyone
    everyone = rules.audience("@remote:elsewhere")
    assert everyone == [(default, ["@a:hs", "@b:hs", "@c*:hs"], False), (custom, ["@d:hs"], True)]
    assert rules.audience("@other:elsewhere") is everyone
    assert rules.audience("@a:hs") is rules.audience("@a:hs")  # kept
    assert rules.audience(None) == everyone  # not a string: worked out each time
    plain = _RoomRules([(default, ["@a:hs", "@b:hs"])], {})
    assert plain.audience("@a:hs") == [(default, ["@b:hs"], True)]
    assert plain.audience("@b:hs") == [(default, ["@a:hs"], True)]
    for n in range(100_000):  # many senders: the cache stays bounded
        plain.audience(f"@u{n}:elsewhere")
    assert len(plain._audiences) < 30_000
    assert plain.audience("@a:hs") == [(default, ["@b:hs"], True)]
