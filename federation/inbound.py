"""PDUs from other servers, with the gaps in front of them filled.

spec: server-server-api "Checks performed on receipt of a PDU" and "Backfilling and retrieving
missing events". The checks themselves are the pipeline's receive half (homeserver/rooms/
receiving.py); this module fetches what it lacks:

- unknown auth events: the event's auth chain from `/event_auth`, stored as outliers;
- unknown prev events: `/get_missing_events` between our forward extremities and the event,
  `MISSING_EVENTS_LIMIT` a request, round after round back to what we hold, at most
  `MISSING_EVENTS_MAX` in all, then received oldest first the same way (without get_missing_events
  of their own: a gap that remains is bridged with state);
- a gap that remains: the state after each missing prev event from `/state_ids` at it (the state
  before it, plus the prev itself when it is a state event), the events named there that we lack
  fetched (`/event` one by one when few, else `/state` in one go) and stored as outliers, then the
  event accepted with those states resolved with ours.

PDUs of one room are handled one at a time and in the order they came; rooms are independent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from federation.client import path_of
from homeserver.errors import MatrixError
from homeserver.locks import KeyedLocks
from homeserver.protocol.errors import ProtocolError
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.room_versions import RoomVersion
from homeserver.rooms.pipeline import (
    EventPipeline,
    EventRefused,
    KeyLookup,
    MissingEventsError,
    MissingStateError,
    PersistedEvent,
)
from homeserver.state.event_source import reference_ids

log = logging.getLogger(__name__)

MISSING_EVENTS_LIMIT = 10  # per /get_missing_events request
MISSING_EVENTS_MAX = 200  # per gap, over several requests
FETCH_ONE_BY_ONE = 50  # more missing state events than this: one /state request instead
FETCH_CONCURRENCY = 8


class Requester(Protocol):
    async def request(self, destination: str, method: str, path: str, *, content: Any | None = None) -> Any: ...


def _v1(*segments: str, query: Mapping[str, Any] | None = None) -> str:
    return path_of("_matrix", "federation", "v1", *segments, query=query)


def _depth(event: Mapping[str, Any]) -> int:
    d = event.get("depth")
    return d if isinstance(d, int) else 0


class GapError(Exception):
    """The event's missing ancestors or state could not be obtained."""


