"""A server that newly shares a room with our users hears their current presence, once.

spec: server-server-api "Presence" (updates go to the servers interested in a user, such as those
sharing a room with them). Who is told what: federation/presence.py.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.presence import STATES_PER_EDU, PresenceIntroductions
from homeserver.config import Config
from homeserver.ephemeral.presence import Presence
from homeserver.notifier import Notifier
from homeserver.rooms.queries import RoomQueries
from homeserver.server import HomeServer
from tests.rooms.remote import ALICE_R, BOB_L, LOCAL, RESIDENT, Pair

ALICE, BOB, CAROL, DAVE = (f"@{n}:here.test" for n in ("alice", "bob", "carol", "dave"))
Sent = list[tuple[str, list[dict[str, Any]]]]  # (destination, push)


class Rooms:
    """RoomQueries' answers over a dict of room -> joined users."""

    server_name = "here.test"

    def __init__(self, members: dict[int, list[str]]) -> None:
        self.members = members

    def is_local(self, identifier: str) -> bool:
        return identifier.endswith(":here.test")

    def is_joined(self, user_id: str, room: int) -> bool:
        return user_id in self.members.get(room, ())

    def joined_rooms(self, user_id: str) -> list[int]:
        return [r for r, users in self.members.items() if user_id in users]

    def servers_in_room(self, room: int) -> list[str]:
        return sorted({u.partition(":")[2] for u in self.members[room]})

    def server_in_room(self, room: int, server: str) -> bool:
        return any(u.endswith(":" + server) for u in self.members[room])

    def server_members(self, room: int, server: str) -> Iterator[str]:
        return (u for u in sorted(self.members[room]) if u.endswith(":" + server))


class Present:
    """Our users' presence: user -> (state, last active ms)."""

    def __init__(self, states: dict[str, tuple[str, int]]) -> None:
        self.states = states

    def present_local_users(self) -> dict[str, int]:
        return {u: ts for u, (state, ts) in self.states.items() if state != "offline"}

    def content(self, user_id: str) -> dict[str, Any]:
        return {"presence": self.states[user_id][0]}


def relay(rooms: dict[int, list[str]], states: dict[str, tuple[str, int]], **kw: Any) -> tuple[Any, Sent]:
    sent: Sent = []

    def send(servers: Any, edu_type: str, content: dict[str, Any]) -> None:
        assert edu_type == "m.presence"
        sent.extend((s, content["push"]) for s in servers)

    return PresenceIntroductions(Rooms(rooms), Present(states), send, **kw), sent


STATES = {ALICE: ("online", 3), BOB: ("offline", 9), CAROL: ("unavailable", 2), DAVE: ("online", 1)}


async def test_a_server_new_to_the_room_hears_of_our_users_there_who_are_not_offline() -> None:
    intro, sent = relay({1: [ALICE, BOB, CAROL, "@p:peer.test"], 2: [DAVE]}, STATES)
    await intro.introduce(1, {"@p:peer.test"})
    # most recently active first; bob is offline, dave is not in the room
    assert sent == [
        (
            "peer.test",
            [{"user_id": ALICE, "presence": "online"}, {"user_id": CAROL, "presence": "unavailable"}],
        )
    ]


async def test_a_server_already_in_the_room_hears_nothing_new() -> None:
    intro, sent = relay({1: [ALICE, "@p:peer.test", "@q:peer.test"]}, STATES)
    await intro.introduce(1, {"@q:peer.test"})  # peer.test was there through @p
    assert sent == []


async def test_users_the_server_already_shares_another_room_with_are_left_out() -> None:
    intro, sent = relay({1: [ALICE, CAROL, "@p:peer.test"], 2: [CAROL, "@old:peer.test"]}, STATES)
    await intro.introduce(1, {"@p:peer.test"})
    assert sent == [("peer.test", [{"user_id": ALICE, "presence": "online"}])]


async def test_our_user_who_joins_is_told_of_to_the_servers_there() -> None:
    rooms = {1: [ALICE, BOB, "@p:peer.test", "@o:other.test"], 2: [ALICE, "@o2:other.test"]}
    intro, sent = relay(rooms, STATES)
    await intro.introduce(1, {ALICE})
    assert sent == [("peer.test", [{"user_id": ALICE, "presence": "online"}])]  # other.test knows her
    sent.clear()
    await intro.introduce(1, {BOB})  # offline: nothing to tell
    assert sent == []


