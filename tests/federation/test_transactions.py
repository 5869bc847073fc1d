"""Inbound transactions: limits, once per (origin, txnId), per-PDU results, ACLs, EDU dispatch.

spec: server-server-api "Transactions", "Server Access Control Lists (ACLs)".
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from federation.transactions import MAX_EDUS, MAX_PDUS, Transactions, TransactionTooLarge
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.room_versions import RoomVersion, get_room_version
from homeserver.rooms.pipeline import EventRefused
from storage.cache import LruCache

RV = get_room_version("10")


def pdu(room: str, n: int) -> dict[str, Any]:
    return {
        "room_id": room,
        "type": "m.room.message",
        "sender": "@a:peer.test",
        "content": {"n": n},
        "depth": n,
        "prev_events": [],
        "auth_events": [],
        "origin_server_ts": n,
        "hashes": {"sha256": "x"},
        "signatures": {},
    }


class FakeInbound:
    def __init__(self) -> None:
        self.rooms = {"!a:x": RV, "!b:x": RV}
        self.received: list[tuple[str, int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    def room_version(self, room_id: str) -> RoomVersion | None:
        return self.rooms.get(room_id)

    async def receive_pdu(self, origin: str, event: dict[str, Any], rv: RoomVersion) -> None:
        await self.gate.wait()
        if event["content"]["n"] < 0:
            raise EventRefused("bad signature")
        self.received.append((event["room_id"], event["content"]["n"]))


def make(inbound: FakeInbound, denied: set[str] | None = None) -> tuple[Transactions, list[tuple[str, Any]]]:
    edus: list[tuple[str, Any]] = []

    async def typing(origin: str, content: Any) -> None:
        edus.append((origin, content))

    t = Transactions(
        inbound,  # type: ignore[arg-type]
        lambda room, server: room not in (denied or set()),
        {"m.typing": typing},
        LruCache("txns", 100),
    )
    return t, edus


async def test_results_per_pdu_in_room_order() -> None:
    inbound = FakeInbound()
    t, edus = make(inbound, denied={"!b:x"})
    pdus = [pdu("!a:x", 1), pdu("!a:x", -2), pdu("!b:x", 3), pdu("!unknown:x", 4), pdu("!a:x", 5), "junk"]
    answer = await t.receive(
        "peer.test",
        "t1",
        {"pdus": pdus, "edus": [{"edu_type": "m.typing", "content": {"x": 1}}, {"edu_type": "m.other"}, 5]},
    )
    ids = [compute_event_id(p, RV) for p in pdus[:5] if isinstance(p, dict)]
    assert answer["pdus"][ids[0]] == {} and answer["pdus"][ids[4]] == {}
    assert "error" in answer["pdus"][ids[1]]
    assert "ACL" in answer["pdus"][ids[2]]["error"]
    assert ids[3] not in answer["pdus"]  # a room we are not in
    assert inbound.received == [("!a:x", 1), ("!a:x", 5)]
    assert edus == [("peer.test", {"x": 1})]


async def test_a_transaction_is_processed_once() -> None:
    inbound = FakeInbound()
    t, _ = make(inbound)
    inbound.gate.clear()
    body = {"pdus": [pdu("!a:x", 1)]}
    first = asyncio.create_task(t.receive("peer.test", "t1", body))
    retry = asyncio.create_task(t.receive("peer.test", "t1", body))  # while the first is still running
    await asyncio.sleep(0.01)
    inbound.gate.set()
    assert await first == await retry
    assert await t.receive("peer.test", "t1", body) == await first  # a later retry
    assert inbound.received == [("!a:x", 1)]
    await t.receive("other.test", "t1", body)  # the same id from another server is another transaction
    assert len(inbound.received) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"pdus": [pdu("!a:x", i) for i in range(MAX_PDUS + 1)]},
        {"edus": [{"edu_type": "m.typing"}] * (MAX_EDUS + 1)},
    ],
)
async def test_limits(body: dict[str, Any]) -> None:
    t, _ = make(FakeInbound())
    with pytest.raises(TransactionTooLarge):
        await t.receive("peer.test", "t", body)


async def test_malformed_lists_are_refused() -> None:
    t, _ = make(FakeInbound())
    with pytest.raises(ValueError):
        await t.receive("peer.test", "t", {"pdus": {"not": "a list"}})
