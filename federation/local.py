"""What other servers may ask about this server, answered by its services (federation/service.py's
`LocalAnswers`), and the room's server ACL as federation checks it."""

from __future__ import annotations

from typing import Any

from homeserver.auth.accounts import Accounts
from homeserver.auth.openid import OpenIdTokens
from homeserver.errors import MatrixError
from homeserver.profile import Profiles
from homeserver.protocol.server_acl import server_allowed
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.membership import Membership
from homeserver.rooms.queries import RoomQueries


class ServiceAnswers:
    def __init__(
        self,
        profiles: Profiles,
        accounts: Accounts,
        directory: RoomDirectory,
        membership: Membership,
        openid: OpenIdTokens,
    ) -> None:
        self.profiles = profiles
        self.accounts = accounts
        self.directory = directory
        self.membership = membership
        self.openid = openid

    def profile(self, user_id: str, field: str | None) -> dict[str, Any] | None:
        if not self.accounts.exists(user_id):
            return None
        profile = self.profiles.get_profile(user_id)
        if field is None:
            return profile
        # spec: query/profile — with `field`, only that field (an empty object when it is unset)
        return {field: profile[field]} if field in profile else {}

    def alias(self, alias: str) -> tuple[str, list[str]] | None:
        try:
            found = self.directory.resolve(alias)
        except MatrixError:
            return None
        return found["room_id"], list(found["servers"])

    def openid_user(self, token: str) -> str | None:
        return self.openid.owner(token)

    def check_invite(self, inviter: str, invitee: str, room_id: str) -> None:
        if not self.accounts.exists(invitee):
            raise MatrixError(404, "M_NOT_FOUND", f"{invitee} does not exist on this server")
        self.membership.require_invitable(invitee)


class RoomAcls:
    """`m.room.server_acl` of a room's current state, as every inbound path checks it."""

    def __init__(self, queries: RoomQueries) -> None:
        self.queries = queries

    def allows(self, room_id: str, server: str) -> bool:
        room = self.queries.room(room_id)
        if room is None:
            return True  # a room this server does not know has no ACL here
        acl = self.queries.current_state_event(room, "m.room.server_acl")
        return server_allowed(acl.content if acl is not None else None, server)
