"""The auth chains stored per event answer state resolution's queries exactly as a walk over the
events does: same auth chains, same auth difference (own events included), in rooms v10 and v12
(where the create event counts as an implicit auth event)."""

from __future__ import annotations

import itertools

import pytest

from homeserver.protocol.room_versions import get_room_version
from homeserver.rooms.state_access import StoredAuthChains, StoredEventMap
from homeserver.state import EventMapAuthChains, EventSource

from .remote import Local
from .test_pipeline_remote import ERIN, GUS, all_events, event_id_of, msg, only, public_room


@pytest.mark.parametrize("version", ["10", "12"])
async def test_stored_chains_match_a_walk(local: Local, version: str) -> None:
    rv = get_room_version(version)
    room_id = await public_room(local, version, [ERIN, GUS], levels={ERIN: 50, GUS: 50})
    fork = only(local.extremities(room_id))
    remote, other = local.remote("remote.test"), local.remote("other.test")
    tips = []
    for server, sender, name in ((remote, ERIN, "a"), (other, GUS, "b")):
        prev = fork
        for i in range(3):
            pdu = server.build(local, room_id, sender, "m.room.name", {"name": f"{name}{i}"}, state_key="", prev=[prev])
            await local.pipe.receive(pdu, local.keys)
            prev = event_id_of(pdu, rv)
        pdu = server.build(local, room_id, sender, "m.room.message", msg(name), prev=[prev])
        await local.pipe.receive(pdu, local.keys)
        tips.append(prev)

    events = all_events(local)
    walk = EventMapAuthChains(EventSource(events, rv))
    stored = StoredAuthChains(EventSource(StoredEventMap(local.db), rv), local.db)
    state_sets = [set(local.state_after(t).values()) for t in tips]
    state_sets.append(set(local.current_state(room_id).values()))
    for a, b in itertools.combinations(state_sets, 2):
        assert stored.auth_chain_difference([a, b]) == walk.auth_chain_difference([a, b])
    for event_id in state_sets[0] | state_sets[1]:
        assert stored.auth_chain([event_id]) == walk.auth_chain([event_id]), event_id
