"""Older history of a room joined over federation, fetched with `/backfill` from the resident server
(which answers from its own store through `FederationReads`), stored below the live timeline, and
read through `/messages` (`RoomReader`).

spec: server-server-api "Backfilling and retrieving missing events", GET /backfill; client-server-api
GET /rooms/{roomId}/messages.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from federation.backfill import Backfiller
from federation.inbound import Inbound
from homeserver.rooms.client_format import EventSerializer, Viewer
from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.messages import RoomReader
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.redactions import Redactions
from homeserver.rooms.relations import Relations
from homeserver.rooms.tokens import order_of
from storage.cache import LruCache
from storage.check import check_consistency
from storage.events import BACKFILLED
from storage.rooms import LIVE_BASE
from tests.federation.test_inbound import ResidentApi
from tests.rooms.remote import ALICE_R, BOB_L, CAROL_R, LOCAL, RESIDENT, Pair, msg


class BackfillApi(ResidentApi):
    """The resident's reads with `/backfill` too, counting what is asked."""

    def __init__(self, pair: Pair, *, down: bool = False) -> None:
        super().__init__(pair)
        self.down = down
        self.backfill_limits: list[int] = []

    async def request(
        self, destination: str, method: str, path: str, *, content: Any | None = None, timeout: float = 0
    ) -> Any:
        if self.down:
            raise ConnectionError(f"{destination} is down")
        url = urlsplit(path)
        parts = [unquote(p) for p in url.path.split("/")[4:]]
        if parts[0] == "backfill":
            query = parse_qs(url.query)
            self.calls.append("backfill")
            self.backfill_limits.append(int(query["limit"][0]))
            return {
                "origin": RESIDENT,
                "pdus": self.reads.backfill(LOCAL, parts[1], query["v"], int(query["limit"][0])),
            }
        return await super().request(destination, method, path, content=content)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


async def joined(
    pair: Pair, *, history: int = 0, down: bool = False, version: str = "10"
) -> tuple[str, Backfiller, BackfillApi]:
    room_id = await pair.room(version)
    res = pair.resident
    for i in range(history):
        await res.pipe.send(room_id, CAROL_R, "m.room.message", msg(f"older {i}"))
    join, state, auth_chain = await pair.send_join(room_id)
    ours = pair.local
    await ours.pipe.receive_join(room_id, version, join, state, auth_chain, ours.keys)
    api = BackfillApi(pair, down=down)
    inbound = Inbound(ours.pipe, api, ours.keys)
    backfiller = Backfiller(LOCAL, ours.pipe, inbound, api, lambda _room: [LOCAL, RESIDENT], LruCache("fruitless", 16))
    return room_id, backfiller, api


def bodies(pair: Pair, event_ids: list[str]) -> list[str]:
    return [pair.local.event(e)["content"].get("body", "") for e in event_ids]


@pytest.mark.parametrize("version", ["1", "10", "12"])  # v1: event ids with hashes; v12: no room_id in create
async def test_the_whole_history_is_stored_below_the_live_timeline(pair: Pair, version: str) -> None:
    room_id, backfiller, api = await joined(pair, version=version)
    ours, res = pair.local, pair.resident
    state, extremities = ours.current_state(room_id), ours.extremities(room_id)
    live = ours.timeline(room_id)
    woken: list[str] = []
    ours.pipe.on_persisted = lambda p: woken.append(p.event_id)
    added = await backfiller.backfill(room_id, 50)
    timeline = ours.timeline(room_id)
    # every event of the resident's timeline before our join, in the resident's order, then ours
    assert timeline == res.timeline(room_id)
    assert added == len(timeline) - len(live) and timeline[-len(live) :] == live
    for eid in timeline[: -len(live)]:
        meta = ours.meta(eid)
        assert meta.flags & BACKFILLED and order_of(meta) < LIVE_BASE and not meta.outlier
        assert ours.state_after(eid) == res.state_after(eid)  # the state around history is right
    # history changes nothing current, and nobody is told of it as news
    assert ours.current_state(room_id) == state and ours.extremities(room_id) == extremities
    assert woken == []
    assert check_consistency(ours.db, full=True) == []  # `inspect check` finds the store sound
    # idempotent: the history is whole now (it starts with the create event), nobody is asked again
    api.calls.clear()
    assert await backfiller.backfill(room_id, 50) == 0
    assert api.calls == []