class Inbound:
    def __init__(self, pipeline: EventPipeline, client: Requester, keys: KeyLookup) -> None:
        self.pipeline = pipeline
        self.client = client
        self.keys = keys
        self._room_locks: KeyedLocks[str] = KeyedLocks()

    def room_version(self, room_id: str) -> RoomVersion | None:
        try:
            return self.pipeline.load_context(room_id).rv
        except MatrixError:
            return None

    def room_lock(self, room_id: str) -> Any:
        """The lock PDUs of a room are handled under (backfill takes it too: one writer per room)."""
        return self._room_locks(room_id)

    async def receive_pdu(self, origin: str, pdu: dict[str, Any], rv: RoomVersion) -> PersistedEvent:
        """Accept a PDU pushed to us, filling gaps from `origin`; PDUs of a room go one at a time."""
        room_id = pdu["room_id"]
        async with self._room_locks(room_id):
            return await self._receive(origin, pdu, rv, fill_prevs=True)

    async def _receive(self, origin: str, pdu: dict[str, Any], rv: RoomVersion, *, fill_prevs: bool) -> PersistedEvent:
        eid = compute_event_id(pdu, rv)
        auth_ids = set(reference_ids(pdu.get("auth_events"), rv.event_format))
        fetched_auth = filled_prevs = False
        while True:
            try:
                return await self.pipeline.receive(pdu, self.keys)
            except MissingEventsError as e:
                missing = set(e.event_ids)
            except MissingStateError:
                missing = set()
            if missing & auth_ids and not fetched_auth:
                fetched_auth = True
                await self._fetch_auth_chain(origin, pdu["room_id"], eid, rv)
                continue
            if fill_prevs and not filled_prevs:
                filled_prevs = True
                await self._fill_from_missing_events(origin, pdu, eid, rv)
                continue
            prev_ids = set(reference_ids(pdu.get("prev_events"), rv.event_format))
            return await self._receive_with_remote_state(origin, pdu, rv, prev_ids)

    async def fetch_auth_chain(self, origin: str, room_id: str, eid: str, rv: RoomVersion) -> None:
        """The auth chain of `eid` from `origin` (`/event_auth`), stored as outliers."""
        await self._fetch_auth_chain(origin, room_id, eid, rv)

    async def _fetch_auth_chain(self, origin: str, room_id: str, eid: str, rv: RoomVersion) -> None:
        answer = await self.client.request(origin, "GET", _v1("event_auth", room_id, eid))
        chain = answer.get("auth_chain") if isinstance(answer, dict) else None
        await self.store_outliers(
            room_id, rv, [e for e in chain if isinstance(e, dict)] if isinstance(chain, list) else []
        )

    async def _fill_from_missing_events(self, origin: str, pdu: dict[str, Any], eid: str, rv: RoomVersion) -> None:
        """Fetch the events between our forward extremities and `eid` with `/get_missing_events`,
        round after round (each from the oldest events fetched so far) until the gap closes or
        `MISSING_EVENTS_MAX` events came, then accept them oldest first. A gap left (a longer
        outage) is bridged with state by the caller: our timeline orders live events by arrival,
        so history missing in its middle could not be placed later."""
        room_id = pdu["room_id"]
        ctx = self.pipeline.load_context(room_id)
        earliest = [self.pipeline.event_id_of(ctx, s) for s in ctx.extremities]
        min_depth = min((self.pipeline.meta(ctx, s).depth for s in ctx.extremities), default=0)
        fetched: dict[str, dict[str, Any]] = {}
        latest = [eid]
        while latest and len(fetched) < MISSING_EVENTS_MAX:
            try:
                answer = await self.client.request(
                    origin,
                    "POST",
                    _v1("get_missing_events", room_id),
                    content={
                        "earliest_events": earliest,
                        "latest_events": latest,
                        "limit": MISSING_EVENTS_LIMIT,
                        "min_depth": min_depth,
                    },
                )
            except Exception as e:
                log.info("get_missing_events from %s for %s: %s", origin, eid, e)
                break
            events = answer.get("events") if isinstance(answer, dict) else None
            new = 0
            for event in events[:MISSING_EVENTS_LIMIT] if isinstance(events, list) else []:
                if not isinstance(event, dict) or event.get("room_id") != room_id:
                    continue
                try:
                    fid = compute_event_id(event, rv)
                except ProtocolError:
                    continue
                if fid not in fetched:
                    fetched[fid] = event
                    new += 1
            if not new:
                break
            # the next round starts from the fetched events whose prev events are still missing
            ctx = self.pipeline.load_context(room_id)
            latest = [
                fid
                for fid, event in fetched.items()
                if any(
                    p not in fetched and self.pipeline.stored_short(ctx, p) is None
                    for p in reference_ids(event.get("prev_events"), rv.event_format)
                )
            ][:MISSING_EVENTS_LIMIT]
        for event in sorted(fetched.values(), key=_depth):
            try:
                await self._receive(origin, event, rv, fill_prevs=False)
            except (EventRefused, GapError, ProtocolError) as e:
                log.info("a missing event from %s could not be accepted: %s", origin, e)

    async def _receive_with_remote_state(
        self, origin: str, pdu: dict[str, Any], rv: RoomVersion, prev_ids: Iterable[str]
    ) -> PersistedEvent:
        room_id = pdu["room_id"]
        ctx = self.pipeline.load_context(room_id)
        states: dict[str, list[str]] = {}
        for prev in sorted(prev_ids):
            short = self.pipeline.stored_short(ctx, prev)
            if short is not None and not self.pipeline.meta(ctx, short).outlier:
                continue  # known with its state: the pipeline uses it
            states[prev] = await self._state_after(origin, room_id, prev, rv)
        return await self.pipeline.receive_after_gap(pdu, self.keys, states)

    async def state_before(self, origin: str, room_id: str, eid: str, rv: RoomVersion) -> list[str]:
        """The state before `eid` as `origin` knows it (`/state_ids` at it), every event of it stored
        here (outliers)."""
        return await self._state_at(origin, room_id, eid, rv, with_event=False)

    async def _state_after(self, origin: str, room_id: str, prev: str, rv: RoomVersion) -> list[str]:
        """The state after `prev` as `origin` knows it, every event of it stored here (outliers)."""
        return await self._state_at(origin, room_id, prev, rv, with_event=True)

    async def _state_at(self, origin: str, room_id: str, prev: str, rv: RoomVersion, *, with_event: bool) -> list[str]:
        answer = await self.client.request(origin, "GET", _v1("state_ids", room_id, query={"event_id": prev}))
        if not isinstance(answer, dict):
            raise GapError(f"{origin} gave no state at {prev}")
        pdu_ids = [e for e in answer.get("pdu_ids", []) if isinstance(e, str)]
        auth_ids = [e for e in answer.get("auth_chain_ids", []) if isinstance(e, str)]
        wanted = list(dict.fromkeys([*auth_ids, *pdu_ids, *([prev] if with_event else [])]))
        ctx = self.pipeline.load_context(room_id)
        lacking = [e for e in wanted if self.pipeline.stored_short(ctx, e) is None]
        if len(lacking) > FETCH_ONE_BY_ONE:
            answer = await self.client.request(origin, "GET", _v1("state", room_id, query={"event_id": prev}))
            events = [*answer.get("auth_chain", []), *answer.get("pdus", [])] if isinstance(answer, dict) else []
            if with_event:
                events += await self._fetch_events(origin, [prev])
        else:
            events = await self._fetch_events(origin, lacking)
        await self.store_outliers(room_id, rv, [e for e in events if isinstance(e, dict)])
        ctx = self.pipeline.load_context(room_id)
        prev_short = self.pipeline.stored_short(ctx, prev) if with_event else None
        state = {}
        for e in pdu_ids:
            short = self.pipeline.stored_short(ctx, e)
            if short is not None:
                ev = self.pipeline.event(ctx, short)
                state[(ev.get("type"), ev.get("state_key"))] = e
        if prev_short is not None:  # the state after the prev: the prev itself when it is a state event
            ev = self.pipeline.event(ctx, prev_short)
            if isinstance(ev.get("state_key"), str) and not self.pipeline.meta(ctx, prev_short).rejected:
                state[(ev.get("type"), ev.get("state_key"))] = prev
        return list(state.values())

    async def _fetch_events(self, origin: str, event_ids: list[str]) -> list[dict[str, Any]]:
        limit = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def one(eid: str) -> dict[str, Any] | None:
            async with limit:
                try:
                    answer = await self.client.request(origin, "GET", _v1("event", eid))
                except Exception as e:
                    log.info("event %s from %s: %s", eid, origin, e)
                    return None
            pdus = answer.get("pdus") if isinstance(answer, dict) else None
            return pdus[0] if isinstance(pdus, list) and pdus and isinstance(pdus[0], dict) else None

        return [e for e in await asyncio.gather(*(one(eid) for eid in event_ids)) if e is not None]

    async def store_outliers(self, room_id: str, rv: RoomVersion, events: list[dict[str, Any]]) -> None:
        """Store events as outliers, each after its auth events; those that fail are skipped (and so
        are events that need them)."""
        by_id: dict[str, dict[str, Any]] = {}
        for event in events:
            if event.get("room_id", room_id) != room_id:
                continue
            try:
                by_id.setdefault(compute_event_id(event, rv), event)
            except ProtocolError:
                continue
        for eid in _auth_order(by_id, rv):
            try:
                await self.pipeline.receive_outlier(by_id[eid], self.keys)
            except (EventRefused, MissingEventsError, ProtocolError) as e:
                log.info("outlier %s not stored: %s", eid, e)


def _auth_order(events: Mapping[str, dict[str, Any]], rv: RoomVersion) -> list[str]:
    """Each event after those of its auth events that are among `events` (depth then id otherwise)."""
    done: set[str] = set()
    order: list[str] = []

    def depth(eid: str) -> tuple[int, str]:
        return (_depth(events[eid]), eid)

    pending = sorted(events, key=depth)
    while pending:
        progressed = False
        rest = []
        for eid in pending:
            needs = [a for a in reference_ids(events[eid].get("auth_events"), rv.event_format) if a in events]
            if all(a in done for a in needs):
                done.add(eid)
                order.append(eid)
                progressed = True
            else:
                rest.append(eid)
        if not progressed:
            break  # an auth cycle: those events cannot be stored
        pending = rest
    return order
