"""The outbound sender: one queue and one transaction in flight per destination.

spec: server-server-api "Transactions": at most 50 PDUs and 100 EDUs per transaction, `PUT
/_matrix/federation/v1/send/{txnId}`. PDUs are queued in the store in the batch of the event that
owes them (storage/federation_queue.py) and deleted when the destination acknowledges them, so a
restart loses nothing and resends nothing acknowledged. EDUs that describe the present (typing,
receipts, presence) are kept in memory, bounded per destination: they are worthless after an
outage. Those that must arrive (`DURABLE_EDUS`: to-device messages carry the keys of encrypted
messages, device-list and signing-key updates) are stored the same way as PDUs, and go first.
A destination down for days must not make that store grow without bound: past
`DURABLE_EDU_LIMIT` queued for it, the backlog is compacted (`_make_room`, in the batch of the new
EDU). Device-list and signing-key updates of a user collapse to the newest: a signing-key update
carries the whole keys, and a device-list update whose `prev_id` the receiver never saw makes it
fetch the whole list again (spec: "Device Management"; Synapse also sends only the newest update
of each device after an outage). The newest of each user is never dropped, so what remains of
them is bounded by our users. Then, if still over, the oldest to-device messages are dropped.

A destination that fails is retried with exponential back-off (2 s doubling, at most 30 min),
reset when it contacts us. After a failure, a queue longer than one transaction is caught up by
sending only the newest queued PDU of each room: the destination fetches what lies between with
`get_missing_events` (Synapse does the same), instead of receiving hours of history in order.
A PDU the destination refuses (an error in the transaction's per-PDU result) is not resent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from storage.engine import Batch, Store
from storage.federation_queue import FederationQueueStore

log = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100
EDU_QUEUE_LIMIT = 500  # per destination; older ones are dropped first
BACKOFF_START_S = 2.0
BACKOFF_MAX_S = 30 * 60.0
DURABLE_EDUS = frozenset({"m.direct_to_device", "m.device_list_update", "m.signing_key_update"})
DURABLE_EDU_LIMIT = 10_000  # durable EDUs queued per destination before its backlog is compacted
# a user's newest EDU of these says all the older ones said (see the module's docstring)
COLLAPSIBLE_EDUS = frozenset({"m.device_list_update", "m.signing_key_update"})


def _collapse_key(edu: dict[str, Any]) -> tuple[str, str] | None:
    content = edu.get("content")
    user_id = content.get("user_id") if isinstance(content, dict) else None
    edu_type = edu.get("edu_type")
    if isinstance(edu_type, str) and edu_type in COLLAPSIBLE_EDUS and isinstance(user_id, str):
        return edu_type, user_id
    return None


class Transport(Protocol):
    async def send_transaction(self, destination: str, txn_id: str, body: dict[str, Any]) -> Any:
        """PUT the transaction; raises when the destination could not take it."""
        ...


class PduSource(Protocol):
    def pdu(self, event: int) -> dict[str, Any] | None:
        """The event as it goes over federation, or None if it is gone."""
        ...

    def room_of(self, event: int) -> int | None: ...


@dataclass
class _Destination:
    name: str
    edus: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EDU_QUEUE_LIMIT))
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    failures: int = 0
    retry_at: float = 0.0
    behind: bool = False  # a transaction failed since the last one that went through: catch up
    durable_count: int | None = None  # durable EDUs queued (None: not counted yet)
    compact_at: int = DURABLE_EDU_LIMIT  # compact the backlog once durable_count reaches it
    in_flight: frozenset[int] = frozenset()  # sequence numbers of durable EDUs being sent: kept


class FederationSender:
    def __init__(
        self,
        server_name: str,
        store: Store,
        queue: FederationQueueStore,
        pdus: PduSource,
        transport: Transport,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        backoff_start_s: float = BACKOFF_START_S,
        durable_edu_limit: int = DURABLE_EDU_LIMIT,
    ) -> None:
        self.server_name = server_name
        self.store = store
        self.queue = queue
        self.pdus = pdus
        self.transport = transport
        self.clock = clock
        self.monotonic = monotonic
        self.backoff_start_s = backoff_start_s
        self.durable_edu_limit = durable_edu_limit
        self.compact_to = durable_edu_limit * 9 // 10  # what a compaction leaves (not one at each new EDU)
        self._destinations: dict[str, _Destination] = {}
        self._txn_ids = itertools.count(1)
        self._txn_prefix = str(int(clock() * 1000))
        self._edu_seq = queue.last_edu_seq()
        self._closed = False

    # -- what others call --------------------------------------------------------------------------

    def start(self) -> None:
        """Resume every destination that was owed PDUs when the server stopped."""
        for name in self.queue.destinations():
            self.wake(name)

    def enqueue(self, batch: Batch, position: int, event: int, destinations: Iterable[str]) -> None:
        """Owe a PDU (the event at stream `position`) to each destination, in the event's batch; the
        destinations are woken once the batch has landed."""
        names = sorted({d for d in destinations if d != self.server_name})
        for name in names:
            self.queue.enqueue(name, position, event, batch)
        if names:

            def wake_all() -> None:
                for name in names:
                    self.wake(name)

            batch.on_commit.append(wake_all)

    def send_edu(self, destination: str, edu_type: str, content: dict[str, Any]) -> None:
        if destination == self.server_name or self._closed:
            return
        edu = {"edu_type": edu_type, "content": content}
        if edu_type in DURABLE_EDUS:
            d = self._destination(destination)
            if d.durable_count is None:
                d.durable_count = self.queue.count_edus(destination)
            self._edu_seq += 1
            batch = self.store.batch()
            with batch:
                dropped = self._make_room(d, edu, batch) if d.durable_count >= d.compact_at else 0
                self.queue.enqueue_edu(destination, self._edu_seq, edu, batch)
                self.store.commit_now(batch)
            d.durable_count += 1 - dropped
        else:
            self._destination(destination).edus.append(edu)
        self.wake(destination)

    def contacted(self, destination: str) -> None:
        """The destination reached us: it is up, so retry it now."""
        d = self._destinations.get(destination)
        if d is not None and d.failures:
            d.failures = 0
            d.retry_at = 0.0
            d.wake.set()

    def wake(self, destination: str) -> None:
        if self._closed:
            return
        d = self._destination(destination)
        d.wake.set()
        if d.task is None or d.task.done():
            d.task = asyncio.get_running_loop().create_task(self._run(d), name=f"federation-send:{destination}")

    def backing_off(self, destination: str) -> bool:
        d = self._destinations.get(destination)
        return d is not None and d.failures > 0

    async def close(self) -> None:
        self._closed = True
        tasks = [d.task for d in self._destinations.values() if d.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    # -- the loop of one destination ---------------------------------------------------------------

    def _destination(self, name: str) -> _Destination:
        d = self._destinations.get(name)
        if d is None:
            d = self._destinations[name] = _Destination(name, compact_at=self.durable_edu_limit)
        return d

    async def _run(self, d: _Destination) -> None:
        while not self._closed:
            d.wake.clear()
            wait = d.retry_at - self.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(d.wake.wait(), wait)
                continue  # woken: re-check (contacted() resets retry_at; a new event alone does not)
            entries = self.queue.pending(d.name, self.store.counter.visible, None if d.behind else MAX_PDUS)
            if d.behind and len(entries) > MAX_PDUS:
                entries = self._catch_up(d.name, entries)
            entries = entries[:MAX_PDUS]
            durable = self.queue.pending_edus(d.name, MAX_EDUS)
            fleeting = list(itertools.islice(d.edus, MAX_EDUS - len(durable)))
            edus = [edu for _, edu in durable] + fleeting
            d.in_flight = frozenset(seq for seq, _ in durable)
            if not entries and not edus:
                if (
                    not d.edus
                    and not self.queue.pending(d.name, self.store.counter.visible, 1)
                    and not self.queue.pending_edus(d.name, 1)
                ):
                    # Nothing owed and healthy: the record goes too (one per peer ever reached would
                    # grow without bound); the next wake() makes a fresh one.
                    if d.failures == 0 and self._destinations.get(d.name) is d:
                        del self._destinations[d.name]
                    return
                continue
            if not await self._send(d, entries, edus):
                d.in_flight = frozenset()
                d.failures += 1
                d.behind = True
                d.retry_at = self.monotonic() + min(self.backoff_start_s * 2 ** (d.failures - 1), BACKOFF_MAX_S)
                continue
            d.failures = 0
            d.behind = False
            for _ in fleeting:
                d.edus.popleft()
            await self._acknowledged(d.name, [p for p, _ in entries], [seq for seq, _ in durable])
            d.in_flight = frozenset()  # only now: a compaction meanwhile must not count them gone twice
            if d.durable_count is not None:
                d.durable_count = max(0, d.durable_count - len(durable))

    def _make_room(self, d: _Destination, incoming: dict[str, Any], batch: Batch) -> int:
        """Compact the durable backlog of a destination that owes `d.compact_at` EDUs, in the batch
        that queues `incoming`: older device-list and signing-key updates of a user who has a newer
        one (`incoming` included) go, then the oldest to-device messages until `compact_to` are
        left. EDUs in a transaction being sent are kept. Returns how many were removed."""
        assert d.durable_count is not None
        queued = [(seq, edu) for seq, edu in self.queue.pending_edus(d.name, None) if seq not in d.in_flight]
        drop: set[int] = set()
        newest: dict[tuple[str, str], int] = {}
        for seq, edu in queued:
            key = _collapse_key(edu)
            if key is not None:
                if key in newest:
                    drop.add(newest[key])
                newest[key] = seq
        key = _collapse_key(incoming)
        if key is not None and key in newest:
            drop.add(newest[key])
        collapsed = len(drop)
        left = d.durable_count - len(drop) + 1
        for seq, edu in queued:
            if left <= self.compact_to:
                break
            if seq not in drop and edu.get("edu_type") == "m.direct_to_device":
                drop.add(seq)
                left -= 1
        self.queue.remove_edus(d.name, drop, batch)
        # if what is left cannot be dropped (the newest update of many users), wait for some growth
        d.compact_at = max(self.durable_edu_limit, left + self.durable_edu_limit - self.compact_to)
        log.warning(
            "federation: %s owes %d durable EDUs: %d older device-list/signing-key updates collapsed, "
            "%d to-device messages dropped",
            d.name,
            d.durable_count,
            collapsed,
            len(drop) - collapsed,
        )
        return len(drop)

    def _catch_up(self, destination: str, entries: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The newest entry of each room; the others are dropped from the queue (the destination
        fills the gap with get_missing_events)."""
        newest: dict[int | None, tuple[int, int]] = {}
        for position, event in entries:
            newest[self.pdus.room_of(event)] = (position, event)
        keep = sorted(newest.values())
        kept = {p for p, _ in keep}
        dropped = [p for p, _ in entries if p not in kept]
        log.info("federation: catching %s up: %d queued events, sending %d", destination, len(entries), len(keep))
        batch = self.store.batch()
        with batch:
            self.queue.remove(destination, dropped, batch)
            self.store.commit_now(batch)
        return keep

    async def _send(self, d: _Destination, entries: list[tuple[int, int]], edus: list[dict[str, Any]]) -> bool:
        pdus = [pdu for pdu in (self.pdus.pdu(event) for _, event in entries) if pdu is not None]
        body: dict[str, Any] = {
            "origin": self.server_name,
            "origin_server_ts": int(self.clock() * 1000),
            "pdus": pdus,
        }
        if edus:
            body["edus"] = edus
        txn_id = f"{self._txn_prefix}.{next(self._txn_ids)}"
        try:
            answer = await self.transport.send_transaction(d.name, txn_id, body)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.info("federation: transaction %s to %s failed: %s", txn_id, d.name, e)
            return False
        results = answer.get("pdus") if isinstance(answer, dict) else None
        for event_id, result in results.items() if isinstance(results, dict) else ():
            if isinstance(result, dict) and "error" in result:
                log.info("federation: %s refused %s: %s", d.name, event_id, result["error"])
        return True

    async def _acknowledged(self, destination: str, positions: list[int], edu_seqs: list[int]) -> None:
        if not positions and not edu_seqs:
            return
        batch = self.store.batch()
        with batch:
            self.queue.remove(destination, positions, batch)
            self.queue.remove_edus(destination, edu_seqs, batch)
            await batch.commit()
