"""Invites: registration tokens with a purpose, and what the invite page shows about one.

An invite is a registration token (auth/registration_tokens.py) whose record also holds a note,
the rooms and spaces the new account joins, who made it, and an admin flag. Admins make them from
the CLI and the admin API without limits; ordinary users only when `invites.users_may_invite` is
on, with at most `invites.user_max_uses` uses, an expiry no later than `invites.default_expiry_days`,
rooms they are joined to, and `invites.user_quota` valid invites at once.

On sign-up (through /register's token stage or the invite page) the new account joins the
invite's rooms; a room it may not join by itself it is first invited to by the invite's maker.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from homeserver.auth.registration_tokens import RegistrationTokens
from homeserver.config import Config
from homeserver.errors import MatrixError
from homeserver.protocol.events import content_of

if TYPE_CHECKING:
    from homeserver.rooms.membership import Membership
    from homeserver.rooms.queries import RoomQueries

log = logging.getLogger(__name__)

MAX_NOTE_LENGTH = 500
MAX_ROOMS = 20
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class InviteView:
    """What the invite page may tell anyone holding the link."""

    token: str
    status: str  # valid, used, expired, revoked, unknown, closed
    inviter: str | None = None  # display name (or user id) of whoever made it
    inviter_id: str | None = None
    note: str | None = None
    rooms: list[str] = field(default_factory=list)  # room names (or aliases / ids)
    admin: bool = False
    password: bool = True  # the page may offer a password sign-up (else only single sign-on)


class Invites:
    def __init__(
        self,
        config: Config,
        tokens: RegistrationTokens,
        queries: RoomQueries,
        membership: Membership,
        profile: Callable[[str], dict[str, Any]],
        usable: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
        *,
        password_usable: Callable[[str], bool] | None = None,
    ) -> None:
        self.config = config
        self.settings = config.invites
        self.tokens = tokens
        self.queries = queries
        self.membership = membership
        self.profile = profile  # a local user's stored profile (Profiles.get_profile)
        self.usable = usable  # the registration policy's word on a token (Registration.invite_usable)
        # ... for password sign-up alone (Registration.password_invite_usable)
        self.password_usable = password_usable or usable
        self.clock = clock

    # -- making, listing, revoking -----------------------------------------------------------------

    async def create(
        self,
        *,
        creator: str | None,
        as_admin: bool,
        uses: int | None = 1,
        expires_in_ms: int | None = None,
        never_expires: bool = False,
        note: str | None = None,
        rooms: Sequence[str] = (),
        admin: bool = False,
        token: str | None = None,
    ) -> dict[str, Any]:
        """A new invite. `as_admin`: made by an admin (CLI, admin API); otherwise the user limits apply."""
        self._check_note_and_rooms(note, rooms)
        if uses is not None and uses < 1:
            raise MatrixError(400, "M_INVALID_PARAM", "uses must be at least 1 (or unlimited)")
        if expires_in_ms is not None and expires_in_ms <= 0:
            raise MatrixError(400, "M_INVALID_PARAM", "expiry must be in the future")
        default_ms = int(self.settings.default_expiry_days * _DAY_MS)
        if not as_admin:
            self._check_user_limits(creator, uses, expires_in_ms, never_expires, admin, default_ms)
        for room in rooms:
            self._check_room(room, None if as_admin else creator)
        now_ms = int(self.clock() * 1000)
        expiry = None if never_expires else now_ms + (expires_in_ms if expires_in_ms is not None else default_ms)
        created = await self.tokens.create(
            token,
            uses_allowed=uses,
            expiry_time=expiry,
            admin=admin,
            note=note or None,
            rooms=list(rooms),
            creator=creator,
        )
        return self._as_invite(created["token"])

    async def create_token(
        self,
        token: str | None,
        *,
        length: int,
        uses_allowed: int | None,
        expiry_time: int | None,
        note: str | None,
        rooms: Sequence[str],
        creator: str | None,
    ) -> dict[str, Any]:
        """The admin API's `registration_tokens/new` (Synapse's fields, no default expiry) with a
        note and rooms."""
        self._check_note_and_rooms(note, rooms)
        for room in rooms:
            self._check_room(room, None)
        return await self.tokens.create(
            token,
            length=length,
            uses_allowed=uses_allowed,
            expiry_time=expiry_time,
            note=note or None,
            rooms=list(rooms),
            creator=creator,
        )

    @staticmethod
    def _check_note_and_rooms(note: str | None, rooms: Sequence[str]) -> None:
        if note is not None and len(note) > MAX_NOTE_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", f"note is longer than {MAX_NOTE_LENGTH} characters")
        if len(rooms) > MAX_ROOMS:
            raise MatrixError(400, "M_INVALID_PARAM", f"at most {MAX_ROOMS} rooms")

    def _check_user_limits(
        self,
        creator: str | None,
        uses: int | None,
        expires_in_ms: int | None,
        never_expires: bool,
        admin: bool,
        default_ms: int,
    ) -> None:
        if creator is None or not self.settings.users_may_invite:
            raise MatrixError(403, "M_FORBIDDEN", "Only server admins may create invites on this server")
        if admin:
            raise MatrixError(403, "M_FORBIDDEN", "Only server admins may create admin invites")
        if uses is None or uses > self.settings.user_max_uses:
            raise MatrixError(400, "M_INVALID_PARAM", f"an invite may have at most {self.settings.user_max_uses} uses")
        if never_expires or (expires_in_ms is not None and expires_in_ms > default_ms):
            days = f"{self.settings.default_expiry_days:g}"
            raise MatrixError(400, "M_INVALID_PARAM", f"an invite may last at most {days} days")
        if self.tokens.count_valid_by(creator) >= self.settings.user_quota:
            raise MatrixError(
                403, "M_FORBIDDEN", f"you already have {self.settings.user_quota} open invites: revoke one first"
            )

    def _check_room(self, room: str, member: str | None) -> None:
        """The room must exist here; a user may only invite to rooms they are joined to."""
        try:
            room_id = self.membership.resolve(room)
        except MatrixError:
            raise MatrixError(400, "M_INVALID_PARAM", f"no such room: {room}") from None
        short = self.queries.room(room_id)
        if short is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"no such room: {room}")
        if member is not None and not self.queries.is_joined(member, short):
            raise MatrixError(403, "M_FORBIDDEN", f"you are not in {room}")

    def list(self, *, creator: str | None = None, valid: bool | None = None) -> list[dict[str, Any]]:
        """Invites (all, or those `creator` made), each with its note, rooms, maker, status and link."""
        return [
            {**row, "link": self.link(row["token"])} for row in self.tokens.list(valid, creator=creator, invites=True)
        ]

    def _as_invite(self, token: str) -> dict[str, Any]:
        record = self.tokens.get(token)
        assert record is not None  # just written
        return {**self.tokens.render_invite(token, record), "link": self.link(token)}

    async def revoke(self, token: str, *, by: str | None, as_admin: bool) -> dict[str, Any]:
        """Admins revoke any invite; users only their own (others' look unknown to them)."""
        record = self.tokens.get(token)
        if record is None or (not as_admin and record.get("creator") != by):
            raise MatrixError(404, "M_NOT_FOUND", "no such invite")
        await self.tokens.revoke(token)
        return self._as_invite(token)

    def link(self, token: str) -> str:
        return f"{self.base_url()}/invite/{token}"

    def base_url(self) -> str:
        return (self.config.public_baseurl or f"http://{self.config.listen}").rstrip("/")

    # -- the page ----------------------------------------------------------------------------------

    def view(self, token: str) -> InviteView:
        record = self.tokens.get(token)
        if record is None:
            return InviteView(token, "unknown")
        status = self.tokens.status(record)
        if status == "valid" and not self.usable(token):
            status = "closed"  # registration closed, or an admin token once an account exists
        creator = record.get("creator")
        inviter = None
        if isinstance(creator, str):
            inviter = self.profile(creator).get("displayname") or creator
        return InviteView(
            token,
            status,
            inviter=inviter,
            inviter_id=creator if isinstance(creator, str) else None,
            note=record.get("note"),
            rooms=[self._room_label(r) for r in record.get("rooms", [])],
            admin=bool(record.get("admin")),
            password=status != "valid" or self.password_usable(token),
        )

    def _room_label(self, room: str) -> str:
        try:
            short = self.queries.room(self.membership.resolve(room))
        except MatrixError:
            return room
        if short is None:
            return room
        name = content_of(self.queries.current_state_event(short, "m.room.name")).get("name")
        return name if isinstance(name, str) and name else room

    # -- sign-up -----------------------------------------------------------------------------------

    async def joined_on_signup(self, user_id: str, record: dict[str, Any]) -> None:
        """Join the invite's rooms (a Registration token-signup listener). A room that cannot be
        joined is logged and skipped: the account exists either way."""
        creator = record.get("creator")
        for room in record.get("rooms", []):
            try:
                room_id = self.membership.resolve(room)
                try:
                    await self.membership.join(user_id, room_id)
                except MatrixError:
                    if not isinstance(creator, str):
                        raise
                    await self.membership.invite(creator, room_id, user_id)
                    await self.membership.join(user_id, room_id)
            except MatrixError as e:
                log.warning("invite sign-up: %s could not join %s: %s", user_id, room, e)