async def test_a_bounded_request_gets_the_newest_part_and_state_from_state_ids(pair: Pair) -> None:
    room_id, backfiller, api = await joined(pair, history=12)
    ours, res = pair.local, pair.resident
    live = ours.timeline(room_id)
    assert await backfiller.backfill(room_id, 5) == 5
    assert api.backfill_limits == [5]
    part = ours.timeline(room_id)[: -len(live)]
    assert bodies(pair, part) == [f"older {i}" for i in range(7, 12)]
    assert "state_ids" in api.calls  # the oldest of them came without its prev events
    for eid in part:
        assert ours.state_before(eid) == res.state_before(eid)
    # the next request continues below, down to the create event
    while await backfiller.backfill(room_id, 5):
        pass
    assert ours.timeline(room_id) == res.timeline(room_id)


async def test_forged_history_is_not_stored(pair: Pair) -> None:
    room_id, backfiller, api = await joined(pair)
    ours = pair.local
    real = api.reads.backfill

    def forged(server: str, room: str, start: list[str], limit: int) -> list[dict[str, Any]]:
        events = real(server, room, start, limit)
        for e in events:
            if e["type"] == "m.room.message":
                e["content"]["body"] = "forged"  # the hash no longer matches: kept redacted
            if e["type"] == "m.room.name":
                e["signatures"] = {}  # unsigned: dropped
        return events

    api.reads.backfill = forged  # type: ignore[method-assign]
    await backfiller.backfill(room_id, 50)
    timeline = ours.timeline(room_id)
    assert "forged" not in bodies(pair, timeline)
    assert not any(ours.event(e)["type"] == "m.room.name" for e in timeline)


async def test_no_server_answering_is_remembered_for_a_while(pair: Pair) -> None:
    room_id, backfiller, api = await joined(pair, down=True)
    assert await backfiller.backfill(room_id, 10) == 0
    api.down = False
    assert await backfiller.backfill(room_id, 10) == 0  # not asked again at once
    assert api.calls == []


async def test_messages_pages_back_into_the_history_of_other_servers(pair: Pair) -> None:
    room_id, backfiller, api = await joined(pair, history=30)
    ours, res = pair.local, pair.resident
    db = ours.db
    queries = RoomQueries(LOCAL, db.ids, db.rooms, db.events, db.snapshots)
    relations = Relations(db)
    reader = RoomReader(db, queries, EventSerializer(db, relations, Redactions(db)))
    reader.add_history_source(backfiller)
    viewer = Viewer(BOB_L)
    seen: list[str] = []
    token: str | None = None
    for _ in range(20):
        page = await reader.messages(
            viewer, room_id, from_token=token, to_token=None, forwards=False, limit=10, event_filter=RoomEventFilter()
        )
        seen += [e["event_id"] for e in page["chunk"]]
        if "end" not in page:
            break
        token = page["end"]
    # every event of the room, newest first, the last one the create event (shared history)
    assert seen == list(reversed(res.timeline(room_id)))
    assert ours.event(seen[-1])["type"] == "m.room.create"
    assert ALICE_R in {ours.event(e)["sender"] for e in seen}
    # reading again asks nobody
    api.calls.clear()
    page = await reader.messages(
        viewer, room_id, from_token=None, to_token=None, forwards=False, limit=100, event_filter=RoomEventFilter()
    )
    assert api.calls == [] and len(page["chunk"]) == len(seen)


