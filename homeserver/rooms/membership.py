"""Membership changes asked for by local users: join, knock, invite, leave, kick, ban, unban, forget.

spec: client-server-api "Room membership" and the membership endpoints. Each change is an
`m.room.member` event through the pipeline, so the auth rules decide (403 when they refuse); this
module adds what the auth rules do not know: guest access, restricted-room authorisers, invite
blocking, the profile in join, knock and invite events (as Synapse: not in kicks, bans or leaves),
and the spec's preconditions (who can be kicked, unbanned...).

Rooms this server is not in are joined through a resident server (spec: server-server-api
"Joining rooms"): the servers named by `via`/`server_name`, the alias's directory answer, the
inviting server, the room id's domain (rooms v1-11; v12 ids have none, so joining by id needs
`via`). Users of other servers are invited through their server ("Inviting to a room"); an invite
to a room this server is not in is refused through the inviting server, or only here when no
server of the room answers. All of it goes through `RemoteRooms`, which federation gives; without
federation these get 404 / 403 with a message that says so.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.locks import KeyedLocks
from homeserver.protocol.errors import InvalidIdentifier
from homeserver.protocol.events import content_of
from homeserver.protocol.identifiers import UserID
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.messages import require_room_id
from homeserver.rooms.pipeline import EventPipeline, PersistedEvent
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.restricted import UNABLE_TO_GRANT_JOIN, join_authoriser
from homeserver.rooms.stripped_state import room_stripped_state
from storage.engine import Store
from storage.room_extras import RoomExtrasStore

log = logging.getLogger(__name__)

ProfileLookup = Callable[[str], dict[str, Any] | None]
# another server's user -> displayname / avatar_url ({} when unknown or unreachable)
RemoteProfileLookup = Callable[[str], Awaitable[dict[str, Any]]]
# spec: modules/invite_permission.md (v1.18)
INVITE_PERMISSION_CONFIG = "m.invite_permission_config"


def blocks_invites(config: dict[str, Any] | None) -> bool:
    """spec: invite permission — `default_action: block` in m.invite_permission_config refuses
    every invite; without `default_action` invites are allowed again."""
    return isinstance(config, dict) and config.get("default_action") == "block"


class RemoteRooms(Protocol):
    """Our users' memberships in rooms that live on other servers (federation/membership.py)."""

    async def join(
        self, room_id: str, user_id: str, servers: Iterable[str], content: dict[str, Any] | None = None
    ) -> PersistedEvent: ...

    async def invite(
        self, room_id: str, inviter: str, invitee: str, content: dict[str, Any], invite_state: list[dict[str, Any]]
    ) -> PersistedEvent: ...

    async def leave_and_record(self, room_id: str, user_id: str, servers: Iterable[str]) -> PersistedEvent: ...

    async def knock_and_record(
        self, room_id: str, user_id: str, servers: Iterable[str], content: dict[str, Any] | None = None
    ) -> PersistedEvent: ...

    async def leave_locally(self, invite: dict[str, Any], room_version: str) -> PersistedEvent: ...


# (user id, account data type) -> the user's global account data of that type, if any
AccountDataLookup = Callable[[str, str], dict[str, Any] | None]


