"""PDUs pushed to us with gaps in front of them, filled from the sending server, which answers
from its own store through `FederationReads` (the same code that serves our federation API).

spec: server-server-api "Checks performed on receipt of a PDU", "Backfilling and retrieving missing
events", "Retrieving events".
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from federation.inbound import MISSING_EVENTS_LIMIT, MISSING_EVENTS_MAX, Inbound
from homeserver.rooms.federation_reads import FederationReads, NotInRoom
from tests.rooms.remote import ALICE_R, BOB_L, CAROL_R, LOCAL, RESIDENT, Pair, msg


class ResidentApi:
    """The resident server's federation reads, as `FederationClient.request` would reach them."""

    def __init__(self, pair: Pair) -> None:
        self.reads = FederationReads(pair.resident.db, RESIDENT)
        self.calls: list[str] = []

    async def request(self, destination: str, method: str, path: str, *, content: Any | None = None) -> Any:
        assert destination == RESIDENT
        url = urlsplit(path)
        parts = [unquote(p) for p in url.path.split("/")[4:]]
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.calls.append(parts[0])
        origin = LOCAL
        if parts[0] == "event_auth":
            return {"auth_chain": self.reads.auth_chain_of(origin, parts[1], parts[2])}
        if parts[0] == "get_missing_events":
            assert content is not None
            events = self.reads.missing_events(
                origin,
                parts[1],
                content["earliest_events"],
                content["latest_events"],
                content["limit"],
                content["min_depth"],
            )
            return {"events": events}
        if parts[0] == "state_ids":
            pdu_ids, chain_ids = self.reads.state_ids_at(origin, parts[1], query["event_id"])
            return {"pdu_ids": pdu_ids, "auth_chain_ids": chain_ids}
        if parts[0] == "state":
            pdus, chain = self.reads.state_at(origin, parts[1], query["event_id"])
            return {"pdus": pdus, "auth_chain": chain}
        if parts[0] == "event":
            return {"origin": RESIDENT, "origin_server_ts": 0, "pdus": [self.reads.event_for(origin, parts[1])]}
        raise AssertionError(path)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


async def joined(pair: Pair) -> tuple[str, Inbound, ResidentApi]:
    room_id = await pair.room("10")
    join, state, auth_chain = await pair.send_join(room_id)
    ours = pair.local
    await ours.pipe.receive_join(room_id, "10", join, state, auth_chain, ours.keys)
    api = ResidentApi(pair)
    return room_id, Inbound(ours.pipe, api, ours.keys), api


async def test_a_short_gap_is_filled_with_get_missing_events(pair: Pair) -> None:
    room_id, inbound, api = await joined(pair)
    res, ours = pair.resident, pair.local
    missed = [(await res.pipe.send(room_id, CAROL_R, "m.room.message", msg(f"missed {i}"))).event_id for i in range(5)]
    latest = await res.pipe.send(room_id, CAROL_R, "m.room.message", msg("latest"))
    got = await inbound.receive_pdu(RESIDENT, copy.deepcopy(res.event(latest.event_id)), ours.rv(room_id))
    assert got.rejected is None
    assert ours.timeline(room_id)[1:] == [*missed, latest.event_id]  # every missed message, in order
    assert api.calls == ["get_missing_events"]


async def test_a_long_gap_with_state_changes_is_bridged_with_state(pair: Pair) -> None:
    room_id, inbound, api = await joined(pair)
    res, ours = pair.resident, pair.local
    topic = await res.pipe.send(room_id, ALICE_R, "m.room.topic", {"topic": "while you were away"}, "")
    await res.pipe.send(
        room_id,
        ALICE_R,
        "m.room.power_levels",
        {**res.event(res.current_state(room_id)[("m.room.power_levels", "")])["content"], "events_default": 0},
        "",
    )
    for i in range(MISSING_EVENTS_MAX + 15):
        await res.pipe.send(room_id, CAROL_R, "m.room.message", msg(f"missed {i}"))
    latest = await res.pipe.send(room_id, CAROL_R, "m.room.message", msg("latest"))
    got = await inbound.receive_pdu(RESIDENT, copy.deepcopy(res.event(latest.event_id)), ours.rv(room_id))
    assert got.rejected is None and not got.soft_failed
    assert ours.current_state(room_id) == res.current_state(room_id)
    assert ours.current_state(room_id)[("m.room.topic", "")] == topic.event_id
    # the last MISSING_EVENTS_MAX missed messages came with get_missing_events, in rounds of
    # MISSING_EVENTS_LIMIT; the state bridged the rest
    assert len(ours.timeline(room_id)) == 1 + MISSING_EVENTS_MAX + 1
    assert api.calls.count("get_missing_events") == MISSING_EVENTS_MAX // MISSING_EVENTS_LIMIT
    assert "get_missing_events" in api.calls and "state_ids" in api.calls
    # later events flow without fetching
    api.calls.clear()
    nxt = await res.pipe.send(room_id, CAROL_R, "m.room.message", msg("next"))
    await inbound.receive_pdu(RESIDENT, copy.deepcopy(res.event(nxt.event_id)), ours.rv(room_id))
    assert api.calls == [] and ours.timeline(room_id)[-1] == nxt.event_id


async def test_history_is_served_only_as_the_room_allows(pair: Pair) -> None:
    room_id = await pair.room("10")
    res = pair.resident
    await res.pipe.send(room_id, ALICE_R, "m.room.history_visibility", {"history_visibility": "joined"}, "")
    secret = await res.pipe.send(room_id, CAROL_R, "m.room.message", msg("before you came"))
    join, _, _ = await pair.send_join(room_id)
    after = await res.pipe.send(room_id, CAROL_R, "m.room.message", msg("after you came"))
    reads = FederationReads(res.db, RESIDENT)
    tip = res.event(after.event_id)
    events = reads.backfill(LOCAL, room_id, [after.event_id], 10)
    by_body = {e.get("content", {}).get("body"): e for e in events}
    assert "after you came" in by_body  # we were joined then
    hidden = [e for e in events if e["type"] == "m.room.message" and "body" not in e["content"]]
    # the message sent while the history was for members only, before we joined: redacted, still in
    # the graph; those from before the change (the room was "shared" then) are whole
    assert len(hidden) == 1 and hidden[0]["prev_events"] and hidden[0]["depth"] == res.event(secret.event_id)["depth"]
    assert {"before the join 0", "before the join 1", "before the join 2"} <= set(by_body)
    assert [e["depth"] for e in events] == sorted((e["depth"] for e in events), reverse=True)
    assert tip["depth"] == events[0]["depth"]
    assert "body" not in reads.event_for(LOCAL, secret.event_id)["content"]
    # a server with no one in the room gets nothing
    with pytest.raises(NotInRoom):
        reads.backfill("stranger.test", room_id, [after.event_id], 10)
    with pytest.raises(NotInRoom):
        reads.state_ids_at("stranger.test", room_id, after.event_id)
    with pytest.raises(NotInRoom):
        reads.event_for("stranger.test", after.event_id)
    assert BOB_L in {
        e["state_key"] for e in reads.state_at(LOCAL, room_id, after.event_id)[0] if e["type"] == "m.room.member"
    }
    assert join["type"] == "m.room.member"
