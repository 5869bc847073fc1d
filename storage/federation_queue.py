"""The outbound federation queue: PDUs owed to each destination, written in the event's own batch.

Entries are keyed by destination and the event's stream position, so a destination's queue is read
in the order events were written, and only up to the stream's visible position (an entry whose
batch lands later with a smaller position is never skipped). An entry is deleted once the
destination has acknowledged the transaction that carried it: a restart resends exactly what was
not acknowledged.

Some EDUs must survive a restart too (to-device messages carry the keys of encrypted messages; a
lost one is a message nobody can read): those are kept in a second table, keyed by destination and
a sequence number, until acknowledged the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from storage.codec import SEP, prefix_upper_bound, read_u64, u64
from storage.engine import Batch, Store, Table

FEDERATION_QUEUE = Table(
    "federation_queue", ("str", "u64"), "event", "destination, stream position -> a PDU owed to it (short event id)"
)
FEDERATION_EDUS = Table(
    "federation_edus", ("str", "u64"), "json", "destination, sequence -> an EDU owed to it that must survive a restart"
)
TABLES = (FEDERATION_QUEUE, FEDERATION_EDUS)


class FederationQueueStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def enqueue(self, destination: str, position: int, event: int, batch: Batch) -> None:
        batch.put(FEDERATION_QUEUE, destination.encode() + SEP + u64(position), u64(event))

    def pending(self, destination: str, upto: int, limit: int | None = None) -> list[tuple[int, int]]:
        """(position, short event id) owed to `destination`, oldest first, positions <= `upto`."""
        prefix = destination.encode() + SEP
        out: list[tuple[int, int]] = []
        for k, v in self.store.iterate(FEDERATION_QUEUE, prefix, stop=u64(upto + 1)):
            out.append((read_u64(k, len(prefix)), read_u64(v)))
            if limit is not None and len(out) >= limit:
                break
        return out

    def count(self, destination: str) -> int:
        return self.store.count(FEDERATION_QUEUE, destination.encode() + SEP)

    def remove(self, destination: str, positions: Iterable[int], batch: Batch) -> None:
        prefix = destination.encode() + SEP
        for p in positions:
            batch.delete(FEDERATION_QUEUE, prefix + u64(p))

    def enqueue_edu(self, destination: str, seq: int, edu: dict[str, Any], batch: Batch) -> None:
        batch.put(FEDERATION_EDUS, destination.encode() + SEP + u64(seq), orjson.dumps(edu))

    def pending_edus(self, destination: str, limit: int | None) -> list[tuple[int, dict[str, Any]]]:
        """(sequence, EDU) owed to `destination`, oldest first (all of them when `limit` is None)."""
        prefix = destination.encode() + SEP
        out: list[tuple[int, dict[str, Any]]] = []
        for k, v in self.store.iterate(FEDERATION_EDUS, prefix):
            out.append((read_u64(k, len(prefix)), orjson.loads(v)))
            if limit is not None and len(out) >= limit:
                break
        return out

    def count_edus(self, destination: str) -> int:
        return self.store.count(FEDERATION_EDUS, destination.encode() + SEP)

    def remove_edus(self, destination: str, seqs: Iterable[int], batch: Batch) -> None:
        prefix = destination.encode() + SEP
        for seq in seqs:
            batch.delete(FEDERATION_EDUS, prefix + u64(seq))

    def last_edu_seq(self) -> int:
        """The highest sequence number in use (0 when none): new ones continue after it."""
        return max((read_u64(k, k.index(SEP) + 1) for k in self._first_keys(FEDERATION_EDUS, last=True)), default=0)

    def destinations(self) -> Iterator[str]:
        """Every destination with something queued, PDUs or EDUs (one seek per destination)."""
        seen: set[str] = set()
        for table in (FEDERATION_QUEUE, FEDERATION_EDUS):
            for key in self._first_keys(table):
                name = key[: key.index(SEP)].decode()
                if name not in seen:
                    seen.add(name)
                    yield name

    def _first_keys(self, table: Table, *, last: bool = False) -> Iterator[bytes]:
        """The first (or last) key of each destination's range in `table`."""
        start: bytes | None = None
        while True:
            first = next(self.store.iterate(table, start=start, include_value=False), None)
            if first is None:
                return
            name = first[0][: first[0].index(SEP)]
            if last:
                end = prefix_upper_bound(name + SEP)
                tail = next(self.store.iterate(table, name + SEP, reverse=True, include_value=False), None)
                yield tail[0] if tail is not None else first[0]
                start = end
            else:
                yield first[0]
                start = prefix_upper_bound(name + SEP)
            if start is None:
                return
