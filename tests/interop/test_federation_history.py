"""History and repair between our server and real Synapses, each over its own TLS listener on loopback.

- `/messages` on our side backfills history written on Synapse before we joined;
- a split: each side sends while the other is down (messages, a power-level change and a ban on
  each side); afterwards `/state` is the same on both servers and every message is in both
  timelines (state resolution v2 over the fork agrees with Synapse's);
- our server restarted with events queued for a stopped Synapse: every event arrives;
- a room on three servers: ours and two Synapses.

spec: server-server-api "Backfilling and retrieving missing events", "Transactions", "Room State
Resolution"; client-server-api GET /rooms/{roomId}/messages, GET /rooms/{roomId}/state.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from federation.backfill import Backfiller
from federation.inbound import Inbound
from federation.keys import KeyRing
from federation.membership import RemoteMembership
from federation.service import _KeyFetcher
from homeserver.rooms.client_format import EventSerializer, Viewer
from homeserver.rooms.event_filter import RoomEventFilter
from homeserver.rooms.messages import RoomReader
from homeserver.rooms.pipeline import EventPipeline, ServerIdentity
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.redactions import Redactions
from homeserver.rooms.relations import Relations
from storage.cache import LruCache
from storage.database import Database
from storage.server_keys import ServerKeyStore

from .federation import LoopbackCA, start_synapse_peer
from .server import RunningServer, http_json, register
from .test_federation_synapse import Origin

DEADLINE_S = 60.0
SPLIT_MESSAGES = 60  # more than one transaction (50 PDUs) and more than one get_missing_events (10)
QUEUED = 120  # queued for a stopped Synapse: more than two transactions
T = TypeVar("T")


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def client(server: RunningServer, path: str) -> str:
    return f"{server.base_url}/_matrix/client/v3{path}"


def create_room(server: RunningServer, token: str, **body: Any) -> str:
    return str(http_json("POST", client(server, "/createRoom"), {"preset": "public_chat", **body}, token)["room_id"])


def join(server: RunningServer, token: str, room_id: str, via: RunningServer) -> None:
    http_json("POST", client(server, f"/join/{q(room_id)}?server_name={q(via.server_name)}"), {}, token)


def send(server: RunningServer, token: str, room_id: str, body: str) -> str:
    txn = f"{time.monotonic_ns()}"
    path = f"/rooms/{q(room_id)}/send/m.room.message/{txn}"
    return str(http_json("PUT", client(server, path), {"msgtype": "m.text", "body": body}, token)["event_id"])


def put_state(server: RunningServer, token: str, room_id: str, event_type: str, content: dict[str, Any]) -> str:
    path = f"/rooms/{q(room_id)}/state/{event_type}/"
    return str(http_json("PUT", client(server, path), content, token)["event_id"])


def state(server: RunningServer, token: str, room_id: str) -> dict[tuple[str, str], str]:
    events = http_json("GET", client(server, f"/rooms/{q(room_id)}/state"), token=token)
    return {(e["type"], e["state_key"]): e["event_id"] for e in events}


def power_levels(server: RunningServer, token: str, room_id: str) -> dict[str, Any]:
    return dict(http_json("GET", client(server, f"/rooms/{q(room_id)}/state/m.room.power_levels/"), token=token))


def timeline(server: RunningServer, token: str, room_id: str, page: int = 50) -> list[dict[str, Any]]:
    """Every event `/messages` gives, newest first, paging back to the start."""
    events: list[dict[str, Any]] = []
    token_from = ""
    for _ in range(100):
        query = f"?dir=b&limit={page}" + (f"&from={q(token_from)}" if token_from else "")
        answer = http_json("GET", client(server, f"/rooms/{q(room_id)}/messages{query}"), token=token)
        events += answer["chunk"]
        if "end" not in answer or not answer["chunk"]:
            break
        token_from = answer["end"]
    return events


def bodies(events: list[dict[str, Any]]) -> list[str]:
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message" and "body" in e["content"]]


def poll(what: str, check: Callable[[], T | None], deadline_s: float = DEADLINE_S) -> T:
    """The first truthy answer of `check` before the deadline (HTTP errors count as not yet)."""
    end = time.monotonic() + deadline_s
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except (urllib.error.URLError, OSError, KeyError) as e:
            last = e
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {deadline_s:.0f} s (last: {last!r})")
        time.sleep(0.1)


def joined(server: RunningServer, token: str, room_id: str, user_id: str) -> bool:
    return state(server, token, room_id).get(("m.room.member", user_id)) is not None and (
        http_json("GET", client(server, f"/rooms/{q(room_id)}/state/m.room.member/{q(user_id)}"), token=token).get(
            "membership"
        )
        == "join"
    )


def test_messages_backfills_history_written_on_synapse_before_we_joined(
    synapse: RunningServer, ours: RunningServer
) -> None:
    """Our user joins a Synapse room with shared history (our client `POST /join` over federation)
    and pages back through all of it with `/messages`. The join itself is the client join of the
    membership work (`rooms/membership.py` asking `federation/membership.py`); the backfill it then
    relies on is also proven without it below (`test_our_backfill_code_reads_synapse_history`)."""
    started = time.monotonic()
    _, bob = register(synapse, "hist_bob")
    alice_id, alice = register(ours, "hist_alice")
    room_id = create_room(synapse, bob, initial_state=[], name="History")
    put_state(synapse, bob, room_id, "m.room.history_visibility", {"history_visibility": "shared"})
    written = [send(synapse, bob, room_id, f"before you came {i}") for i in range(40)]
    join(ours, alice, room_id, via=synapse)  # our client join over federation (make_join/send_join)
    poll("our join", lambda: joined(ours, alice, room_id, alice_id))
    events = timeline(ours, alice, room_id, page=15)
    ids = [e["event_id"] for e in events]
    assert set(written) <= set(ids)
    assert bodies(events)[-40:] == [f"before you came {i}" for i in reversed(range(40))]
    assert events[-1]["type"] == "m.room.create"  # the whole history, down to the start
    assert len(ids) == len(set(ids))  # nothing twice
    # the same history as Synapse's own timeline
    synapse_ids = [e["event_id"] for e in timeline(synapse, bob, room_id)]
    assert set(synapse_ids) <= set(ids)
    # backfilled history is indexed like any timeline event: our search finds it
    found = http_json(
        "POST",
        f"{ours.base_url}/_matrix/client/v3/search",
        {"search_categories": {"room_events": {"search_term": "came", "filter": {"rooms": [room_id]}}}},
        alice,
    )["search_categories"]["room_events"]
    assert found["count"] == 40 and {r["result"]["event_id"] for r in found["results"]} <= set(written)
    print(f"backfill scenario: {time.monotonic() - started:.1f} s, {len(ids)} events paged back")


async def test_our_backfill_code_reads_synapse_history(
    synapse: RunningServer, ca: LoopbackCA, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Our federation code in this process (its key published by a small TLS listener) joins a
    Synapse room with `make_join`/`send_join`, then pages back through its history with `/messages`
    (`RoomReader`), which fetches it with `/backfill` (and `/state_ids`, `/event_auth` as needed) and
    checks every event: Synapse's signatures, hashes and auth pass our receipt checks."""
    started = time.monotonic()
    bob_id, bob = register(synapse, "inproc_bob")
    room_id = create_room(synapse, bob, name="History in process")
    put_state(synapse, bob, room_id, "m.room.history_visibility", {"history_visibility": "shared"})
    written = [send(synapse, bob, room_id, f"old {i}") for i in range(60)]
    origin = Origin(ca, "127.0.0.1")
    await origin.start()
    client = origin.client()
    db = Database(tmp_path_factory.mktemp("inproc") / "db")
    try:
        assert origin.keys is not None
        pipe = EventPipeline(db, ServerIdentity(origin.server_name, origin.key_id, origin.signing_key))
        keyring = KeyRing(
            origin.keys, db.store, ServerKeyStore(db.store), _KeyFetcher(client), attempts=LruCache("attempts", 16)
        )
        user = f"@carol:{origin.server_name}"
        await RemoteMembership(origin.server_name, pipe, client, keyring.verify_keys).join(
            room_id, user, [synapse.server_name]
        )
        inbound = Inbound(pipe, client, keyring.verify_keys)
        backfiller = Backfiller(
            origin.server_name, pipe, inbound, client, lambda _r: [synapse.server_name], LruCache("fruitless", 16)
        )
        queries = RoomQueries(origin.server_name, db.ids, db.rooms, db.events, db.snapshots)
        reader = RoomReader(db, queries, EventSerializer(db, Relations(db), Redactions(db)))
        reader.add_history_source(backfiller)
        before = queries.room(room_id)
        assert before is not None
        current = db.rooms.info(before)
        seen: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(30):
            page = await reader.messages(
                Viewer(user),
                room_id,
                from_token=token,
                to_token=None,
                forwards=False,
                limit=20,
                event_filter=RoomEventFilter(),
            )
            seen += page["chunk"]
            if "end" not in page:
                break
            token = page["end"]
        ids = [e["event_id"] for e in seen]
        assert set(written) <= set(ids) and len(ids) == len(set(ids))
        assert bodies(seen) == [f"old {i}" for i in reversed(range(60))]
        assert seen[-1]["type"] == "m.room.create" and seen[0]["sender"] == user
        synapse_ids = {e["event_id"] for e in timeline(synapse, bob, room_id)}
        assert synapse_ids - {ids[0]} <= set(ids)
        # history left the room's current state and extremities as the join made them
        after = db.rooms.info(before)
        assert after is not None and current is not None and after["state"] == current["state"]
        del bob_id
    finally:
        await client.close()
        await origin.stop()
        db.close()
    print(f"in-process backfill from Synapse: {time.monotonic() - started:.1f} s, {len(ids)} events")


