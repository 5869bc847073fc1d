"""Profiles: displayname, avatar_url, m.tz and custom fields of local users.

spec: client-server-api "Profiles" and PUT/GET/DELETE /profile/{userId}/{keyName} (v1.16 fields).

`get_profile(user_id)` and `member_fields(user_id)` are what the room service puts in the member
events it builds for local users (spec: "when homeservers emit room membership events for their
own users, they should include the display name and avatar URL"). A change of displayname or
avatar_url is sent as a new `m.room.member` join event to every room the user is joined to.
Profiles of other servers' users are asked of their server through `RemoteProfiles`
(federation's `/query/profile`, spec: server-server-api "Querying for information") and kept a
short while in a bounded cache; without federation they are unknown (404).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.locks import KeyedLocks
from homeserver.media.mxc import parse_mxc
from homeserver.protocol import canonical_json
from homeserver.protocol.errors import ProtocolError
from homeserver.protocol.identifiers import is_valid_user_id
from homeserver.rooms.queries import RoomQueries
from storage.cache import LruCache
from storage.engine import Batch, Store
from storage.profiles import ProfileStore

if TYPE_CHECKING:
    from homeserver.auth.tokens import Requester
    from homeserver.rooms.pipeline import EventPipeline

log = logging.getLogger(__name__)

# spec: profile.yaml — the keyName grammar, the 64 KiB profile and the 255-byte key limits
KEY_PATTERN = re.compile(r"(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)")
MAX_PROFILE_BYTES = 64 * 1024
MAX_KEY_BYTES = 255
MAX_DISPLAYNAME_CHARS = 256  # as Synapse: longer names break every client's layout
MEMBER_FIELDS = ("displayname", "avatar_url")

ProfileListener = Callable[[str, dict[str, Any]], None]
REMOTE_PROFILE_TTL_S = 300.0  # how long another server's answer is used before asking again


class RemoteProfiles(Protocol):
    """Another server's user's profile, asked of it: None when that server does not know the user;
    a MatrixError when it cannot be asked."""

    async def profile(self, user_id: str) -> dict[str, Any] | None: ...


def check_key(key: str) -> None:
    if len(key.encode()) > MAX_KEY_BYTES:
        raise MatrixError(400, "M_KEY_TOO_LARGE", f"profile keys are at most {MAX_KEY_BYTES} bytes")
    if KEY_PATTERN.fullmatch(key) is None:
        raise MatrixError(
            400, "M_INVALID_PARAM", "Invalid profile key: use displayname, avatar_url, m.tz or a namespaced key"
        )


def check_value(key: str, value: Any) -> Any:
    """The value to store for `key`; None for displayname/avatar_url "" means the field is removed."""
    if key == "displayname":
        if not isinstance(value, str):
            raise MatrixError(400, "M_BAD_JSON", "displayname must be a string")
        if len(value) > MAX_DISPLAYNAME_CHARS:
            raise MatrixError(400, "M_INVALID_PARAM", f"displayname is longer than {MAX_DISPLAYNAME_CHARS} characters")
    elif key == "avatar_url":
        if not isinstance(value, str):
            raise MatrixError(400, "M_BAD_JSON", "avatar_url must be a string")
        if value and parse_mxc(value) is None:
            raise MatrixError(400, "M_INVALID_PARAM", "avatar_url must be an mxc:// URI")
    elif key == "m.tz" and not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", "m.tz must be a string")
    try:
        canonical_json.check(value)
    except ProtocolError as e:
        raise MatrixError(400, "M_BAD_JSON", f"value is not valid canonical JSON: {e}") from None
    return value


class Profiles:
    def __init__(
        self,
        store: Store,
        profiles: ProfileStore,
        queries: RoomQueries,
        exists: Callable[[str], bool],
        pipeline: EventPipeline,
        *,
        remote: RemoteProfiles | None = None,
        remote_cache: LruCache[str, tuple[float, dict[str, Any] | None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.profiles = profiles
        self.queries = queries
        self.exists = exists
        self.pipeline = pipeline  # sends the member events of a profile change
        self.remote = remote  # federation's; None when federation is off
        # user id -> (when asked, the answer): bounded, and each answer used for REMOTE_PROFILE_TTL_S
        self.remote_cache: LruCache[str, tuple[float, dict[str, Any] | None]] = (
            remote_cache if remote_cache is not None else LruCache("profile.remote", 1000)
        )
        self.clock = clock
        self.listeners: list[ProfileListener] = []  # told (user id, new profile) after every change
        self._locks: KeyedLocks[str] = KeyedLocks()  # a user's lock lives only while in use

    def is_local(self, user_id: str) -> bool:
        return user_id.startswith("@") and self.queries.is_local(user_id)

    # -- reading ---------------------------------------------------------------------------------

    def get_profile(self, user_id: str) -> dict[str, Any]:
        """The stored profile of a local user ({} when none or unknown). Does no I/O beyond the store."""
        return dict(self.profiles.get(user_id) or {})

    def member_fields(self, user_id: str) -> dict[str, Any]:
        """displayname and avatar_url, as they go into this user's `m.room.member` content."""
        profile = self.get_profile(user_id)
        return {k: profile[k] for k in MEMBER_FIELDS if isinstance(profile.get(k), str) and profile[k]}

    async def lookup(self, user_id: str) -> dict[str, Any]:
        """The whole profile for GET /profile/{userId}: 404 `M_NOT_FOUND` for unknown users."""
        if not is_valid_user_id(user_id, historical=True):
            raise MatrixError(400, "M_INVALID_PARAM", "userId is not a valid user id")
        if self.is_local(user_id):
            if not self.exists(user_id):
                raise not_found("Profile not found")
            return self.get_profile(user_id)
        remote = await self.remote_profile(user_id)
        if remote is None:
            raise not_found("Profile not found")
        return remote

    async def remote_profile(self, user_id: str) -> dict[str, Any] | None:
        """Another server's user's profile (cached a while); None when unknown there. A server
        that cannot be asked gives its MatrixError (502), which is not cached."""
        if self.remote is None:
            return None
        now = self.clock()
        cached = self.remote_cache.get(user_id)
        if cached is not None and now - cached[0] < REMOTE_PROFILE_TTL_S:
            return dict(cached[1]) if cached[1] is not None else None
        found = await self.remote.profile(user_id)
        self.remote_cache.put(user_id, (now, dict(found) if found is not None else None))
        return found

    async def remote_member_fields(self, user_id: str) -> dict[str, Any]:
        """displayname and avatar_url of another server's user, as member events carry them; {}
        when their server does not answer (an invite goes out without them, as in Synapse)."""
        try:
            found = await self.remote_profile(user_id)
        except MatrixError:
            return {}
        return {k: v for k in MEMBER_FIELDS if isinstance(v := (found or {}).get(k), str) and v}

    async def lookup_field(self, user_id: str, key: str) -> Any:
        check_key(key)
        profile = await self.lookup(user_id)
        if key not in profile:
            raise not_found("Profile field not found")
        return profile[key]

    # -- writing ---------------------------------------------------------------------------------

    def _check_writer(self, requester: Requester, user_id: str) -> None:
        if not is_valid_user_id(user_id, historical=True):
            raise MatrixError(400, "M_INVALID_PARAM", "userId is not a valid user id")
        if requester.user_id != user_id and not (requester.is_admin and self.is_local(user_id)):
            raise forbidden("You cannot change another user's profile")
        if not self.is_local(user_id) or not self.exists(user_id):
            raise not_found("Profile not found")

    async def set_field(self, requester: Requester, user_id: str, key: str, value: Any) -> None:
        check_key(key)
        self._check_writer(requester, user_id)
        value = check_value(key, value)
        await self._change(user_id, key, value, remove=key in MEMBER_FIELDS and value == "")

    async def delete_field(self, requester: Requester, user_id: str, key: str) -> None:
        check_key(key)
        self._check_writer(requester, user_id)
        await self._change(user_id, key, None, remove=True)

    def on_account_created(self, user_id: str, fields: dict[str, Any], batch: Batch) -> None:
        """A new account's first profile, written in the account's own batch (an accounts listener;
        registration passes the display name, the localpart by default as in Synapse)."""
        profile: dict[str, Any] = {}
        name = fields.get("displayname")
        if isinstance(name, str) and name:
            profile["displayname"] = name[:MAX_DISPLAYNAME_CHARS]
        avatar = fields.get("avatar_url")
        if isinstance(avatar, str) and parse_mxc(avatar) is not None:
            profile["avatar_url"] = avatar
        if not profile:
            return
        self.profiles.put(user_id, profile, batch)
        batch.on_commit.append(lambda: self._tell(user_id, profile))

    def _tell(self, user_id: str, profile: dict[str, Any]) -> None:
        for listener in self.listeners:
            listener(user_id, dict(profile))

    async def _change(self, user_id: str, key: str, value: Any, *, remove: bool) -> None:
        async with self._locks(user_id):
            old = self.get_profile(user_id)
            new = dict(old)
            if remove:
                new.pop(key, None)
            else:
                new[key] = value
            if new == old:
                return
            if len(canonical_json.encode(new)) > MAX_PROFILE_BYTES:
                raise MatrixError(400, "M_PROFILE_TOO_LARGE", f"profiles are limited to {MAX_PROFILE_BYTES} bytes")
            batch = self.store.batch()
            with batch:
                self.profiles.put(user_id, new, batch)
                await batch.commit()
            self._tell(user_id, new)
            if key in MEMBER_FIELDS:
                await self._update_member_events(user_id)

    async def _update_member_events(self, user_id: str) -> None:
        """spec: "Events on Change of Profile Information" — a join event with the new values in
        every room the user is joined to. A room that refuses it is logged and skipped."""
        fields = self.member_fields(user_id)
        joined = [r for r in self.queries.memberships(user_id) if r.membership == "join"]
        for room in joined:
            old_event = self.queries.event(room.event)
            old_content = old_event.content if old_event is not None else {}
            content: dict[str, Any] = dict(old_content)
            # only meaningful on the join itself; a join -> join change must not carry it
            content.pop("join_authorised_via_users_server", None)
            content["membership"] = "join"
            for k in MEMBER_FIELDS:
                content.pop(k, None)
            content.update(fields)
            if content == old_content:
                continue
            try:
                room_id = self.queries.room_id(room.room)
                await self.pipeline.send(room_id, user_id, "m.room.member", content, user_id)
            except (MatrixError, KeyError) as e:
                log.warning("profile change of %s not sent to room %s: %s", user_id, room.room, e)
