"""The outbound sender: transactions per destination, limits, back-off, catch-up, and a restart
that loses nothing and resends nothing acknowledged.

spec: server-server-api "Transactions" (50 PDUs, 100 EDUs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from federation.sender import MAX_EDUS, MAX_PDUS, FederationSender
from storage.engine import Store
from storage.federation_queue import FederationQueueStore


class Pdus:
    def __init__(self) -> None:
        self.rooms: dict[int, int] = {}

    def pdu(self, event: int) -> dict[str, Any] | None:
        return {"event": event, "room": self.rooms.get(event, 1)}

    def room_of(self, event: int) -> int | None:
        return self.rooms.get(event, 1)


class Peer:
    """Destinations that take transactions, or fail while `down` holds them."""

    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = {}
        self.down: set[str] = set()
        self.in_flight: dict[str, int] = {}
        self.max_in_flight = 0

    async def send_transaction(self, destination: str, txn_id: str, body: dict[str, Any]) -> Any:
        self.in_flight[destination] = self.in_flight.get(destination, 0) + 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight[destination])
        try:
            await asyncio.sleep(0.001)
            if destination in self.down:
                raise OSError("connection refused")
            self.received.setdefault(destination, []).append({"txn": txn_id, **body})
            return {"pdus": {}}
        finally:
            self.in_flight[destination] -= 1

    def events(self, destination: str) -> list[int]:
        return [p["event"] for t in self.received.get(destination, []) for p in t["pdus"]]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "db")
    yield s
    s.close()


def sender(store: Store, peer: Peer, pdus: Pdus | None = None, backoff: float = 0.01) -> FederationSender:
    return FederationSender(
        "us.test", store, FederationQueueStore(store), pdus or Pdus(), peer, backoff_start_s=backoff
    )


async def write_events(store: Store, s: FederationSender, events: list[int], destinations: list[str]) -> None:
    for event in events:
        batch = store.batch()
        with batch:
            s.enqueue(batch, batch.next_count(), event, destinations)
            await batch.commit()


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_events_reach_each_destination_in_order_within_limits(store: Store) -> None:
    peer = Peer()
    s = sender(store, peer)
    await write_events(store, s, list(range(1, 121)), ["a.test", "b.test", "us.test"])
    for i in range(150):
        s.send_edu("a.test", "m.typing", {"n": i})
    await until(lambda: len(peer.events("a.test")) == 120 and len(peer.events("b.test")) == 120)
    await until(lambda: sum(len(t.get("edus", [])) for t in peer.received["a.test"]) == 150)
    assert peer.events("a.test") == list(range(1, 121)) and peer.events("b.test") == list(range(1, 121))
    assert "us.test" not in peer.received  # never to ourselves
    for t in peer.received["a.test"]:
        assert len(t["pdus"]) <= MAX_PDUS and len(t.get("edus", [])) <= MAX_EDUS and t["origin"] == "us.test"
    assert peer.max_in_flight == 1  # one transaction in flight per destination
    assert len({t["txn"] for t in peer.received["a.test"]}) == len(peer.received["a.test"])
    assert FederationQueueStore(store).count("a.test") == 0  # acknowledged entries are gone
    await s.close()


async def test_a_restart_resends_what_was_not_acknowledged(store: Store) -> None:
    peer = Peer()
    peer.down.add("a.test")
    s = sender(store, peer)
    await write_events(store, s, [1, 2, 3], ["a.test", "b.test"])
    await until(lambda: len(peer.events("b.test")) == 3 and s.backing_off("a.test"))
    await s.close()
    # the server restarts; the destination is back
    peer.down.clear()
    s2 = sender(store, peer)
    s2.start()
    await until(lambda: peer.events("a.test") == [1, 2, 3])
    await asyncio.sleep(0.05)
    assert peer.events("b.test") == [1, 2, 3]  # nothing acknowledged is sent again
    await s2.close()


async def test_backoff_doubles_and_contact_resets_it(store: Store) -> None:
    peer = Peer()
    peer.down.add("a.test")
    s = sender(store, peer, backoff=60)
    await write_events(store, s, [1], ["a.test"])
    await until(lambda: s.backing_off("a.test"))
    await write_events(store, s, [2], ["a.test"])  # new events alone do not cut the wait short
    await asyncio.sleep(0.05)
    assert peer.in_flight.get("a.test", 0) == 0 and s._destinations["a.test"].failures == 1
    peer.down.clear()
    s.contacted("a.test")  # the destination reached us: retry now
    await until(lambda: peer.events("a.test") == [1, 2])
    await s.close()


async def test_catch_up_after_an_outage_sends_the_newest_event_of_each_room(store: Store) -> None:
    peer, pdus = Peer(), Pdus()
    for event in range(1, 201):
        pdus.rooms[event] = 1 + event % 3  # three rooms
    peer.down.add("a.test")
    s = sender(store, peer, pdus)
    await write_events(store, s, list(range(1, 201)), ["a.test"])
    await until(lambda: s.backing_off("a.test"))
    peer.down.clear()
    s.contacted("a.test")
    await until(lambda: FederationQueueStore(store).count("a.test") == 0)
    assert sorted(peer.events("a.test")) == [198, 199, 200]  # the newest of each room
    # and once caught up, events flow one by one again
    await write_events(store, s, [201, 202], ["a.test"])
    await until(lambda: peer.events("a.test")[-2:] == [201, 202])
    await s.close()


async def test_a_destination_that_owes_nothing_leaves_no_record_behind(store: Store) -> None:
    peer = Peer()
    s = sender(store, peer)
    names = [f"p{i}.test" for i in range(50)]
    await write_events(store, s, [1], names)
    for name in names:
        s.send_edu(name, "m.typing", {"n": 1})
    await until(lambda: all(peer.events(n) == [1] for n in names))
    await until(lambda: not s._destinations)  # memory does not grow with every peer ever reached
    peer.down.add("p0.test")
    await write_events(store, s, [2], ["p0.test"])
    await until(lambda: s.backing_off("p0.test"))  # a failing one keeps its back-off
    await asyncio.sleep(0.05)
    assert list(s._destinations) == ["p0.test"]
    await s.close()


async def test_to_device_and_device_list_edus_survive_a_restart_and_are_sent_once(store: Store) -> None:
    peer = Peer()
    peer.down.add("a.test")
    s = sender(store, peer)
    s.send_edu("a.test", "m.typing", {"n": 1})  # the present: not worth keeping
    s.send_edu("a.test", "m.direct_to_device", {"message_id": "m1"})
    s.send_edu("a.test", "m.device_list_update", {"stream_id": 1})
    s.send_edu("b.test", "m.direct_to_device", {"message_id": "m2"})
    await until(lambda: s.backing_off("a.test") and "b.test" in peer.received)
    await s.close()
    # the server restarts; a.test is back
    peer.down.clear()
    s2 = sender(store, peer)
    s2.start()
    await until(lambda: "a.test" in peer.received)
    await until(lambda: FederationQueueStore(store).pending_edus("a.test", 10) == [])
    sent = [e for t in peer.received["a.test"] for e in t.get("edus", [])]
    assert [e["edu_type"] for e in sent] == ["m.direct_to_device", "m.device_list_update"]
    await asyncio.sleep(0.05)
    b_sent = [e["content"] for t in peer.received["b.test"] for e in t.get("edus", [])]
    assert b_sent == [{"message_id": "m2"}]  # acknowledged before the restart: never again
    s2.send_edu("a.test", "m.direct_to_device", {"message_id": "m3"})  # numbering goes on after a restart
    await until(
        lambda: (
            [e["content"] for t in peer.received["a.test"] for e in t.get("edus", [])][-1:] == [{"message_id": "m3"}]
        )
    )
    await s2.close()


OPEN_SENDERS: list[FederationSender] = []


def closing(s: FederationSender) -> FederationSender:
    OPEN_SENDERS.append(s)
    return s


@pytest.fixture(autouse=True)
async def close_senders() -> Any:
    """Senders made with `closing` are closed after the test, passed or failed (a failed one left
    backing off would hold the loop)."""
    yield
    while OPEN_SENDERS:
        await OPEN_SENDERS.pop().close()


def durable_sent(peer: Peer, destination: str) -> list[dict[str, Any]]:
    return [e for t in peer.received.get(destination, []) for e in t.get("edus", [])]


def dl(user: str, stream_id: int) -> dict[str, Any]:
    return {"user_id": user, "device_id": "D", "stream_id": stream_id, "prev_id": [stream_id - 1]}


async def test_a_destination_down_for_long_owes_a_bounded_backlog(store: Store) -> None:
    """Past the limit the oldest to-device messages go (atomically with the new one); the newest are
    delivered in order once the destination is back, and the count kept in memory matches the store."""
    peer = Peer()
    peer.down.add("a.test")
    queue = FederationQueueStore(store)
    s = closing(FederationSender("us.test", store, queue, Pdus(), peer, backoff_start_s=60, durable_edu_limit=20))
    s.send_edu("a.test", "m.direct_to_device", {"message_id": "m0"})
    await until(lambda: s.backing_off("a.test"))  # down, and not retried for a minute
    for i in range(1, 100):
        s.send_edu("a.test", "m.direct_to_device", {"message_id": f"m{i}"})
        assert queue.count_edus("a.test") <= 20
    kept = [e["content"]["message_id"] for _, e in queue.pending_edus("a.test", None)]
    assert kept == [f"m{i}" for i in range(100 - len(kept), 100)] and len(kept) >= 18  # the newest, in order
    assert s._destinations["a.test"].durable_count == len(kept)
    peer.down.clear()
    s.contacted("a.test")
    await until(lambda: queue.count_edus("a.test") == 0)
    assert [e["content"]["message_id"] for e in durable_sent(peer, "a.test")] == kept
    await until(lambda: "a.test" not in s._destinations)


async def test_device_list_and_signing_key_updates_collapse_to_each_users_newest(store: Store) -> None:
    """A user's older device-list updates go before any to-device message: the newest carries a
    `prev_id` the destination never saw, so it fetches the whole list again (spec: "Device
    Management"); a signing-key update carries the whole keys. The newest of each user stays, even
    past the limit: what is left is bounded by our users, not by time."""
    peer = Peer()
    peer.down.add("a.test")
    queue = FederationQueueStore(store)
    s = closing(FederationSender("us.test", store, queue, Pdus(), peer, backoff_start_s=60, durable_edu_limit=10))
    s.send_edu("a.test", "m.direct_to_device", {"message_id": "first"})
    await until(lambda: s.backing_off("a.test"))
    for n in range(1, 21):
        s.send_edu("a.test", "m.device_list_update", dl("@u:us.test", n))
        s.send_edu("a.test", "m.signing_key_update", {"user_id": "@u:us.test", "master_key": {"n": n}})
        if n % 5 == 0:
            s.send_edu("a.test", "m.direct_to_device", {"message_id": f"td{n}"})
        assert queue.count_edus("a.test") <= 10
    pending = [e for _, e in queue.pending_edus("a.test", None)]
    assert [e["content"]["message_id"] for e in pending if e["edu_type"] == "m.direct_to_device"] == [
        "first",
        "td5",
        "td10",
        "td15",
        "td20",
    ]  # collapsing made room: no message lost
    # compacted when the limit was reached: what came since is queued as it came, the newest last
    device_updates = [e["content"]["stream_id"] for e in pending if e["edu_type"] == "m.device_list_update"]
    assert device_updates == sorted(device_updates) and device_updates[-1] == 20 and len(device_updates) < 5
    signing = [e["content"]["master_key"]["n"] for e in pending if e["edu_type"] == "m.signing_key_update"]
    assert signing == sorted(signing) and signing[-1] == 20 and len(signing) < 5

    # the newest update of each of 30 users is kept although that is over the limit
    for i in range(30):
        s.send_edu("a.test", "m.device_list_update", dl(f"@user{i}:us.test", 1))
    users = {e["content"]["user_id"] for _, e in queue.pending_edus("a.test", None) if "stream_id" in e["content"]}
    assert len(users) == 31
    peer.down.clear()
    s.contacted("a.test")
    await until(lambda: queue.count_edus("a.test") == 0)
    got = durable_sent(peer, "a.test")
    assert next(e["content"] for e in got if e["edu_type"] == "m.device_list_update") == dl("@u:us.test", 20)


async def test_edus_being_sent_are_not_compacted_away(store: Store) -> None:
    """A transaction in flight keeps its EDUs: a compaction meanwhile leaves them, and the count
    stays right once the destination acknowledges them."""
    release = asyncio.Event()
    peer = Peer()
    transport_send = peer.send_transaction

    async def slow(destination: str, txn_id: str, body: dict[str, Any]) -> Any:
        await release.wait()
        return await transport_send(destination, txn_id, body)

    queue = FederationQueueStore(store)
    s = closing(FederationSender("us.test", store, queue, Pdus(), peer, durable_edu_limit=10))
    s.send_edu("a.test", "m.device_list_update", dl("@u:us.test", 1))
    s.transport = type("T", (), {"send_transaction": staticmethod(slow)})()
    await until(lambda: bool(s._destinations["a.test"].in_flight))
    for n in range(2, 30):
        s.send_edu("a.test", "m.device_list_update", dl("@u:us.test", n))
    assert next(e["content"]["stream_id"] for _, e in queue.pending_edus("a.test", None)) == 1  # in flight: kept
    assert s._destinations["a.test"].durable_count == queue.count_edus("a.test")
    release.set()
    await until(lambda: queue.count_edus("a.test") == 0)
    sent = [e["content"]["stream_id"] for e in durable_sent(peer, "a.test")]
    assert sent[0] == 1 and sent[-1] == 29