def test_a_split_heals_to_the_same_state_and_timelines(synapse: RunningServer, ours: RunningServer) -> None:
    """Each side sends (messages, a power-level change, a ban) while the other is down; afterwards both
    servers agree on the room's state and each holds every message."""
    started = time.monotonic()
    alice_id, alice = register(ours, "split_alice")
    carol_id, carol = register(ours, "split_carol")
    bob_id, bob = register(synapse, "split_bob")
    dave_id, dave = register(synapse, "split_dave")
    room_id = create_room(
        ours,
        alice,
        name="Split",
        power_level_content_override={"users": {alice_id: 100, bob_id: 100}},
    )
    http_json("POST", client(ours, f"/rooms/{q(room_id)}/join"), {}, carol)
    for user_id, token in ((bob_id, bob), (dave_id, dave)):
        join(synapse, token, room_id, via=ours)
        poll(f"{user_id} joined on our side", lambda u=user_id: joined(ours, alice, room_id, u))  # type: ignore[misc]
    poll("everyone joined on Synapse", lambda: joined(synapse, bob, room_id, carol_id))
    before = [send(ours, alice, room_id, "before the split"), send(synapse, bob, room_id, "before the split too")]
    poll(
        "both messages on both sides",
        lambda: all(
            m in bodies(timeline(s, t, room_id))
            for s, t in ((ours, alice), (synapse, bob))
            for m in ("before the split", "before the split too")
        ),
    )

    # our side alone: Synapse is down
    synapse.stop()
    levels = power_levels(ours, alice, room_id)
    ours_written = [send(ours, alice, room_id, f"ours during the split {i}") for i in range(SPLIT_MESSAGES)]
    ours_written.append(
        put_state(
            ours,
            alice,
            room_id,
            "m.room.power_levels",
            {**levels, "events": {**levels.get("events", {}), "m.room.topic": 60}},
        )
    )
    http_json("POST", client(ours, f"/rooms/{q(room_id)}/ban"), {"user_id": dave_id, "reason": "split"}, alice)
    ours_written.append(send(ours, alice, room_id, "ours after the ban"))

    # Synapse's side alone: we are down
    ours.stop()
    synapse.restart()
    synapse_written = [send(synapse, bob, room_id, f"synapse during the split {i}") for i in range(SPLIT_MESSAGES)]
    synapse_written.append(
        put_state(
            synapse,
            bob,
            room_id,
            "m.room.power_levels",
            {**levels, "events": {**levels.get("events", {}), "m.room.topic": 70}},
        )
    )
    http_json("POST", client(synapse, f"/rooms/{q(room_id)}/ban"), {"user_id": carol_id, "reason": "split"}, bob)
    synapse_written.append(send(synapse, bob, room_id, "synapse after the ban"))

    # both up: each catches the other up
    healed_at = time.monotonic()
    ours.restart()
    send(ours, alice, room_id, "ours after the split")
    send(synapse, bob, room_id, "synapse after the split")
    expected = {
        *[f"ours during the split {i}" for i in range(SPLIT_MESSAGES)],
        *[f"synapse during the split {i}" for i in range(SPLIT_MESSAGES)],
        "ours after the ban",
        "synapse after the ban",
        "ours after the split",
        "synapse after the split",
        "before the split",
        "before the split too",
    }
    for server, token in ((ours, alice), (synapse, bob)):
        poll(
            f"every message on {server.kind}",
            lambda s=server, t=token: expected <= set(bodies(timeline(s, t, room_id))),
        )  # type: ignore[misc]

    def same_state() -> dict[tuple[str, str], str] | None:
        a, b = state(ours, alice, room_id), state(synapse, bob, room_id)
        return a if a == b else None

    agreed = poll("the same state on both servers", same_state)
    healed_s = time.monotonic() - healed_at
    assert (
        http_json("GET", client(ours, f"/rooms/{q(room_id)}/state/m.room.member/{q(dave_id)}"), token=alice)[
            "membership"
        ]
        == "ban"
    )
    assert (
        http_json("GET", client(ours, f"/rooms/{q(room_id)}/state/m.room.member/{q(carol_id)}"), token=alice)[
            "membership"
        ]
        == "ban"
    )
    topic_level = power_levels(ours, alice, room_id)["events"]["m.room.topic"]
    assert topic_level in (60, 70) and power_levels(synapse, bob, room_id)["events"]["m.room.topic"] == topic_level
    assert set(ours_written) | set(synapse_written) <= {e["event_id"] for e in timeline(ours, alice, room_id)} | set(
        agreed.values()
    )
    del before
    print(
        f"split scenario: {time.monotonic() - started:.1f} s in all, healed {healed_s:.1f} s after our restart; "
        f"power levels kept: m.room.topic {topic_level}; {len(agreed)} state entries agreed"
    )


