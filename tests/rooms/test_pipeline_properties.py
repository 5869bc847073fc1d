"""Property test: random local membership, state and message operations by several users in one room.

After every operation the room's current state in `room_state` equals its snapshot and the state a
replay of the accepted events gives; the membership indexes equal the member events of that state;
a refused operation writes nothing.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from homeserver.errors import MatrixError
from homeserver.protocol.auth_rules import check_auth
from homeserver.protocol.room_versions import get_room_version
from homeserver.rooms.creation import RoomCreation, create_room
from storage.check import check_consistency
from storage.rooms import MEMBERSHIPS
from tests.rooms.remote import LOCAL, Local, dump

USERS = [f"@{name}:{LOCAL}" for name in ("alice", "bob", "carol", "dave")]
ALICE = USERS[0]

user = st.sampled_from(USERS)
# mostly operations that have a chance: users changing their own membership, alice managing others
admin = st.sampled_from([ALICE, ALICE, ALICE, *USERS[1:]])
operation = st.one_of(
    st.tuples(st.just("message"), user),
    user.flatmap(lambda u: st.tuples(st.just("member"), st.just(u), st.just(u), st.sampled_from(MEMBERSHIPS))),
    st.tuples(st.just("member"), admin, user, st.sampled_from(["invite", "ban", "leave"])),
    st.tuples(st.just("member"), user, user, st.sampled_from(MEMBERSHIPS)),
    st.tuples(
        st.just("state"), user, st.sampled_from(["m.room.name", "m.room.topic", "org.example.s"]), st.integers(0, 3)
    ),
    st.tuples(st.just("join_rules"), admin, st.sampled_from(["public", "invite", "knock"])),
    st.tuples(st.just("power"), admin, user, st.sampled_from([0, 50, 100])),
)


def _request(op: tuple[Any, ...], pl_content: dict[str, Any]) -> tuple[str, str, dict[str, Any], str | None]:
    kind, sender = op[0], op[1]
    if kind == "message":
        return sender, "m.room.message", {"msgtype": "m.text", "body": "hi"}, None
    if kind == "member":
        return sender, "m.room.member", {"membership": op[3]}, op[2]
    if kind == "state":
        key = "name" if op[2] == "m.room.name" else "topic" if op[2] == "m.room.topic" else "v"
        return sender, op[2], {key: str(op[3])}, ""
    if kind == "join_rules":
        return sender, "m.room.join_rules", {"join_rule": op[2]}, ""
    users = {**pl_content.get("users", {}), op[2]: op[3]}
    return sender, "m.room.power_levels", {**pl_content, "users": users}, ""


def _check_room(local: Local, room_id: str, model: dict[tuple[str, str], str]) -> None:
    current = local.current_state(room_id)
    assert current == model
    assert local.snapshot_state(room_id) == model
    replayed: dict[tuple[str, str], str] = {}
    for eid in local.timeline(room_id):
        ev = local.event(eid)
        if isinstance(ev.get("state_key"), str):
            replayed[(ev["type"], ev["state_key"])] = eid
    assert replayed == model
    room = local.room_short(room_id)
    expected: dict[str, dict[str, str]] = {m: {} for m in MEMBERSHIPS}
    for (etype, state_key), eid in model.items():
        if etype == "m.room.member":
            expected[local.event(eid)["content"]["membership"]][state_key] = eid
    for membership in MEMBERSHIPS:
        assert local.members(room_id, membership) == expected[membership]
    for u in USERS:
        ur = local.db.rooms.user_room(u, room)
        in_state = model.get(("m.room.member", u))
        if in_state is None:
            assert ur is None
        else:
            assert ur is not None and local.db.ids.event_id(ur.event) == in_state
            assert ur.membership == local.event(in_state)["content"]["membership"]
    assert local.db.rooms.servers(room) == ([LOCAL] if expected["join"] else [])


async def _run(path: Path, version: str, ops: list[tuple[Any, ...]]) -> None:
    local = Local(path)
    try:
        rv = get_room_version(version)
        room_id = await create_room(local.pipe, RoomCreation(creator=ALICE, room_version=version))
        model = local.current_state(room_id)
        _check_room(local, room_id, model)
        for op in ops:
            pl = local.event(model[("m.room.power_levels", "")])["content"]
            sender, event_type, content, state_key = _request(op, pl)
            before = dump(local.db)
            try:
                ev = await local.pipe.send(room_id, sender, event_type, content, state_key)
            except MatrixError as e:
                assert e.status == 403, e
                assert dump(local.db) == before
                continue
            # the accepted event is allowed by the state the model holds before it
            state_events = {k: local.event(v) for k, v in model.items()}
            check_auth(ev.event, state_events, rv, create_event_id=model[("m.room.create", "")])
            if state_key is not None:
                model[(event_type, state_key)] = ev.event_id
            assert local.extremities(room_id) == {ev.event_id}
            _check_room(local, room_id, model)
        assert check_consistency(local.db, full=True) == []
    finally:
        local.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["1", "6", "10", "12"]), st.lists(operation, min_size=5, max_size=40))
def test_random_operations_keep_state_and_indexes_in_step(version: str, ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory(prefix="pipeline-prop-") as tmp:
        asyncio.run(_run(Path(tmp) / "db", version, ops))