async def test_joining_a_remote_room_tells_each_server_once() -> None:
    """Our user joining a room on another server: the whole room's state arrives, every member new."""
    rooms = {1: [DAVE, "@r:res.test", "@s:res.test", "@o:other.test"]}
    intro, sent = relay(rooms, STATES)
    await intro.introduce(1, set(rooms[1]))
    assert sent == [
        ("other.test", [{"user_id": DAVE, "presence": "online"}]),
        ("res.test", [{"user_id": DAVE, "presence": "online"}]),
    ]


async def test_a_big_room_sends_a_bounded_number_in_bounded_edus() -> None:
    ours = [f"@u{i:04d}:here.test" for i in range(5000)]
    states = {u: ("online", i) for i, u in enumerate(ours)}
    intro, sent = relay({1: [*ours, "@p:peer.test"]}, states, max_users=120)
    await intro.introduce(1, {"@p:peer.test"})
    assert [len(push) for _, push in sent] == [STATES_PER_EDU, STATES_PER_EDU, 20]
    told = [entry["user_id"] for _, push in sent for entry in push]
    assert told == ours[::-1][:120]  # the most recently active
    sent.clear()
    await intro.introduce(1, {"@p2:peer.test"})  # every later join from peer.test costs nothing
    assert sent == []


async def test_presence_off_tells_nothing() -> None:
    sent: Sent = []
    presence = Presence(None, None, Rooms({}), None, enabled=False)  # type: ignore[arg-type]
    intro = PresenceIntroductions(Rooms({1: [ALICE, "@p:peer.test"]}), presence, lambda s, t, c: sent.append(("", [])))
    await presence.set(ALICE, "online")
    await intro.introduce(1, {"@p:peer.test"})
    assert sent == []


# -- through the store: the membership hook of a real server's room tables ----------------------


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


async def until(check: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "not in time"
        await asyncio.sleep(0.01)


async def test_joins_written_by_the_event_pipeline_are_introduced(pair: Pair) -> None:
    """The resident server is "us" here: Alice is online, Carol offline. Our server's Bob joining
    tells hs.test of Alice; and on our side, Bob (online) joining tells the resident of Bob."""
    res, ours = pair.resident, pair.local
    sent: dict[str, Sent] = {RESIDENT: [], LOCAL: []}
    intros = []
    presences = {}
    for side in (res, ours):
        name = side.identity.server_name
        db = side.db
        queries = RoomQueries(name, db.ids, db.rooms, db.events, db.snapshots)
        presences[name] = presence = Presence(db.store, db.presence, queries, Notifier(db.store))

        def send(servers: Any, edu_type: str, content: dict[str, Any], out: Sent = sent[name]) -> None:
            out.extend((s, content["push"]) for s in servers)

        intro = PresenceIntroductions(queries, presence, send)
        db.rooms.membership_hooks.append(intro.membership_written)
        intros.append(intro)
    try:
        room_id = await pair.room("10")
        await presences[RESIDENT].set(ALICE_R, "online", "here")
        await presences[LOCAL].set(BOB_L, "online")
        assert sent[RESIDENT] == []  # Carol's join brought no new server
        join, state, auth_chain = await pair.send_join(room_id)
        await until(lambda: sent[RESIDENT])
        assert [(d, [e["user_id"] for e in push]) for d, push in sent[RESIDENT]] == [(LOCAL, [ALICE_R])]
        assert sent[RESIDENT][0][1][0]["status_msg"] == "here"
        await ours.pipe.receive_join(room_id, "10", copy.deepcopy(join), state, auth_chain, ours.keys)
        await until(lambda: sent[LOCAL])
        assert [(d, [e["user_id"] for e in push]) for d, push in sent[LOCAL]] == [(RESIDENT, [BOB_L])]
        # a second user of a server already in the room: nothing more
        await pair.send_join(room_id, f"@dan:{LOCAL}")
        await until(lambda: intros[0]._task is None)
        assert len(sent[RESIDENT]) == 1
    finally:
        for intro in intros:
            await intro.close()
        for presence in presences.values():
            await presence.close()


async def test_a_server_whose_user_left_again_before_the_sending_is_not_told() -> None:
    intro, sent = relay({1: [ALICE]}, STATES)
    await intro.introduce(1, {"@p:peer.test"})  # joined, and left before the task ran
    assert sent == []


@pytest.mark.parametrize("on", [True, False])
def test_wired_only_when_presence_is_on(tmp_path: Path, on: bool) -> None:
    config = Config.model_validate({"data_dir": str(tmp_path), "server_name": "example.test", "presence": on})
    hs = HomeServer(config)
    try:
        intro = hs.presence_introductions
        assert (intro is not None) is on
        hooks = hs.db.rooms.membership_hooks
        assert any(getattr(hook, "__func__", None) is PresenceIntroductions.membership_written for hook in hooks) is on
    finally:
        hs.close()