def test_events_queued_for_a_stopped_synapse_survive_our_restart(synapse: RunningServer, ours: RunningServer) -> None:
    started = time.monotonic()
    alice_id, alice = register(ours, "queue_alice")
    bob_id, bob = register(synapse, "queue_bob")
    room_id = create_room(ours, alice, name="Queue")
    join(synapse, bob, room_id, via=ours)
    poll("bob joined on our side", lambda: joined(ours, alice, room_id, bob_id))
    synapse.stop()
    written = [f"queued {i}" for i in range(QUEUED)]
    for body in written:
        send(ours, alice, room_id, body)
    restart_s = ours.restart()
    synapse.restart()
    back_at = time.monotonic()
    poll("every queued event on Synapse", lambda: set(written) <= set(bodies(timeline(synapse, bob, room_id))))
    arrived_s = time.monotonic() - back_at
    # and the room goes on both ways
    send(synapse, bob, room_id, "welcome back")
    poll("Synapse's answer on our side", lambda: "welcome back" in bodies(timeline(ours, alice, room_id)))
    del alice_id
    print(
        f"queue scenario: {time.monotonic() - started:.1f} s; our restart {restart_s:.1f} s; "
        f"{QUEUED} queued events on Synapse {arrived_s:.1f} s after it returned"
    )


