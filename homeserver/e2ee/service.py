"""The E2EE service: keys, to-device messages, key backup, and the `/sync` extensions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from homeserver.e2ee.backup import KeyBackup
from homeserver.e2ee.device_lists import DeviceLists
from homeserver.e2ee.keys import Keys
from homeserver.e2ee.to_device import ToDevice
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.timeline import Timeline
from storage.database import Database


class E2EE:
    def __init__(self, db: Database, server_name: str, queries: RoomQueries, timeline: Timeline) -> None:
        self._listeners: list[Callable[[Iterable[str]], None]] = []
        self.keys = Keys(db, server_name, notify_users=self._notify)
        self.to_device = ToDevice(db, server_name, notify_users=self._notify)
        self.backup = KeyBackup(db)
        self.device_lists = DeviceLists(db.e2ee, queries, timeline)

    def add_listener(self, listener: Callable[[Iterable[str]], None]) -> None:
        """Called with the users whose `/sync` has something new (keys changed, a to-device message)."""
        self._listeners.append(listener)

    def _notify(self, users: Iterable[str]) -> None:
        users = list(users)
        for listener in self._listeners:
            listener(users)

    async def sync_extensions(self, user_id: str, device_id: str, since: int | None, upto: int) -> dict[str, Any]:
        """The E2EE parts of a `/sync` response (spec: e2e "Extensions to /sync", send_to_device)."""
        out: dict[str, Any] = {
            "to_device": {"events": await self.to_device.for_sync(user_id, device_id, since, upto)},
            "device_one_time_keys_count": self.device_lists.one_time_key_counts(user_id, device_id),
            "device_unused_fallback_key_types": self.device_lists.unused_fallback_key_types(user_id, device_id),
        }
        if since is not None:
            out["device_lists"] = self.device_lists.for_sync(user_id, since, upto)
        return out
