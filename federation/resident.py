"""The resident server's side of membership over federation: other servers' users joining, leaving
and knocking on rooms this server is in.

spec: server-server-api "Joining rooms" (`make_join`, `send_join` v2: the full state, never
`members_omitted`), "Restricted rooms" (we name one of our members who may invite as the join's
authoriser and sign the join), "Leaving rooms (rejecting invites)", "Knocking upon a room". The event a server
sends back must be the membership it asked for, of one of its own users, with the event id it
names; it goes through the one pipeline like any PDU, and is then passed on to the room's other
servers (we are the only one that has it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.protocol.errors import ProtocolError
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.room_versions import RoomVersion
from homeserver.rooms.federation_reads import FederationReads, NotInRoom
from homeserver.rooms.pipeline import EventPipeline, EventRefused, KeyLookup, MissingEventsError, PersistedEvent
from homeserver.rooms.stripped_state import stripped_state

Forward = Callable[[PersistedEvent, Iterable[str]], object]  # (event, servers not to send it to)


class Resident:
    def __init__(
        self, server_name: str, pipeline: EventPipeline, reads: FederationReads, keys: KeyLookup, forward: Forward
    ) -> None:
        self.server_name = server_name
        self.pipeline = pipeline
        self.reads = reads
        self.keys = keys
        self.forward = forward

    def make(self, origin: str, kind: str, room_id: str, user_id: str, versions: list[str] | None) -> dict[str, Any]:
        """`make_join` / `make_leave` / `make_knock`: the template and the room version."""
        _check_user_of(origin, user_id)
        try:
            room, rv = self.reads.room_version(room_id)
        except NotInRoom:
            raise not_found(f"this server does not know room {room_id}") from None
        if not self.reads.server_in_room(room, self.server_name):
            raise not_found(f"this server is not in room {room_id}")
        if versions is not None and rv.identifier not in versions:
            # spec: make_join — 400 M_INCOMPATIBLE_ROOM_VERSION with the room's version
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"the room is version {rv.identifier}, which the joining server does not support",
                room_version=rv.identifier,
            )
        if kind == "knock" and not rv.knock_join_rule:
            raise MatrixError(
                400, "M_INCOMPATIBLE_ROOM_VERSION", "this room version has no knocking", room_version=rv.identifier
            )
        extra: dict[str, Any] = {}
        if kind == "join":
            # spec: "Restricted rooms" — our member who lets them in, or the error that says why not
            via = self.reads.join_authoriser(room, user_id)
            if via is not None:
                extra["join_authorised_via_users_server"] = via
        template, _ = self.pipeline.membership_template(room_id, user_id, kind, extra)
        return {"event": template, "room_version": rv.identifier}

    async def send(self, origin: str, kind: str, room_id: str, event_id: str, pdu: Any) -> PersistedEvent:
        """`send_join` / `send_leave` / `send_knock`: accept the signed membership event."""
        if not isinstance(pdu, dict):
            raise MatrixError(400, "M_BAD_JSON", "the body must be the event")
        try:
            room, rv = self.reads.room_version(room_id)
        except NotInRoom:
            raise not_found(f"this server does not know room {room_id}") from None
        content = pdu.get("content")
        state_key = pdu.get("state_key")
        if (
            pdu.get("type") != "m.room.member"
            or pdu.get("room_id") != room_id
            or not isinstance(content, dict)
            or content.get("membership") != kind
            or not isinstance(state_key, str)
            or pdu.get("sender") != state_key
        ):
            raise MatrixError(400, "M_BAD_JSON", f"the event is not a {kind} of its sender in {room_id}")
        _check_user_of(origin, state_key)
        try:
            if compute_event_id(pdu, rv) != event_id:
                raise MatrixError(400, "M_BAD_JSON", "the event id does not match the event")
        except ProtocolError as e:
            raise MatrixError(400, "M_BAD_JSON", f"not a valid event: {e}") from None
        if kind == "join":
            pdu = self._authorised(room, rv, state_key, content, pdu)
        try:
            persisted = await self.pipeline.receive(pdu, self.keys)
        except EventRefused as e:
            raise MatrixError(400, "M_BAD_JSON", f"the event was refused: {e}") from None
        except MissingEventsError as e:
            raise MatrixError(400, "M_BAD_JSON", f"the event refers to events this server lacks: {e}") from None
        if persisted.rejected is not None:
            raise forbidden(f"the room does not allow this {kind}: {persisted.rejected}")
        if persisted.soft_failed:
            raise forbidden(f"the room's current state does not allow this {kind}")
        self.forward(persisted, (origin,))
        return persisted

    def _authorised(
        self, room: int, rv: RoomVersion, user_id: str, content: dict[str, Any], pdu: dict[str, Any]
    ) -> dict[str, Any]:
        """A restricted join naming one of our users as its authoriser, signed by us too, once the
        joining user is seen to meet the room's conditions again (a server may skip make_join).
        spec: server-server-api "Joining rooms" and "Restricted rooms"; rooms/v8 auth rule 4.2.1.
        A join naming another server's user must carry that server's signature already; the auth
        rules decide the rest."""
        via = content.get("join_authorised_via_users_server")
        if not rv.restricted_join_rule or not isinstance(via, str) or not via.endswith(":" + self.server_name):
            return pdu
        self.reads.join_authoriser(room, user_id)  # raises when the user may not join through us
        return self.pipeline.countersign(pdu, rv)

    async def send_join(self, origin: str, room_id: str, event_id: str, pdu: Any) -> dict[str, Any]:
        persisted = await self.send(origin, "join", room_id, event_id, pdu)
        state, auth_chain = self.reads.join_answer(room_id, persisted.event_id)
        room, _ = self.reads.room_version(room_id)
        return {
            "origin": self.server_name,
            "state": state,
            "auth_chain": auth_chain,
            "event": persisted.event,
            "members_omitted": False,
            "servers_in_room": self.reads.servers_in_room(room),
        }

    async def send_knock(self, origin: str, room_id: str, event_id: str, pdu: Any) -> dict[str, Any]:
        persisted = await self.send(origin, "knock", room_id, event_id, pdu)
        state, _ = self.reads.join_answer(room_id, persisted.event_id)
        wanted = [stripped_state(e) for e in state if _shown_to_knockers(e)]
        return {"knock_room_state": wanted}


def _shown_to_knockers(event: dict[str, Any]) -> bool:
    # spec: client-server "Stripped state": the events a server should include for invites and knocks
    return event.get("type") in (
        "m.room.create",
        "m.room.name",
        "m.room.avatar",
        "m.room.topic",
        "m.room.join_rules",
        "m.room.canonical_alias",
        "m.room.encryption",
    )


def _check_user_of(origin: str, user_id: str) -> None:
    """The event must be about a user of the server that asks (spec: make_join, send_join...)."""
    _, colon, server = user_id.partition(":")
    if not colon or server != origin:
        raise forbidden(f"{user_id} is not a user of {origin}")
