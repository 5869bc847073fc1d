"""Smaller room-service tables: client transaction ids, forgotten rooms, events by timestamp, reports.

spec: client-server-api "Transaction identifiers", POST /forget, GET /timestamp_to_event, "Reporting
content". The room service decides what goes in; this module stores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.batch_view import BatchView
from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

TXN_IDS = Table("txn_ids", ("str", "str", "str", "str"), "str", "user, device, endpoint scope, txn id -> event id")
EVENT_TXN = Table("event_txn", ("event",), "str", "event -> device 0xFF txn id of the local request that sent it")
FORGOTTEN_ROOMS = Table("forgotten_rooms", ("str", "room"), "empty", "user id, room: rooms the user forgot")
EVENT_TIMESTAMPS = Table("event_timestamps", ("room", "u64", "order"), "event", "room, ts, order -> event")
REPORTS = Table("content_reports", ("u64", "str"), "json", "time (ms), id -> a report of an event or room")
TABLES = (TXN_IDS, EVENT_TXN, FORGOTTEN_ROOMS, EVENT_TIMESTAMPS, REPORTS)


def _txn_key(user_id: str, device_id: str, scope: str, txn_id: str) -> bytes:
    return SEP.join((user_id.encode(), device_id.encode(), scope.encode(), txn_id.encode()))


class RoomExtrasStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- transaction ids -------------------------------------------------------------------------

    def txn_event(self, user_id: str, device_id: str, scope: str, txn_id: str) -> str | None:
        raw = self.store.get(TXN_IDS, _txn_key(user_id, device_id, scope, txn_id))
        return raw.decode() if raw is not None else None

    def event_txn(self, short: int) -> tuple[str, str] | None:
        """(device id, txn id) of the request that sent a local event, if it came with one."""
        raw = self.store.get(EVENT_TXN, u64(short))
        if raw is None:
            return None
        device, _, txn = raw.partition(SEP)
        return device.decode(), txn.decode()

    def put_txn(
        self, view: BatchView, user_id: str, device_id: str, scope: str, txn_id: str, short: int, event_id: str
    ) -> None:
        view.put(TXN_IDS, _txn_key(user_id, device_id, scope, txn_id), event_id.encode())
        view.put(EVENT_TXN, u64(short), device_id.encode() + SEP + txn_id.encode())

    # -- forgotten rooms -------------------------------------------------------------------------

    def is_forgotten(self, user_id: str, room: int) -> bool:
        return self.store.get(FORGOTTEN_ROOMS, user_id.encode() + SEP + u64(room)) is not None

    def forgotten_rooms(self, user_id: str) -> Iterator[int]:
        prefix = user_id.encode() + SEP
        for k in self.store.keys(FORGOTTEN_ROOMS, prefix):
            yield read_u64(k, len(prefix))

    def set_forgotten(self, user_id: str, room: int, forgotten: bool, batch: Batch | BatchView) -> None:
        key = user_id.encode() + SEP + u64(room)
        if forgotten:
            batch.put(FORGOTTEN_ROOMS, key, b"")
        else:
            batch.delete(FORGOTTEN_ROOMS, key)

    # -- events by timestamp ---------------------------------------------------------------------

    def put_timestamp(self, view: BatchView, room: int, ts: int, order: int, short: int) -> None:
        view.put(EVENT_TIMESTAMPS, u64(room) + u64(min(max(ts, 0), 2**64 - 2)) + u64(order), u64(short))

    def events_by_time(self, room: int, ts: int, *, forwards: bool) -> Iterator[tuple[int, int]]:
        """(origin_server_ts, short event id) from `ts` onwards (forwards) or at or before it (backwards)."""
        ts = min(max(ts, 0), 2**64 - 2)
        if forwards:
            it = self.store.iterate(EVENT_TIMESTAMPS, u64(room), start=u64(ts))
        else:
            it = self.store.iterate(EVENT_TIMESTAMPS, u64(room), stop=u64(ts + 1), reverse=True)
        for k, v in it:
            yield read_u64(k, 8), read_u64(v)

    # -- reports ---------------------------------------------------------------------------------

    def add_report(self, ts: int, report_id: str, report: dict[str, Any], batch: Batch) -> None:
        batch.put(REPORTS, u64(ts) + report_id.encode(), orjson.dumps(report, option=orjson.OPT_SORT_KEYS))

    def reports(self) -> Iterator[dict[str, Any]]:
        for _, v in self.store.iterate(REPORTS):
            yield orjson.loads(v)
