"""Redactions: which accepted redaction applies to an event, and redactions still waiting for their target.

Served copies of a redacted event are redacted on the way out (spec: client-server-api "Redactions");
one lookup by short id tells whether that is needed. The room service decides validity.
"""

from __future__ import annotations

import struct

from storage.batch_view import BatchView, Reader
from storage.codec import read_u64, u64
from storage.engine import Table

REDACTED_BY = Table("redacted_by", ("event",), "event", "redacted event -> the redaction event applied to it")
PENDING_REDACTIONS = Table(
    "pending_redactions", ("str",), "event*", "target event id -> redactions that arrived before their target"
)
TABLES = (REDACTED_BY, PENDING_REDACTIONS)


class RedactionStore:
    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def redacted_by(self, short: int, reader: Reader | None = None) -> int | None:
        raw = (reader or self.reader).get(REDACTED_BY, u64(short))
        return read_u64(raw) if raw is not None else None

    def pending_for(self, target_id: str, reader: Reader | None = None) -> list[int]:
        """Redactions waiting for `target_id` (one lookup: every event written asks)."""
        raw = (reader or self.reader).get(PENDING_REDACTIONS, target_id.encode())
        return list(struct.unpack(f">{len(raw) // 8}Q", raw)) if raw else []

    def set_redacted(self, view: BatchView, short: int, redaction: int) -> None:
        view.put(REDACTED_BY, u64(short), u64(redaction))

    def add_pending(self, view: BatchView, target_id: str, redaction: int) -> None:
        waiting = self.pending_for(target_id, view)
        if redaction not in waiting:
            waiting.append(redaction)
        view.put(PENDING_REDACTIONS, target_id.encode(), struct.pack(f">{len(waiting)}Q", *waiting))

    def drop_pending(self, view: BatchView, target_id: str) -> None:
        view.delete(PENDING_REDACTIONS, target_id.encode())