class Membership:
    def __init__(
        self,
        store: Store,
        room_extras: RoomExtrasStore,
        account_data: AccountDataLookup,
        pipeline: EventPipeline,
        queries: RoomQueries,
        directory: RoomDirectory,
        profile_lookup: ProfileLookup,
        remote: RemoteRooms | None = None,
        remote_profile_lookup: RemoteProfileLookup | None = None,
    ) -> None:
        self.store = store
        self.room_extras = room_extras
        self.account_data = account_data  # the account data service's reader (invite blocking)
        self.pipeline = pipeline
        self.queries = queries
        self.directory = directory
        self.profile_lookup = profile_lookup  # the profile service's: displayname / avatar_url of a user
        self.remote = remote  # federation's; None when federation is off
        self.remote_profile_lookup = remote_profile_lookup
        self._remote_joins: KeyedLocks[str] = KeyedLocks()  # room id -> held while joining it remotely
        # awaited with (user id, room id) once a local user has joined a room they were not in
        self.join_listeners: list[Callable[[str, str], Awaitable[None]]] = []

    # -- helpers ---------------------------------------------------------------------------------

    def invites_blocked(self, user_id: str) -> bool:
        """spec: invite permission — whether a local user refuses invites."""
        if not self.queries.is_local(user_id):
            return False
        return blocks_invites(self.account_data(user_id, INVITE_PERMISSION_CONFIG))

    def require_invitable(self, user_id: str) -> None:
        if self.invites_blocked(user_id):
            # spec: invite permission "Server behaviour" — 403 M_INVITE_BLOCKED
            raise MatrixError(403, "M_INVITE_BLOCKED", f"{user_id} does not accept invites")

    def profile(self, user_id: str) -> dict[str, str]:
        """displayname / avatar_url for the user's member events (spec: m.room.member content)."""
        if not self.queries.is_local(user_id):
            return {}
        found = self.profile_lookup(user_id) or {}
        return {k: v for k in ("displayname", "avatar_url") if isinstance(v := found.get(k), str) and v}

    def check_user_id(self, user_id: Any, what: str = "user_id") -> str:
        if not isinstance(user_id, str):
            raise MatrixError(400, "M_BAD_JSON", f"{what} must be a string")
        try:
            UserID.parse(user_id, historical=True)
        except InvalidIdentifier as e:
            raise MatrixError(400, "M_INVALID_PARAM", f"{what}: {e}") from None
        return user_id

    def require_local_target(self, user_id: str) -> None:
        if not self.queries.is_local(user_id):
            raise forbidden(f"{user_id} is on another server; inviting them needs federation, which is off here")

    def _remote(self, what: str) -> RemoteRooms:
        if self.remote is None:
            raise not_found(f"{what} needs federation, which is off on this server")
        return self.remote

    def resident(self, room: int | None) -> bool:
        """Whether this server takes part in the room: it holds its state and one of its users is
        joined, or nobody anywhere is (a room of ours that everyone left is still ours to join)."""
        if room is None:
            return False
        servers = self.queries.servers_in_room(room)
        return not servers or self.queries.server_name in servers

    def room(self, room_id: str) -> int:
        require_room_id(room_id)
        room = self.queries.known_room(room_id)
        if room is None:
            why = "" if self.remote is not None else "; joining rooms of other servers needs federation, which is off"
            raise not_found(f"This server does not know room {room_id}{why}")
        return room

    def resolve(self, room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("#"):
            return self.directory.room_id_of(room_id_or_alias)
        require_room_id(room_id_or_alias)
        return room_id_or_alias

    async def resolve_with_servers(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """The room id, and the servers its alias names to join it through (none for a room id)."""
        if room_id_or_alias.startswith("#"):
            found = await self.directory.lookup(room_id_or_alias)
            return str(found["room_id"]), [s for s in found["servers"] if isinstance(s, str)]
        require_room_id(room_id_or_alias)
        return room_id_or_alias, []

    def _join_servers(self, user_id: str, room_id: str, via: Sequence[str], alias_servers: Sequence[str]) -> list[str]:
        """Where to ask to join a room this server is not in, best first."""
        servers = [*via, *alias_servers]
        room = self.queries.room(room_id)
        ur = self.queries.membership(user_id, room) if room is not None else None
        if ur is not None and ur.membership in ("invite", "knock"):
            invite = self.queries.event(ur.event)
            sender = invite.sender if invite is not None else None
            if isinstance(sender, str) and ":" in sender:
                servers.append(sender.split(":", 1)[1])  # the inviting server is in the room
            for e in self.queries.invite_state(user_id, room) or [] if room is not None else []:
                if isinstance(e, dict) and isinstance(e.get("sender"), str) and ":" in e["sender"]:
                    servers.append(e["sender"].split(":", 1)[1])
        if room is not None:  # a room we were in: its servers when we last knew them
            servers.extend(self.queries.servers_in_room(room))
        _, colon, domain = room_id.partition(":")
        if colon:  # rooms v1-11: the server that made the room (spec: appendices "Room IDs")
            servers.append(domain)
        return list(dict.fromkeys(s for s in servers if s))

    async def _send(self, room_id: str, sender: str, target: str, content: dict[str, Any]) -> str:
        persisted = await self.pipeline.send(room_id, sender, "m.room.member", content, target)
        return persisted.event_id

    @staticmethod
    def _with_reason(content: dict[str, Any], reason: str | None) -> dict[str, Any]:
        if reason is not None:
            content["reason"] = reason
        return content

    def _require_guest_access(self, room: int) -> None:
        # spec: guest access — guests may join only rooms whose guest_access is can_join
        guest_access = self.queries.current_state_event(room, "m.room.guest_access")
        if content_of(guest_access).get("guest_access") != "can_join":
            raise MatrixError(403, "M_FORBIDDEN", "Guest access is not allowed in this room")

    # -- joining ---------------------------------------------------------------------------------

    async def join(
        self,
        user_id: str,
        room_id_or_alias: str,
        *,
        reason: str | None = None,
        is_guest: bool = False,
        via: Sequence[str] = (),
    ) -> str:
        room_id, joined = await self._join(user_id, room_id_or_alias, reason=reason, is_guest=is_guest, via=via)
        if joined:
            for listener in self.join_listeners:
                await listener(user_id, room_id)
        return room_id

    async def _join(
        self, user_id: str, room_id_or_alias: str, *, reason: str | None, is_guest: bool, via: Sequence[str]
    ) -> tuple[str, bool]:
        """The room id, and whether the user was not joined before."""
        room_id, alias_servers = await self.resolve_with_servers(room_id_or_alias)
        if self.remote is not None and not self.resident(self.queries.known_room(room_id)):
            # one join over federation a room at a time: a second user's waits, then joins here
            async with self._remote_joins(room_id):
                if not self.resident(self.queries.known_room(room_id)):
                    return await self._join_remote(user_id, room_id, via, alias_servers, reason, is_guest), True
        room = self.room(room_id)
        current = self.queries.current_membership(user_id, room)
        if is_guest and current != "join":
            self._require_guest_access(room)
        profile = self.profile(user_id)
        if current == "join":
            ur = self.queries.membership(user_id, room)
            existing = content_of(self.queries.event(ur.event)) if ur is not None else {}
            if reason is None and all(existing.get(k) == profile.get(k) for k in ("displayname", "avatar_url")):
                return room_id, False  # already joined as this profile: nothing to change
        content = self._with_reason({"membership": "join", **profile}, reason)
        if current not in ("join", "invite"):
            try:
                authoriser = join_authoriser(self.queries, room, user_id)
            except MatrixError as e:
                others = [s for s in self.queries.servers_in_room(room) if s != self.queries.server_name]
                if e.errcode != UNABLE_TO_GRANT_JOIN or self.remote is None or not others:
                    raise _as_client_error(e) from None
                # spec: server-server "Restricted rooms" — none of our members may let them in: a
                # resident server of the room's others may (make_join / send_join through it)
                async with self._remote_joins(room_id):
                    return await self._join_remote(user_id, room_id, via, alias_servers, reason, is_guest), True
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
        await self._send(room_id, user_id, user_id, content)
        return room_id, current != "join"

    async def _join_remote(
        self,
        user_id: str,
        room_id: str,
        via: Sequence[str],
        alias_servers: Sequence[str],
        reason: str | None,
        is_guest: bool,
    ) -> str:
        remote = self._remote(f"Joining room {room_id}")
        if is_guest:
            raise forbidden("Guests cannot join rooms of other servers")
        servers = [s for s in self._join_servers(user_id, room_id, via, alias_servers) if s != self.queries.server_name]
        if not servers:
            # spec: rooms v12 ids carry no server name; a server to ask must come from the client
            raise MatrixError(
                404, "M_NOT_FOUND", f"No server to join {room_id} through: give one with `via` (or `server_name`)"
            )
        try:
            await remote.join(room_id, user_id, servers, self._with_reason(self.profile(user_id), reason))
        except MatrixError as e:
            if e.status != 502:
                raise
            # spec: POST /join documents no 502; a room no server lets us reach is not found
            raise not_found(f"Could not join {room_id} over federation: {e.message}") from None
        return room_id

    def _restricted_authoriser(self, room: int, user_id: str) -> str | None:
        """For a restricted room the user may join through an allow condition, a local member who
        can invite (spec: "Restricted rooms"; rooms v8 auth rules `join_authorised_via_users_server`)."""
        try:
            return join_authoriser(self.queries, room, user_id)
        except MatrixError as e:
            raise _as_client_error(e) from None

    async def knock(
        self, user_id: str, room_id_or_alias: str, *, reason: str | None = None, via: Sequence[str] = ()
    ) -> str:
        room_id, alias_servers = await self.resolve_with_servers(room_id_or_alias)
        if self.remote is not None and not self.resident(self.queries.known_room(room_id)):
            # a room on another server: knock through a resident (spec: server-server "Knocking")
            seen = self.queries.room(room_id)
            current = self.queries.current_membership(user_id, seen) if seen is not None else None
            if current in ("join", "invite", "ban"):
                raise forbidden(f"You cannot knock on a room you are {'banned from' if current == 'ban' else 'in'}")
            content = self._with_reason({"membership": "knock", **self.profile(user_id)}, reason)
            servers = self._join_servers(user_id, room_id, via, alias_servers)
            try:
                await self.remote.knock_and_record(room_id, user_id, servers, content)
            except MatrixError as e:
                if e.status != 502:
                    raise
                # spec: POST /knock documents no 502; a room no server lets us reach is not found
                raise not_found(f"Could not knock on {room_id} over federation: {e.message}") from None
            return room_id
        room = self.room(room_id)
        current = self.queries.current_membership(user_id, room)
        # spec: "Users who are currently in the room, already invited, or banned cannot knock"
        if current in ("join", "invite", "ban"):
            raise forbidden(f"You cannot knock on a room you are {'banned from' if current == 'ban' else 'in'}")
        content = self._with_reason({"membership": "knock", **self.profile(user_id)}, reason)
        await self._send(room_id, user_id, user_id, content)
        return room_id

    # -- other users -----------------------------------------------------------------------------

    async def invite(
        self, sender: str, room_id: str, target: Any, *, reason: str | None = None, is_direct: bool = False
    ) -> None:
        target = self.check_user_id(target)
        room = self.room(room_id)
        if not self.queries.is_local(target):
            content = self._with_reason({"is_direct": True} if is_direct else {}, reason)
            await self._invite_remote(sender, room, room_id, target, content)
            return
        self.require_invitable(target)
        # the invitee's profile, as Synapse puts it in: clients show "Alice invited Bob" from it
        content = self._with_reason({"membership": "invite", **self.profile(target)}, reason)
        await self._send(room_id, sender, target, content)

    async def _invite_remote(self, sender: str, room: int, room_id: str, target: str, content: dict[str, Any]) -> str:
        """spec: server-server-api "Inviting to a room" — the invitee's server signs the invite
        first; it is shown the room's stripped state (client-server-api "Stripped state")."""
        if self.remote is None:
            self.require_local_target(target)
        remote = self._remote(f"Inviting {target}")
        if self.queries.current_membership(target, room) == "join":
            raise forbidden(f"{target} is already in the room")
        profile = await self.remote_profile_lookup(target) if self.remote_profile_lookup is not None else {}
        content = {**profile, **content, "membership": "invite"}

        def state(event_type: str, state_key: str) -> dict[str, Any] | None:
            found = self.queries.current_state_event(room, event_type, state_key)
            return dict(found.raw) if found is not None else None

        member = {"type": "m.room.member", "sender": sender, "state_key": target, "content": content}
        invite_state = room_stripped_state(state, member)[:-1]  # the invitee's server adds the invite
        try:
            persisted = await remote.invite(room_id, sender, target, content, invite_state)
        except MatrixError as e:
            if e.status != 502:
                raise
            # spec: POST /invite documents no 502: the invite is refused, the message says why
            raise forbidden(f"The invite of {target} was not delivered over federation: {e.message}") from None
        return persisted.event_id

    async def kick(self, sender: str, room_id: str, target: Any, *, reason: str | None = None) -> None:
        target = self.check_user_id(target)
        room = self.room(room_id)
        if self.queries.current_membership(target, room) not in ("join", "invite", "knock"):
            raise forbidden(f"{target} is not in the room")
        await self._send(room_id, sender, target, self._with_reason({"membership": "leave"}, reason))

    async def ban(self, sender: str, room_id: str, target: Any, *, reason: str | None = None) -> None:
        target = self.check_user_id(target)
        self.room(room_id)
        await self._send(room_id, sender, target, self._with_reason({"membership": "ban"}, reason))

    async def unban(self, sender: str, room_id: str, target: Any, *, reason: str | None = None) -> None:
        target = self.check_user_id(target)
        room = self.room(room_id)
        if self.queries.current_membership(target, room) != "ban":
            raise forbidden(f"{target} is not banned from the room")
        await self._send(room_id, sender, target, self._with_reason({"membership": "leave"}, reason))

    # -- leaving ---------------------------------------------------------------------------------

    async def leave(self, user_id: str, room_id: str, *, reason: str | None = None) -> None:
        require_room_id(room_id)
        known = self.queries.room(room_id)
        if (
            known is not None
            and not self.resident(self.queries.known_room(room_id))
            and self.queries.current_membership(user_id, known) in ("invite", "knock")
        ):
            await self._reject_remote(user_id, room_id, known)
            return
        room = self.room(room_id)
        current = self.queries.current_membership(user_id, room)
        if current == "leave":
            return  # already left: nothing to do
        if current == "ban":
            raise forbidden("You are banned from this room")
        if current is None:
            raise forbidden("You are not in this room")
        await self._send(room_id, user_id, user_id, self._with_reason({"membership": "leave"}, reason))

    async def _reject_remote(self, user_id: str, room_id: str, room: int) -> None:
        """Refuse an invite (or withdraw a knock) to a room this server is not in: through the
        inviting server (spec: server-server-api "Leaving rooms (rejecting invites)"), else, when no
        server of the room answers or lets us, here only — the invite must not stay (as Synapse's
        out-of-band leave)."""
        ur = self.queries.membership(user_id, room)
        invite = self.queries.event(ur.event) if ur is not None else None
        if invite is None:
            raise forbidden("You are not in this room")
        if self.remote is None:
            raise MatrixError(502, "M_UNKNOWN", "Refusing an invite of another server needs federation")
        servers = self._join_servers(user_id, room_id, (), ())
        try:
            await self.remote.leave_and_record(room_id, user_id, servers)
        except MatrixError as e:
            log.info("refusing the invite of %s to %s here only: %s", user_id, room_id, e.message)
            version = next(
                (
                    c.get("room_version", "1")
                    for e2 in self.queries.invite_state(user_id, room) or []
                    if e2.get("type") == "m.room.create" and isinstance(c := e2.get("content"), dict)
                ),
                "1",
            )
            await self.remote.leave_locally(dict(invite.raw), str(version))

    async def forget(self, user_id: str, room_id: str) -> None:
        require_room_id(room_id)
        # a refused invite of another server's room left a membership here but no room state
        room = self.queries.room(room_id)
        if room is None or self.queries.current_membership(user_id, room) is None:
            room = self.room(room_id)
        current = self.queries.current_membership(user_id, room)
        if current in ("join", "invite", "knock"):
            # spec: POST /forget — "If the user is currently joined to the room, they must leave it first"
            raise MatrixError(400, "M_UNKNOWN", f"You must leave the room before forgetting it (you are {current})")
        if current is None:
            return
        batch = self.store.batch()
        with batch:
            self.room_extras.set_forgotten(user_id, room, True, batch)
            await batch.commit()

    # -- PUT /state/m.room.member/{userId} -------------------------------------------------------

    async def set_member_state(
        self, sender: str, room_id: str, target: str, content: dict[str, Any], *, is_guest: bool = False
    ) -> str:
        """A member event written as state: the same rules as the membership endpoints where they add any."""
        self.check_user_id(target, "state_key")
        room = self.room(room_id)
        membership = content.get("membership")
        if membership == "invite" and not self.queries.is_local(target):
            return await self._invite_remote(sender, room, room_id, target, content)
        if membership == "invite":
            self.require_invitable(target)
        if membership in ("join", "knock", "invite"):
            # as the membership endpoints (and Synapse here): the target's profile unless the content sets it
            content = {**self.profile(target), **content}
        if membership == "join" and target == sender:
            current = self.queries.current_membership(sender, room)
            if is_guest and current != "join":
                self._require_guest_access(room)
            if "join_authorised_via_users_server" not in content and current not in ("join", "invite"):
                authoriser = self._restricted_authoriser(room, sender)
                if authoriser is not None:
                    content = {**content, "join_authorised_via_users_server": authoriser}
        return await self._send(room_id, sender, target, content)


def _as_client_error(e: MatrixError) -> MatrixError:
    """A refusal of a restricted join as a local user's join gets it: 403 (spec: POST /join)."""
    if e.errcode == UNABLE_TO_GRANT_JOIN:
        return forbidden("No member of this server may let you in to this restricted room")
    return e