def test_a_room_on_three_servers(
    synapse: RunningServer, ours: RunningServer, ca: LoopbackCA, tmp_path_factory: pytest.TempPathFactory
) -> None:
    started = time.monotonic()
    second = start_synapse_peer(tmp_path_factory.mktemp("synapse2"), ca)
    try:
        alice_id, alice = register(ours, "three_alice")
        bob_id, bob = register(synapse, "three_bob")
        erin_id, erin = register(second, "three_erin")
        room_id = create_room(ours, alice, name="Three")
        join(synapse, bob, room_id, via=ours)
        poll("bob joined", lambda: joined(ours, alice, room_id, bob_id))
        join(second, erin, room_id, via=synapse)  # through the other Synapse: it learns of us from the state
        poll("erin joined", lambda: joined(ours, alice, room_id, erin_id))
        said = {
            "from ours": (ours, alice),
            "from synapse": (synapse, bob),
            "from the second synapse": (second, erin),
        }
        for body, (server, token) in said.items():
            send(server, token, room_id, body)
        for server, token in said.values():
            poll(
                f"every message on {server.server_name}",
                lambda s=server, t=token: set(said) <= set(bodies(timeline(s, t, room_id))),  # type: ignore[misc]
            )
        states = [state(s, t, room_id) for s, t in said.values()]
        assert states[0] == states[1] == states[2]
        del alice_id
    finally:
        second.stop()
    print(f"three-server scenario: {time.monotonic() - started:.1f} s (a second Synapse started in it)")