async def test_messages_respects_history_visibility_for_backfilled_events(pair: Pair) -> None:
    room_id = await pair.room("10")
    res = pair.resident
    await res.pipe.send(room_id, ALICE_R, "m.room.history_visibility", {"history_visibility": "joined"}, "")
    await res.pipe.send(room_id, CAROL_R, "m.room.message", msg("members only"))
    join, state, auth_chain = await pair.send_join(room_id)
    ours = pair.local
    await ours.pipe.receive_join(room_id, "10", join, state, auth_chain, ours.keys)
    api = BackfillApi(pair)
    backfiller = Backfiller(
        LOCAL, ours.pipe, Inbound(ours.pipe, api, ours.keys), api, lambda _r: [RESIDENT], LruCache("f", 16)
    )
    db = ours.db
    reader = RoomReader(
        db,
        RoomQueries(LOCAL, db.ids, db.rooms, db.events, db.snapshots),
        EventSerializer(db, Relations(db), Redactions(db)),
    )
    reader.add_history_source(backfiller)
    page = await reader.messages(
        Viewer(BOB_L), room_id, from_token=None, to_token=None, forwards=False, limit=50, event_filter=RoomEventFilter()
    )
    assert "members only" not in [e["content"].get("body") for e in page["chunk"]]
    assert "backfill" in api.calls
    assert copy.deepcopy(page["chunk"][0]["sender"]) == BOB_L  # our join is the newest


async def test_history_failing_the_auth_rules_is_rejected_and_stays_out_of_the_timeline(pair: Pair) -> None:
    room_id, backfiller, api = await joined(pair)
    ours, res = pair.local, pair.resident
    rv = ours.rv(room_id)
    # a message from someone who never joined, signed by the resident, hanging off the room's start
    create = res.timeline(room_id)[0]
    stranger = ours.remote(RESIDENT).build(
        res, room_id, "@stranger:resident.test", "m.room.message", msg("let me in"), prev=[create], auth=[create]
    )
    order = ours.db.rooms.first_backfill_order(ours.room_short(room_id)) - 10
    persisted = await ours.pipe.receive_backfilled(copy.deepcopy(stranger), ours.keys, order, [create])
    assert persisted.rejected is not None and persisted.stream == 0
    assert persisted.event_id not in ours.timeline(room_id)
    # the order is still free, and a taken order is refused
    again = await ours.pipe.receive_backfilled(copy.deepcopy(stranger), ours.keys, order, [create])
    assert again.event_id == persisted.event_id
    live_first = ours.db.rooms.first_backfill_order(ours.room_short(room_id))
    with pytest.raises(ValueError):
        await ours.pipe.receive_backfilled(res.event(res.timeline(room_id)[1]), ours.keys, live_first, None)
    with pytest.raises(ValueError):
        await ours.pipe.receive_backfilled(res.event(res.timeline(room_id)[1]), ours.keys, LIVE_BASE + 5, None)
    del rv, backfiller, api


async def test_servers_are_tried_in_order_and_ours_is_never_asked(pair: Pair) -> None:
    """The room creator's server first (named in the room id), then the others by name; one that
    fails is passed over; ours is never asked."""
    room_id, _, api = await joined(pair)
    ours, res = pair.local, pair.resident
    asked: list[str] = []

    class SomeDown:
        """The resident is down; `a.test` holds the same room (it answers as the resident would)."""

        async def request(self, destination: str, method: str, path: str, **kwargs: Any) -> Any:
            asked.append(destination)
            if destination != "a.test":
                raise ConnectionError(f"{destination} is down")
            return await api.request(RESIDENT, method, path, **kwargs)

    client = SomeDown()
    servers = [LOCAL, "b.test", "a.test", RESIDENT]
    backfiller = Backfiller(
        LOCAL, ours.pipe, Inbound(ours.pipe, client, ours.keys), client, lambda _r: servers, LruCache("f", 16)
    )
    assert await backfiller.backfill(room_id, 50) > 0
    assert asked[:2] == [RESIDENT, "a.test"] and LOCAL not in asked and "b.test" not in asked
    assert ours.timeline(room_id) == res.timeline(room_id)
