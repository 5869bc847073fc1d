"""Device-list tracking for `/sync` (spec: end_to_end_encryption.md "Tracking the device list for a
user" and "Extensions to /sync"): who changed their keys, who now shares a room with us, who no
longer does. Over-reporting `changed` is allowed by the spec; missing a change is not."""

from __future__ import annotations

from typing import Any

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
        shared = self._shared_users(user_id)
        changed = {u for u in self.db.e2ee.device_list_changes(since, upto) if u in shared or u == user_id}
        maybe_left: set[str] = set()
        for ur in self.db.rooms.user_rooms(user_id):
            if ur.stream > since and ur.stream <= upto:
                members = {u for u, _ in self.db.rooms.members(ur.room, "join")}
                if ur.membership == "join":
                    changed |= members  # we joined: everyone there now shares a room with us
                else:
                    maybe_left |= members
            elif ur.membership == "join":
                for other, membership in self._member_changes(ur.room, since, upto):
                    if membership == "join":
                        changed.add(other)
                    elif membership in ("leave", "ban"):
                        maybe_left.add(other)
        left = {u for u in maybe_left if u not in shared and u != user_id}
        return {"changed": sorted(changed - left), "left": sorted(left)}

    def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        return self.db.e2ee.one_time_key_counts(user_id, device_id)

    def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        return sorted(alg for alg, entry in self.db.e2ee.fallback_keys(user_id, device_id) if not entry.get("used"))
