"""Sending events for local users: PUT /send/{eventType}/{txnId}, PUT /state/{eventType}/{stateKey},
PUT /redact/{eventId}/{txnId}.

spec: client-server-api "Transaction identifiers": a retry of the same request (same device, same
endpoint and path, same txn id) returns the first answer. The mapping is written in the event's own
batch (through the room service's write hook), so an acknowledged event is never sent twice; two
copies of a request in flight at once share one result.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.protocol.errors import InvalidIdentifier
from homeserver.protocol.events import content_of
from homeserver.protocol.identifiers import RoomAlias
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.indexing import Written
from homeserver.rooms.membership import Membership
from homeserver.rooms.messages import require_room_id
from homeserver.rooms.pipeline import EventPipeline
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.redactions import redaction_allowed_by_power
from homeserver.rooms.relations import Relations
from storage.batch_view import BatchView
from storage.database import Database


class PendingTxn:
    __slots__ = ("device_id", "room", "scope", "txn_id", "used", "user_id")

    user_id: str
    device_id: str
    scope: str
    txn_id: str
    room: int
    used: bool

    def __init__(self, user_id: str, device_id: str, scope: str, txn_id: str, room: int, used: bool = False) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.scope = scope
        self.txn_id = txn_id
        self.room = room
        self.used = used


class EventSender:
    def __init__(
        self,
        db: Database,
        pipeline: EventPipeline,
        queries: RoomQueries,
        relations: Relations,
        membership: Membership,
        directory: RoomDirectory,
    ) -> None:
        self.db = db
        self.pipeline = pipeline
        self.queries = queries
        self.relations = relations
        self.membership = membership
        self.directory = directory
        self._txn: contextvars.ContextVar[PendingTxn | None] = contextvars.ContextVar("room_txn", default=None)
        self._in_flight: dict[tuple[str, str, str, str], asyncio.Future[str]] = {}

    # -- transaction ids -------------------------------------------------------------------------

    def record_txn(self, view: BatchView, w: Written) -> None:
        """Write hook: tie the event a request is sending to its transaction id, in the event's batch."""
        txn = self._txn.get()
        if txn is None or txn.used or txn.room != w.room or w.sender != txn.user_id:
            return
        txn.used = True
        self.db.room_extras.put_txn(view, txn.user_id, txn.device_id, txn.scope, txn.txn_id, w.short, w.event_id)

    async def _once(self, user_id: str, device_id: str, scope: str, txn_id: str, room: int, send: Any) -> str:
        existing = self.db.room_extras.txn_event(user_id, device_id, scope, txn_id)
        if existing is not None:
            return existing
        key = (user_id, device_id, scope, txn_id)
        running = self._in_flight.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        token = self._txn.set(PendingTxn(user_id, device_id, scope, txn_id, room))
        try:
            event_id: str = await send()
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved: nobody may be waiting
            raise
        else:
            future.set_result(event_id)
            return event_id
        finally:
            self._txn.reset(token)
            self._in_flight.pop(key, None)

    # -- sending ---------------------------------------------------------------------------------

    def _room(self, room_id: str) -> int:
        require_room_id(room_id)
        room = self.queries.known_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        return room

    async def send_message(
        self, user_id: str, device_id: str, room_id: str, event_type: str, content: dict[str, Any], txn_id: str
    ) -> str:
        room = self._room(room_id)
        if not event_type:
            raise MatrixError(400, "M_INVALID_PARAM", "the event type may not be empty")
        if event_type == "m.room.redaction":
            # spec: PUT /send — redactions may be sent here in every room version
            target = content.get("redacts")
            if not isinstance(target, str):
                raise MatrixError(400, "M_BAD_JSON", "an m.room.redaction needs content.redacts (an event id)")
            rest = {k: v for k, v in content.items() if k != "redacts"}
            return await self._redact(
                user_id, device_id, room_id, room, target, rest, txn_id, f"send {room_id} {event_type}"
            )
        self.relations.check_new_relation(room, user_id, event_type, content)

        async def send() -> str:
            return (await self.pipeline.send(room_id, user_id, event_type, content)).event_id

        return await self._once(user_id, device_id, f"send {room_id} {event_type}", txn_id, room, send)

    async def send_state(
        self, user_id: str, room_id: str, event_type: str, state_key: str, content: dict[str, Any], *, is_guest: bool
    ) -> str:
        room = self._room(room_id)
        if not event_type:
            raise MatrixError(400, "M_INVALID_PARAM", "the event type may not be empty")
        if event_type == "m.room.member":
            return await self.membership.set_member_state(user_id, room_id, state_key, content, is_guest=is_guest)
        if event_type == "m.room.canonical_alias" and state_key == "":
            self._check_canonical_alias(room, room_id, content)
        return (await self.pipeline.send(room_id, user_id, event_type, content, state_key)).event_id

    def _check_canonical_alias(self, room: int, room_id: str, content: dict[str, Any]) -> None:
        """spec: PUT /state — new aliases in m.room.canonical_alias must be valid (M_INVALID_PARAM) and
        point to the room (M_BAD_ALIAS). Aliases already in the state are not checked again."""
        old_content = content_of(self.queries.current_state_event(room, "m.room.canonical_alias"))
        old_alt = old_content.get("alt_aliases")
        old = {old_content.get("alias"), *(old_alt if isinstance(old_alt, list) else [])}
        new: list[Any] = []
        if "alias" in content and content["alias"] is not None:
            new.append(content["alias"])
        alt = content.get("alt_aliases")
        if alt is not None:
            if not isinstance(alt, list):
                raise MatrixError(400, "M_INVALID_PARAM", "alt_aliases must be a list of room aliases")
            new.extend(alt)
        for alias in new:
            if isinstance(alias, str) and alias in old:
                continue
            if not isinstance(alias, str):
                raise MatrixError(400, "M_INVALID_PARAM", "aliases must be strings")
            try:
                parsed = RoomAlias.parse(alias)
            except InvalidIdentifier as e:
                raise MatrixError(400, "M_INVALID_PARAM", str(e)) from None
            if not self.queries.is_local(str(parsed)):
                continue  # another server's alias: checking it needs federation
            entry = self.db.room_directory.alias(alias)
            if entry is None or entry.get("room_id") != room_id:
                raise MatrixError(400, "M_BAD_ALIAS", f"{alias} does not point to this room")

    # -- redactions ------------------------------------------------------------------------------

    async def redact(
        self, user_id: str, device_id: str, room_id: str, target: str, reason: Any, txn_id: str, *, is_admin: bool
    ) -> str:
        room = self._room(room_id)
        content: dict[str, Any] = {}
        if reason is not None:
            if not isinstance(reason, str):
                raise MatrixError(400, "M_BAD_JSON", "reason must be a string")
            content["reason"] = reason
        scope = f"redact {room_id} {target}"
        return await self._redact(user_id, device_id, room_id, room, target, content, txn_id, scope, is_admin=is_admin)

    async def _redact(
        self,
        user_id: str,
        device_id: str,
        room_id: str,
        room: int,
        target: str,
        content: dict[str, Any],
        txn_id: str,
        scope: str,
        *,
        is_admin: bool = False,
    ) -> str:
        short = self.db.ids.event(target) if target.startswith("$") else None
        meta = self.db.events.get_meta(short) if short is not None else None
        if short is None or meta is None or meta.room != room or meta.rejected:
            raise not_found(f"Event {target} not found in this room")
        target_event = self.db.events.get_json(short) or {}
        sender = target_event.get("sender")
        if sender != user_id:
            # spec: PUT /redact — others' events need the `redact` level; admins may redact local users
            local_target = isinstance(sender, str) and self.queries.is_local(sender)
            rv = self.queries.room_version(room)
            state = int((self.db.rooms.info(room) or {}).get("state", 0))
            if not (is_admin and local_target) and not redaction_allowed_by_power(self.db, rv, state, user_id):
                raise forbidden("You may not redact other users' events in this room")

        async def send() -> str:
            persisted = await self.pipeline.send(room_id, user_id, "m.room.redaction", content, redacts=target)
            return persisted.event_id

        return await self._once(user_id, device_id, scope, txn_id, room, send)
