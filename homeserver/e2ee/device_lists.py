"""Device-list tracking for `/sync` (spec: end_to_end_encryption.md "Tracking the device list for a
user" and "Extensions to /sync"): who changed their keys, who now shares a room with us, who no
longer does. Over-reporting `changed` is allowed by the spec; missing a change is not."""

from __future__ import annotations

from typing import Any

from homeserver.e2ee.keys import one_time_key_counts
from storage.database import Database
from storage.rooms import LIVE_BASE


class DeviceLists:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _shared_users(self, user_id: str) -> set[str]:
        users: set[str] = set()
        for ur in self.db.rooms.user_rooms(user_id):
            if ur.membership == "join":
                users.update(u for u, _ in self.db.rooms.members(ur.room, "join"))
        return users

    def _member_changes(self, room: int, since: int, upto: int) -> list[tuple[str, str]]:
        """(user, membership) of member events in a room's timeline in (since, upto]."""
        out = []
        for _, short in self.db.rooms.timeline(room, after=LIVE_BASE + since, before=LIVE_BASE + upto + 1):
            meta = self.db.events.get_meta(short)
            if meta is None or not meta.state_key:
                continue
            etype, state_key = self.db.ids.state_key_of(meta.state_key)
            if etype != "m.room.member":
                continue
            event = self.db.events.get_json(short) or {}
            membership = event.get("content", {}).get("membership")
            if isinstance(membership, str):
                out.append((state_key, membership))
        return out

    def for_sync(self, user_id: str, since: int, upto: int) -> dict[str, Any]:
        # Who shares a room with the user (every member of every joined room) is only needed to
        # filter device-list changes and leaves: read it when there are some, not on every sync.
        shared: set[str] | None = None
        changes = list(self.db.e2ee.device_list_changes(since, upto))
        changed: set[str] = set()
        if changes:
            shared = self._shared_users(user_id)
            changed = {u for u in changes if u in shared or u == user_id}
        maybe_left: set[str] = set()
        for ur in self.db.rooms.user_rooms(user_id):
            if ur.stream > since and ur.stream <= upto:
                members = {u for u, _ in self.db.rooms.members(ur.room, "join")}
                if ur.membership == "join":
                    changed |= members  # we joined: everyone there now shares a room with us
                else:
                    maybe_left |= members
            elif ur.membership == "join" and self._has_events_after(ur.room, since):
                for other, membership in self._member_changes(ur.room, since, upto):
                    if membership == "join":
                        changed.add(other)
                    elif membership in ("leave", "ban"):
                        maybe_left.add(other)
        left: set[str] = set()
        if maybe_left:
            if shared is None:
                shared = self._shared_users(user_id)
            left = {u for u in maybe_left if u not in shared and u != user_id}
        return {"changed": sorted(changed - left), "left": sorted(left)}

    def _has_events_after(self, room: int, since: int) -> bool:
        """False when the room's newest timeline event is at or before `since` (no member changes
        since then to look for); the room's info records that position with every event."""
        info = self.db.rooms.info(room)
        stream = info.get("stream") if info else None
        return not isinstance(stream, int) or stream > since

    def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        return one_time_key_counts(self.db.e2ee, user_id, device_id)

    def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        return sorted(alg for alg, entry in self.db.e2ee.fallback_keys(user_id, device_id) if not entry.get("used"))
