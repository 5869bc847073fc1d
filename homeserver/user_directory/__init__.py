"""The user directory (spec: POST /user_directory/search).

Who a searcher can find — the spec's minimum, which is also Synapse's default
(`search_all_users: false`):
- every user who is joined to a room the searcher is joined to;
- every user joined to a room whose join rule is `public` or whose history visibility is
  `world_readable` (a "public room" below).
Users in no room, or only in private rooms the searcher is not in, are not found. Local users are
shown with their global profile; remote users with the name and avatar of their member event.

The index: the set of public rooms and, for each user, the public rooms they are joined to. It is
built from the store on first use and kept current by a persisted-event listener (membership,
join rule and history visibility changes). Shared rooms are asked of the room queries at search
time, so they are always exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from homeserver.profile import Profiles
from homeserver.protocol.events import content_of
from homeserver.rooms.pipeline import PersistedEvent
from homeserver.rooms.queries import RoomQueries
from homeserver.user_directory.search import rank

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
_PUBLICITY_TYPES = ("m.room.join_rules", "m.room.history_visibility")


class UserDirectory:
    def __init__(self, queries: RoomQueries, profiles: Profiles) -> None:
        self.queries = queries
        self.profiles = profiles
        self._built = False
        self._public_rooms: set[int] = set()
        self._public_users: dict[str, set[int]] = {}  # user -> the public rooms they are joined to
        self._public_members: dict[int, set[str]] = {}  # public room -> its joined members

    # -- the index -------------------------------------------------------------------------------

    def is_public(self, room: int) -> bool:
        join_rules = content_of(self.queries.current_state_event(room, "m.room.join_rules"))
        visibility = content_of(self.queries.current_state_event(room, "m.room.history_visibility"))
        return join_rules.get("join_rule") == "public" or visibility.get("history_visibility") == "world_readable"

    def _add(self, user_id: str, room: int) -> None:
        self._public_users.setdefault(user_id, set()).add(room)
        self._public_members.setdefault(room, set()).add(user_id)

    def _remove(self, user_id: str, room: int) -> None:
        rooms = self._public_users.get(user_id)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._public_users[user_id]
        members = self._public_members.get(room)
        if members is not None:
            members.discard(user_id)

    def _ensure_built(self) -> None:
        if self._built:
            return
        for room in self.queries.rooms():
            if self.is_public(room):
                self._public_rooms.add(room)
                for user_id in self.queries.joined_members(room):
                    self._add(user_id, room)
        self._built = True

    def on_persisted(self, event: PersistedEvent) -> None:
        """Keep the index current (a persisted-event listener). Before the first search there is
        nothing to keep: the index is then built from the store as it is."""
        if not self._built or not event.state_changed:
            return
        room = self.queries.room(event.room_id)
        if room is None:
            return
        if any(t in _PUBLICITY_TYPES for t, _ in event.state_changed):
            self._refresh_room(room)
            return
        if room not in self._public_rooms:
            return
        for (etype, state_key), _ in event.state_changed.items():
            if etype != "m.room.member":
                continue
            if self.queries.is_joined(state_key, room):
                self._add(state_key, room)
            else:
                self._remove(state_key, room)

    def _refresh_room(self, room: int) -> None:
        for user_id in list(self._public_members.pop(room, ())):
            self._remove(user_id, room)
        self._public_members.pop(room, None)
        self._public_rooms.discard(room)
        if self.is_public(room):
            self._public_rooms.add(room)
            for user_id in self.queries.joined_members(room):
                self._add(user_id, room)

    # -- searching -------------------------------------------------------------------------------

    def visible_users(self, searcher: str) -> dict[str, int | None]:
        """Every user the searcher may find, with a member event of theirs when one is at hand."""
        self._ensure_built()
        found: dict[str, int | None] = {}
        for room in self.queries.joined_rooms(searcher):
            for user_id, event in self.queries.members(room):
                found[user_id] = event
        for user_id in self._public_users:
            found.setdefault(user_id, None)
        return found

    def _remote_profile(self, user_id: str, event: int | None) -> Mapping[str, Any]:
        if event is None:
            rooms = self._public_users.get(user_id)
            room = next(iter(rooms)) if rooms else None
            membership = self.queries.membership(user_id, room) if room is not None else None
            event = membership.event if membership is not None else None
        return content_of(self.queries.event(event) if event is not None else None)

    def _profile(self, user_id: str, event: int | None) -> tuple[str | None, str | None]:
        if self.profiles.is_local(user_id):
            profile: Mapping[str, Any] = self.profiles.get_profile(user_id)
        else:
            profile = self._remote_profile(user_id, event)
        name = profile.get("displayname")
        avatar = profile.get("avatar_url")
        name = name if isinstance(name, str) and name else None
        avatar = avatar if isinstance(avatar, str) and avatar else None
        return name, avatar

    def search(self, searcher: str, term: str, limit: int = DEFAULT_LIMIT) -> tuple[list[dict[str, str]], bool]:
        """(results, limited) for `term`, best first."""
        limit = max(0, min(limit, MAX_LIMIT))
        scored: list[tuple[int, bool, str, str | None, str | None]] = []
        for user_id, event in self.visible_users(searcher).items():
            name, avatar = self._profile(user_id, event)
            r = rank(term, user_id, name)
            if r is not None:
                scored.append((r, name is None and avatar is None, user_id, name, avatar))
        scored.sort(key=lambda s: (s[0], s[1], s[2]))
        return [_result(s[2], s[3], s[4]) for s in scored[:limit]], len(scored) > limit

    def public_rooms(self) -> Iterable[int]:
        self._ensure_built()
        return set(self._public_rooms)


def _result(user_id: str, name: str | None, avatar: str | None) -> dict[str, str]:
    out = {"user_id": user_id}
    if name is not None:
        out["display_name"] = name
    if avatar is not None:
        out["avatar_url"] = avatar
    return out
