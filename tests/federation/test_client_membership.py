"""What the clients' membership calls need of federation: an invite refused through the resident or,
when no server of the room answers, here only; and the queries for aliases and profiles.

spec: server-server-api "Leaving rooms (rejecting invites)", "Querying for information";
client-server-api POST /rooms/{roomId}/leave (an invite is refused by leaving).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.client import FederationError, Unreachable
from federation.membership import RemoteMembership
from federation.service import RemoteQueries
from homeserver.errors import MatrixError
from homeserver.protocol.event_ids import event_id
from homeserver.protocol.room_versions import get_room_version
from tests.federation.test_membership import Transport
from tests.rooms.remote import ALICE_R, BOB_L, LOCAL, RESIDENT, Pair


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


async def invited(pair: Pair, version: str) -> tuple[str, dict[str, Any]]:
    room_id = await pair.room(version)
    res, ours = pair.resident, pair.local
    event, _, _ = res.pipe.prepare_local(room_id, ALICE_R, "m.room.member", {"membership": "invite"}, BOB_L)
    signed, _ = await ours.pipe.receive_invite(version, copy.deepcopy(event), [], ours.keys)
    await res.pipe.receive(copy.deepcopy(signed), res.keys)
    return room_id, signed


@pytest.mark.parametrize("version", ["1", "10", "12"])
async def test_an_invite_refused_here_only_when_no_server_answers(pair: Pair, version: str) -> None:
    room_id, invite = await invited(pair, version)
    ours = pair.local
    transport = Transport(pair)
    transport.down.add(RESIDENT)
    membership = RemoteMembership(LOCAL, ours.pipe, transport, ours.keys)
    with pytest.raises(MatrixError) as refused:
        await membership.leave_and_record(room_id, BOB_L, [RESIDENT])
    assert refused.value.status == 404
    persisted = await membership.leave_locally(invite, version)
    room = ours.db.ids.room(room_id)
    assert room is not None
    ur = ours.db.rooms.user_room(BOB_L, room)
    assert ur is not None and ur.membership == "leave" and ur.stream == persisted.stream > 0
    assert ours.db.rooms.invite_state(BOB_L, room) is None
    # the leave follows the invite and is ours: signed by this server, for this user
    rv = get_room_version(version)
    leave = persisted.event
    assert leave["sender"] == leave["state_key"] == BOB_L and leave["content"] == {"membership": "leave"}
    assert LOCAL in leave["signatures"] and persisted.event_id == event_id(leave, rv)
    invite_id = event_id(invite, rv)
    prev = leave["prev_events"][0]
    assert (prev[0] if isinstance(prev, list) else prev) == invite_id
    # the resident never heard of the leave: the invite stands there
    assert BOB_L in pair.resident.members(room_id, "invite")


async def test_an_invite_refused_through_the_resident_is_kept_here(pair: Pair) -> None:
    room_id, _ = await invited(pair, "11")
    ours, res = pair.local, pair.resident
    membership = RemoteMembership(LOCAL, ours.pipe, Transport(pair), ours.keys)
    persisted = await membership.leave_and_record(room_id, BOB_L, ["elsewhere.test", RESIDENT])
    room = ours.db.ids.room(room_id)
    assert room is not None
    ur = ours.db.rooms.user_room(BOB_L, room)
    assert ur is not None and ur.membership == "leave"
    assert res.current_state(room_id)[("m.room.member", BOB_L)] == persisted.event_id


class Answers:
    """A federation client whose answers the test sets per path prefix."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.asked: list[tuple[str, str]] = []

    async def request(self, destination: str, method: str, path: str, **kw: Any) -> Any:
        self.asked.append((destination, path))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


async def test_alias_query_asks_the_alias_server_and_checks_the_answer() -> None:
    client = Answers({"room_id": "!r:there.test", "servers": ["other.test", 5]})
    room_id, servers = await RemoteQueries(client).room_alias("#a:there.test")  # type: ignore[arg-type]
    assert room_id == "!r:there.test" and servers == ["other.test", "there.test"]
    destination, path = client.asked[0]
    assert destination == "there.test"
    assert path == "/_matrix/federation/v1/query/directory?room_alias=%23a%3Athere.test"


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"servers": []}, 502),
        ([], 502),
        ({"room_id": 7}, 502),
        (FederationError("there.test", 404, "M_NOT_FOUND", "no"), 404),
        (FederationError("there.test", 500, None, "broken"), 502),
        (Unreachable("there.test: refused"), 404),
    ],
)
async def test_alias_query_errors_are_matrix_errors(answer: Any, status: int) -> None:
    with pytest.raises(MatrixError) as e:
        await RemoteQueries(Answers(answer)).room_alias("#a:there.test")  # type: ignore[arg-type]
    assert e.value.status == status


async def test_profile_query() -> None:
    client = Answers({"displayname": "Bob", "avatar_url": "mxc://there.test/a"})
    found = await RemoteQueries(client).profile("@bob:there.test")  # type: ignore[arg-type]
    assert found == {"displayname": "Bob", "avatar_url": "mxc://there.test/a"}
    assert client.asked == [("there.test", "/_matrix/federation/v1/query/profile?user_id=%40bob%3Athere.test")]
    unknown = Answers(FederationError("there.test", 404, "M_NOT_FOUND", "no"))
    assert await RemoteQueries(unknown).profile("@bob:there.test") is None  # type: ignore[arg-type]
