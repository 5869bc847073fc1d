"""Inbound transactions: `PUT /_matrix/federation/v1/send/{txnId}`.

spec: server-server-api "Transactions" and "PDUs": at most 50 PDUs and 100 EDUs; a transaction is
processed once per (origin, txnId) — a retry gets the first answer, a retry while the first is still
being processed waits for it; each PDU gets a result (`{}`, or `{"error": …}` when it was dropped);
PDUs of one room in order, rooms independent. Server ACLs apply per PDU and per room-bound EDU
("Server Access Control Lists"). Unknown EDU types are ignored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from federation.inbound import GapError, Inbound
from homeserver.protocol.errors import ProtocolError
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.rooms.pipeline import EventRefused, MissingEventsError, MissingStateError
from storage.cache import LruCache

log = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100

EduHandler = Callable[[str, Any], Awaitable[None]]
AclCheck = Callable[[str, str], bool]  # (room id, server) -> allowed


class TransactionTooLarge(Exception):
    pass


class Transactions:
    def __init__(
        self,
        inbound: Inbound,
        acl_allows: AclCheck,
        edu_handlers: Mapping[str, EduHandler],
        done: LruCache[tuple[str, str], dict[str, Any]],
    ) -> None:
        self.inbound = inbound
        self.acl_allows = acl_allows
        self.edu_handlers = edu_handlers
        self._done = done  # (origin, txn id) -> the answer given
        self._running: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}

    async def receive(self, origin: str, txn_id: str, body: dict[str, Any]) -> dict[str, Any]:
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise ValueError("pdus and edus must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise TransactionTooLarge(f"a transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")
        key = (origin, txn_id)
        answered = self._done.get(key)
        if answered is not None:
            return answered
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            answer = {"pdus": await self._pdus(origin, pdus)}
            await self._edus(origin, edus)
            self._done.put(key, answer)
            future.set_result(answer)
            return answer
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: a retry that never comes must not log "never retrieved"
            raise
        finally:
            del self._running[key]

    async def _pdus(self, origin: str, pdus: list[Any]) -> dict[str, dict[str, Any]]:
        results: dict[str, dict[str, Any]] = {}
        by_room: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for pdu in pdus:
            if not isinstance(pdu, dict) or not isinstance(pdu.get("room_id"), str):
                continue  # no event id can be named for it
            room_id = pdu["room_id"]
            rv = self.inbound.room_version(room_id)
            if rv is None:
                continue  # a room we are not in: the event id cannot be computed without its version
            try:
                eid = compute_event_id(pdu, rv)
            except ProtocolError:
                continue
            if not self.acl_allows(room_id, origin):
                results[eid] = {"error": f"{origin} is denied by the room's server ACL"}
                continue
            by_room.setdefault(room_id, []).append((eid, pdu))

        async def room(events: list[tuple[str, dict[str, Any]]]) -> None:
            for eid, pdu in events:
                results[eid] = await self._one(origin, eid, pdu)

        await asyncio.gather(*(room(events) for events in by_room.values()))
        return results

    async def _one(self, origin: str, eid: str, pdu: dict[str, Any]) -> dict[str, Any]:
        rv = self.inbound.room_version(pdu["room_id"])
        if rv is None:
            return {"error": "unknown room"}
        try:
            await self.inbound.receive_pdu(origin, pdu, rv)
        except (EventRefused, ProtocolError) as e:
            return {"error": f"refused: {e}"}
        except (MissingEventsError, MissingStateError, GapError) as e:
            return {"error": f"its ancestors could not be obtained: {e}"}
        except Exception as e:  # a peer's failure while we fetched: this PDU only
            log.warning("PDU %s from %s: %s", eid, origin, e, exc_info=True)
            return {"error": "could not be processed"}
        return {}

    async def _edus(self, origin: str, edus: list[Any]) -> None:
        for edu in edus:
            if not isinstance(edu, dict) or not isinstance(edu.get("edu_type"), str):
                continue
            handler = self.edu_handlers.get(edu["edu_type"])
            if handler is None:
                continue
            try:
                await handler(origin, edu.get("content"))
            except Exception as e:
                log.info("EDU %s from %s: %s", edu["edu_type"], origin, e)
