"""Our users' memberships in rooms that live on other servers: joins, leaves (also to reject an
invite) and knocks, through a resident server.

spec: server-server-api "Joining rooms" (`make_join`, `send_join` v2), "Leaving rooms (rejecting
invites)" (`make_leave`, `send_leave` v2), "Knocking upon a room" (`make_knock`, `send_knock`). The
resident server's template is checked and signed by the pipeline; a join is accepted with the state
and auth chain the resident answers, every event of which passes the receipt checks. Candidate
servers are tried in order; the first that completes wins. For restricted rooms (v8+) the resident
counter-signs the join and answers it as `event`, which is the one we keep.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple, TypeVar

from federation.client import FederationError, Unreachable, path_of
from homeserver.errors import MatrixError, forbidden
from homeserver.protocol.errors import ProtocolError
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.event_signing import verify_event_signature
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS, EventFormat, RoomVersion, get_room_version
from homeserver.protocol.signing import signature_key_ids
from homeserver.rooms.pipeline import EventPipeline, EventRefused, KeyLookup, PersistedEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

SEND_JOIN_MAX_BYTES = 128 * 1024 * 1024  # the whole state of a very large room
SEND_JOIN_TIMEOUT_S = 600.0
RETRY_ELSEWHERE = frozenset({"M_UNABLE_TO_AUTHORISE_JOIN", "M_UNABLE_TO_GRANT_JOIN"})


class _Knocked(NamedTuple):
    event: dict[str, Any]
    event_id: str
    rv: RoomVersion
    stripped: list[dict[str, Any]]


class RemoteMembership:
    def __init__(self, server_name: str, pipeline: EventPipeline, client: Any, keys: KeyLookup) -> None:
        self.server_name = server_name
        self.pipeline = pipeline
        self.client = client
        self.keys = keys

    async def join(
        self, room_id: str, user_id: str, servers: Iterable[str], content: dict[str, Any] | None = None
    ) -> PersistedEvent:
        """Join `user_id` to a room this server is not in, through the first of `servers` that lets it."""
        return await self._through(servers, lambda server: self._join_via(server, room_id, user_id, content))

    async def leave(self, room_id: str, user_id: str, servers: Iterable[str]) -> dict[str, Any]:
        """Leave (or reject an invite to) a room this server is not in; returns the leave event."""
        event, _, _ = await self._through(
            servers, lambda server: self._send_membership(server, room_id, user_id, "leave")
        )
        return event

    async def leave_and_record(self, room_id: str, user_id: str, servers: Iterable[str]) -> PersistedEvent:
        """Leave a room this server is not in (reject an invite) through a resident, and keep the
        leave here, so that the user's membership is "leave" and their /sync shows it."""
        event, event_id, rv = await self._through(
            servers, lambda server: self._send_membership(server, room_id, user_id, "leave")
        )
        return await self.pipeline.record_remote_leave(event, rv, event_id)

    async def leave_locally(self, invite: dict[str, Any], room_version: str) -> PersistedEvent:
        """Mark an invite refused here only, when no server of the room can be reached (spec:
        client-server-api POST /leave — the invite must not stay): a leave on top of the invite,
        signed by us and kept as an outlier; it is sent nowhere."""
        rv = get_room_version(room_version)
        room_id, user_id = invite["room_id"], invite["state_key"]
        invite_id = compute_event_id(invite, rv)
        if rv.event_format is EventFormat.V1:
            ref: Any = [invite_id, invite.get("hashes", {})]
        else:
            ref = invite_id
        auth = invite.get("auth_events")
        depth = invite.get("depth")
        template = {
            "type": "m.room.member",
            "room_id": room_id,
            "sender": user_id,
            "state_key": user_id,
            "content": {"membership": "leave"},
            "prev_events": [ref],
            "auth_events": [*(auth if isinstance(auth, list) else []), ref],
            "depth": (depth if isinstance(depth, int) else 0) + 1,
        }
        event, event_id = self.pipeline.sign_membership_template(template, rv, room_id, user_id, "leave")
        return await self.pipeline.record_remote_leave(event, rv, event_id)

    async def knock(self, room_id: str, user_id: str, servers: Iterable[str]) -> tuple[dict[str, Any], Any]:
        """Knock on a room; returns the knock event and the stripped state the resident answered."""
        knocked = await self._through(servers, lambda server: self._knock_via(server, room_id, user_id))
        return knocked.event, knocked.stripped

    async def knock_and_record(
        self, room_id: str, user_id: str, servers: Iterable[str], content: dict[str, Any] | None = None
    ) -> PersistedEvent:
        """Knock on a room this server is not in through a resident, and keep the knock here with the
        stripped state the resident answered, so the user's /sync shows it under `rooms.knock`."""
        knocked = await self._through(servers, lambda server: self._knock_via(server, room_id, user_id, content))
        return await self.pipeline.record_remote_knock(knocked.event, knocked.rv, knocked.event_id, knocked.stripped)

    async def invite(
        self, room_id: str, inviter: str, invitee: str, content: dict[str, Any], invite_state: list[dict[str, Any]]
    ) -> PersistedEvent:
        """Invite a user of another server (spec: "Inviting to a room"): the invite is built and
        authorised here, signed by the invitee's server (`PUT /v2/invite`), then written into the
        room like any event and sent to the room's servers."""
        event, event_id, rv = self.pipeline.prepare_local(
            room_id, inviter, "m.room.member", {**content, "membership": "invite"}, invitee
        )
        server = invitee.split(":", 1)[1]
        try:
            answer = await self.client.request(
                server,
                "PUT",
                path_of("_matrix", "federation", "v2", "invite", room_id, event_id),
                content={"event": event, "room_version": rv.identifier, "invite_room_state": invite_state},
            )
        except FederationError as e:
            raise MatrixError(
                e.status if e.status in (400, 403, 404) else 502,
                e.errcode or "M_UNKNOWN",
                f"{server} refused the invite: {e.message}",
            ) from None
        except Unreachable as e:
            raise MatrixError(502, "M_UNKNOWN", f"{server} could not be reached: {e}") from None
        signed = answer.get("event") if isinstance(answer, dict) else None
        if not isinstance(signed, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered the invite without the event")
        try:
            if compute_event_id(signed, rv) != event_id:
                raise EventRefused("the invitee's server changed the event")
            keys = await self.keys(server, signature_key_ids(signed, server), None)
            verify_event_signature(signed, rv, server, keys)
        except (ProtocolError, EventRefused) as e:
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered the invite with a bad event: {e}") from None
        persisted = await self.pipeline.receive(signed, self.keys)
        if persisted.rejected is not None:
            raise forbidden(f"the invite is not allowed: {persisted.rejected}")
        return persisted

    async def _through(self, servers: Iterable[str], attempt: Callable[[str], Awaitable[T]]) -> T:
        candidates = [s for s in dict.fromkeys(servers) if s != self.server_name]
        if not candidates:
            raise MatrixError(404, "M_NOT_FOUND", "no server to reach the room through: give one with `via`")
        refusal: MatrixError | None = None
        last: str = ""
        for server in candidates:
            try:
                return await attempt(server)
            except FederationError as e:
                last = f"{server}: {e.status} {e.errcode or ''} {e.message}".strip()
                if e.status in (403, 404) and refusal is None:
                    refusal = MatrixError(e.status, e.errcode or "M_FORBIDDEN", f"{server} refused: {e.message}")
                if e.errcode == "M_INCOMPATIBLE_ROOM_VERSION":
                    refusal = MatrixError(400, "M_INCOMPATIBLE_ROOM_VERSION", e.message)
                if e.errcode in RETRY_ELSEWHERE and (refusal is None or refusal.status == 404):
                    # spec: "Restricted rooms" — this resident cannot let the user in; another may.
                    # Passed on to the client when none does (spec: send_join 400).
                    refusal = MatrixError(400, e.errcode, f"{server}: {e.message}")
            except (Unreachable, EventRefused, ProtocolError) as e:
                last = f"{server}: {e}"
            log.info("membership through %s failed: %s", server, last)
        if refusal is not None:
            raise refusal
        raise MatrixError(502, "M_UNKNOWN", f"no server could be reached for the room ({last})")

    async def _make(self, server: str, kind: str, room_id: str, user_id: str) -> tuple[dict[str, Any], str]:
        query = {"ver": list(KNOWN_ROOM_VERSIONS)} if kind in ("join", "knock") else None
        answer = await self.client.request(
            server, "GET", path_of("_matrix", "federation", "v1", f"make_{kind}", room_id, user_id, query=query)
        )
        if not isinstance(answer, dict) or not isinstance(answer.get("event"), dict):
            raise EventRefused(f"{server} answered make_{kind} without an event")
        version = answer.get("room_version", "1")
        if version not in KNOWN_ROOM_VERSIONS:
            raise EventRefused(f"{server} offered room version {version!r}, which this server does not know")
        return answer["event"], version

    async def _join_via(
        self, server: str, room_id: str, user_id: str, content: dict[str, Any] | None
    ) -> PersistedEvent:
        template, version = await self._make(server, "join", room_id, user_id)
        rv = get_room_version(version)
        if content:  # displayname and avatar_url, as a local join would carry them
            template = {**template, "content": {**content, **template["content"], "membership": "join"}}
        event, event_id = self.pipeline.sign_membership_template(template, rv, room_id, user_id, "join")
        answer = await self.client.request(
            server,
            "PUT",
            path_of("_matrix", "federation", "v2", "send_join", room_id, event_id, query={"omit_members": "false"}),
            content=event,
            timeout=SEND_JOIN_TIMEOUT_S,
            max_bytes=SEND_JOIN_MAX_BYTES,
        )
        if not isinstance(answer, dict):
            raise EventRefused(f"{server} answered send_join without an object")
        state, chain = answer.get("state"), answer.get("auth_chain")
        if not isinstance(state, list) or not isinstance(chain, list):
            raise EventRefused(f"{server} answered send_join without state or auth_chain")
        if answer.get("members_omitted") is True:
            raise EventRefused(f"{server} left the members out of the room state (partial joins are not supported)")
        # spec: send_join v2 `event` — a restricted join comes back with the resident's signature,
        # which the auth rules need; it must be our event still (the id covers all but signatures)
        countersigned = answer.get("event")
        joined = event
        if isinstance(countersigned, dict):
            try:
                same = compute_event_id(countersigned, rv) == event_id
            except ProtocolError:
                same = False
            if not same:
                raise EventRefused(f"{server} answered send_join with another event than our join")
            joined = countersigned
        return await self.pipeline.receive_join(room_id, version, joined, state, chain, self.keys)

    async def _send_membership(
        self, server: str, room_id: str, user_id: str, kind: str
    ) -> tuple[dict[str, Any], str, RoomVersion]:
        template, version = await self._make(server, kind, room_id, user_id)
        rv = get_room_version(version)
        event, event_id = self.pipeline.sign_membership_template(template, rv, room_id, user_id, kind)
        await self.client.request(
            server, "PUT", path_of("_matrix", "federation", "v2", f"send_{kind}", room_id, event_id), content=event
        )
        return event, event_id, rv

    async def _knock_via(
        self, server: str, room_id: str, user_id: str, content: dict[str, Any] | None = None
    ) -> _Knocked:
        template, version = await self._make(server, "knock", room_id, user_id)
        rv = get_room_version(version)
        if not rv.knock_join_rule:
            raise EventRefused(f"room version {version} has no knocking")
        if content:  # the reason and the profile, as a local knock carries them
            template = {**template, "content": {**content, **template["content"], "membership": "knock"}}
        event, event_id = self.pipeline.sign_membership_template(template, rv, room_id, user_id, "knock")
        answer = await self.client.request(
            server, "PUT", path_of("_matrix", "federation", "v1", "send_knock", room_id, event_id), content=event
        )
        stripped = answer.get("knock_room_state") if isinstance(answer, dict) else None
        return _Knocked(
            event, event_id, rv, [e for e in stripped if isinstance(e, dict)] if isinstance(stripped, list) else []
        )
