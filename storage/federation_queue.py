"""The outbound federation queue: PDUs owed to each destination, written in the event's own batch.

Entries are keyed by destination and the event's stream position, so a destination's queue is read
in the order events were written, and only up to the stream's visible position (an entry whose
batch lands later with a smaller position is never skipped). An entry is deleted once the
destination has acknowledged the transaction that carried it: a restart resends exactly what was
not acknowledged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from storage.codec import SEP, prefix_upper_bound, read_u64, u64
from storage.engine import Batch, Store, Table

FEDERATION_QUEUE = Table(
    "federation_queue", ("str", "u64"), "event", "destination, stream position -> a PDU owed to it (short event id)"
)
TABLES = (FEDERATION_QUEUE,)


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

    def destinations(self) -> Iterator[str]:
        """Every destination with something queued (one seek per destination)."""
        start: bytes | None = None
        while True:
            first = next(self.store.iterate(FEDERATION_QUEUE, start=start, include_value=False), None)
            if first is None:
                return
            name = first[0][: first[0].index(SEP)]
            yield name.decode()
            start = prefix_upper_bound(name + SEP)
            if start is None:
                return
