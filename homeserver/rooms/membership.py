"""Membership changes asked for by local users: join, knock, invite, leave, kick, ban, unban, forget.

spec: client-server-api "Room membership" and the membership endpoints. Each change is an
`m.room.member` event through the pipeline, so the auth rules decide (403 when they refuse); this
module adds what the auth rules do not know: guest access, restricted-room authorisers, invite
blocking, the profile in join, knock and invite events (as Synapse: not in kicks, bans or leaves),
and the spec's preconditions (who can be kicked, unbanned...).

Rooms this server is not in (joining over federation) and users of other servers (inviting over
federation) are not supported yet: they get 404 / 403 with a message that says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.protocol.errors import InvalidIdentifier
from homeserver.protocol.events import content_of
from homeserver.protocol.identifiers import UserID
from homeserver.protocol.power_levels import get_named_level, get_user_power_level
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.messages import require_room_id
from homeserver.rooms.pipeline import EventPipeline
from homeserver.rooms.queries import RoomQueries
from storage.engine import Store
from storage.room_extras import RoomExtrasStore

ProfileLookup = Callable[[str], dict[str, Any] | None]
# spec: modules/invite_permission.md (v1.18)
INVITE_PERMISSION_CONFIG = "m.invite_permission_config"


def blocks_invites(config: dict[str, Any] | None) -> bool:
    """spec: invite permission — `default_action: block` in m.invite_permission_config refuses
    every invite; without `default_action` invites are allowed again."""
    return isinstance(config, dict) and config.get("default_action") == "block"


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
    ) -> None:
        self.store = store
        self.room_extras = room_extras
        self.account_data = account_data  # the account data service's reader (invite blocking)
        self.pipeline = pipeline
        self.queries = queries
        self.directory = directory
        self.profile_lookup = profile_lookup  # the profile service's: displayname / avatar_url of a user

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
            raise forbidden(f"{user_id} is on another server; inviting over federation is not supported yet")

    def room(self, room_id: str) -> int:
        require_room_id(room_id)
        room = self.queries.known_room(room_id)
        if room is None:
            raise not_found(
                f"This server does not know room {room_id}; joining rooms of other servers needs federation, "
                "which is not supported yet"
            )
        return room

    def resolve(self, room_id_or_alias: str) -> str:
        if room_id_or_alias.startswith("#"):
            return self.directory.room_id_of(room_id_or_alias)
        require_room_id(room_id_or_alias)
        return room_id_or_alias

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
        self, user_id: str, room_id_or_alias: str, *, reason: str | None = None, is_guest: bool = False
    ) -> str:
        room_id = self.resolve(room_id_or_alias)
        room = self.room(room_id)
        current = self.queries.current_membership(user_id, room)
        if is_guest and current != "join":
            self._require_guest_access(room)
        profile = self.profile(user_id)
        if current == "join":
            ur = self.queries.membership(user_id, room)
            existing = content_of(self.queries.event(ur.event)) if ur is not None else {}
            if reason is None and all(existing.get(k) == profile.get(k) for k in ("displayname", "avatar_url")):
                return room_id  # already joined as this profile: nothing to change
        content = self._with_reason({"membership": "join", **profile}, reason)
        if current not in ("join", "invite"):
            authoriser = self._restricted_authoriser(room, user_id)
            if authoriser is not None:
                content["join_authorised_via_users_server"] = authoriser
        await self._send(room_id, user_id, user_id, content)
        return room_id

    def _restricted_authoriser(self, room: int, user_id: str) -> str | None:
        """For a restricted room the user may join through an allow condition, a local member who
        can invite (spec: "Restricted rooms"; rooms v8 auth rules `join_authorised_via_users_server`)."""
        join_rules = content_of(self.queries.current_state_event(room, "m.room.join_rules"))
        rule = join_rules.get("join_rule")
        rv = self.queries.room_version(room)
        if rule not in ("restricted", "knock_restricted") or not rv.restricted_join_rule:
            return None
        allow = join_rules.get("allow")
        allowed = False
        for condition in allow if isinstance(allow, list) else []:
            if not isinstance(condition, dict) or condition.get("type") != "m.room_membership":
                continue
            other_id = condition.get("room_id")
            other = self.queries.room(other_id) if isinstance(other_id, str) else None
            if other is not None and self.queries.is_joined(user_id, other):
                allowed = True
                break
        if not allowed:
            raise forbidden("You are not invited to this room and meet none of its join conditions")
        pl = self.queries.current_state_event(room, "m.room.power_levels")
        create = self.queries.current_state_event(room, "m.room.create")
        invite_level = get_named_level(pl, "invite", rv)
        for member in self.queries.local_joined_members(room):
            if get_user_power_level(member, pl, create, rv) >= invite_level:
                return member
        raise forbidden("No member of this server may let you in to this restricted room")

    async def knock(self, user_id: str, room_id_or_alias: str, *, reason: str | None = None) -> str:
        room_id = self.resolve(room_id_or_alias)
        room = self.room(room_id)
        current = self.queries.current_membership(user_id, room)
        # spec: "Users who are currently in the room, already invited, or banned cannot knock"
        if current in ("join", "invite", "ban"):
            raise forbidden(f"You cannot knock on a room you are {'banned from' if current == 'ban' else 'in'}")
        content = self._with_reason({"membership": "knock", **self.profile(user_id)}, reason)
        await self._send(room_id, user_id, user_id, content)
        return room_id

    # -- other users -----------------------------------------------------------------------------

    async def invite(self, sender: str, room_id: str, target: Any, *, reason: str | None = None) -> None:
        target = self.check_user_id(target)
        self.room(room_id)
        self.require_local_target(target)
        self.require_invitable(target)
        # the invitee's profile, as Synapse puts it in: clients show "Alice invited Bob" from it
        content = self._with_reason({"membership": "invite", **self.profile(target)}, reason)
        await self._send(room_id, sender, target, content)

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
        room = self.room(room_id)
        current = self.queries.current_membership(user_id, room)
        if current == "leave":
            return  # already left: nothing to do
        if current == "ban":
            raise forbidden("You are banned from this room")
        if current is None:
            raise forbidden("You are not in this room")
        await self._send(room_id, user_id, user_id, self._with_reason({"membership": "leave"}, reason))

    async def forget(self, user_id: str, room_id: str) -> None:
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
        if membership == "invite":
            self.require_local_target(target)
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
