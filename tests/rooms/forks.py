"""A room forked by another server into two long branches, for state resolution tests and the
event-loop benchmark (bench/state_res_loop.py).

`n` remote users join a public room of ours; then branch A (received here, in the timeline) has each
of them change their member event, and branch B (built from the same base, not received) does the
same differently; a message merges the two. The states after the two tips disagree on `n` keys:
a resolution of `2 n` conflicted state events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from homeserver.protocol.auth_rules import auth_types_for_event
from homeserver.rooms.creation import RoomCreation, create_room
from tests.rooms.remote import LOCAL, Local, event_id_of

ALICE = f"@alice:{LOCAL}"
REMOTE = "fork.test"


@dataclass
class Fork:
    room_id: str
    tip_a: str
    tip_b: str
    branch_b: list[dict[str, Any]]  # in order, each on the one before, the first on the base
    state_after_b: list[str]  # event ids of the state after B's tip
    merge: dict[str, Any]  # a message on both tips


async def forked_room(local: Local, n: int, version: str = "10") -> Fork:
    rv = local.rv_of_version(version)
    room_id = await create_room(local.pipe, RoomCreation(creator=ALICE, room_version=version, preset="public_chat"))
    server = local.remote(REMOTE)
    users = [f"@user{i}:{REMOTE}" for i in range(n)]

    async def on_top(sender: str, content: dict[str, Any]) -> str:
        (tip,) = local.extremities(room_id)
        pdu = server.build(local, room_id, sender, "m.room.member", content, state_key=sender, prev=[tip])
        persisted = await local.pipe.receive(pdu, local.keys)
        assert persisted.rejected is None and not persisted.soft_failed, persisted.rejected
        return persisted.event_id

    for user in users:
        await on_top(user, {"membership": "join"})
    (base,) = local.extremities(room_id)
    base_state = local.state_after(base)
    depth = local.meta(base).depth
    for user in users:
        await on_top(user, {"membership": "join", "displayname": f"{user} on A"})
    (tip_a,) = local.extremities(room_id)

    state = dict(base_state)
    prev = base
    branch_b: list[dict[str, Any]] = []
    for user in users:
        content = {"membership": "join", "displayname": f"{user} on B"}
        depth += 1
        pdu = server.build(
            local,
            room_id,
            user,
            "m.room.member",
            content,
            state_key=user,
            prev=[prev],
            auth=_auth(state, rv, user, "m.room.member", content, user),
            depth=depth,
        )
        prev = event_id_of(pdu, rv)
        state[("m.room.member", user)] = prev
        branch_b.append(pdu)
    content = {"msgtype": "m.text", "body": "merged"}
    merge = server.build(
        local,
        room_id,
        users[0],
        "m.room.message",
        content,
        prev=[tip_a, prev],
        auth=_auth(base_state, rv, users[0], "m.room.message", content, None),
        depth=max(depth, local.meta(tip_a).depth) + 1,
    )
    return Fork(room_id, tip_a, prev, branch_b, list(state.values()), merge)


def _auth(
    state: dict[tuple[str, str], str],
    rv: Any,
    sender: str,
    event_type: str,
    content: dict[str, Any],
    state_key: str | None,
) -> list[str]:
    event: dict[str, Any] = {"type": event_type, "sender": sender, "content": content}
    if state_key is not None:
        event["state_key"] = state_key
    return [state[k] for k in auth_types_for_event(event, rv) if k in state]
