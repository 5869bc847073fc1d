"""The E2EE service: keys, to-device messages, key backup, and the `/sync` extensions."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from homeserver.e2ee.backup import KeyBackup
from homeserver.e2ee.device_lists import DeviceLists
from homeserver.e2ee.keys import Keys
from homeserver.e2ee.to_device import ToDevice
from homeserver.rooms.queries import RoomQueries
from storage.cross_signing import CrossSigningStore
from storage.device_keys import DeviceKeyStore
from storage.device_lists import DeviceListStore
from storage.engine import Batch, Store
from storage.key_backup import KeyBackupStore
from storage.one_time_keys import OneTimeKeyStore
from storage.to_device import ToDeviceStore

if TYPE_CHECKING:
    from homeserver.auth.accounts import Accounts


class E2EE:
    def __init__(
        self,
        store: Store,
        device_keys: DeviceKeyStore,
        one_time_keys: OneTimeKeyStore,
        cross_signing: CrossSigningStore,
        device_list_stream: DeviceListStore,
        to_device: ToDeviceStore,
        key_backup: KeyBackupStore,
        queries: RoomQueries,
        accounts: Accounts,
        device_lists: DeviceLists,
    ) -> None:
        self._listeners: list[Callable[[Iterable[str]], None]] = []
        self.keys = Keys(
            store,
            device_keys,
            one_time_keys,
            cross_signing,
            device_list_stream,
            queries,
            accounts,
            notify_users=self._notify,
        )
        self.to_device = ToDevice(store, to_device, queries, accounts, notify_users=self._notify)
        self.backup = KeyBackup(store, key_backup)
        self.device_lists = device_lists

    def add_listener(self, listener: Callable[[Iterable[str]], None]) -> None:
        """Called with the users whose `/sync` has something new (keys changed, a to-device message)."""
        self._listeners.append(listener)

    def _notify(self, users: Iterable[str]) -> None:
        users = list(users)
        for listener in self._listeners:
            listener(users)

    def devices_deleted(self, user_id: str, device_ids: list[str], batch: Batch) -> None:
        """An accounts listener, in the batch that deletes devices: their keys and messages go too."""
        self.keys.devices_deleted(user_id, device_ids, batch)
        self.to_device.devices_deleted(user_id, device_ids, batch)

    async def sync_extensions(self, user_id: str, device_id: str, since: int | None, upto: int) -> dict[str, Any]:
        """The E2EE parts of a `/sync` response (spec: e2e "Extensions to /sync", send_to_device)."""
        out: dict[str, Any] = {
            "to_device": {"events": await self.to_device.for_sync(user_id, device_id, since, upto)},
            "device_one_time_keys_count": self.keys.one_time_key_counts(user_id, device_id),
            "device_unused_fallback_key_types": self.keys.unused_fallback_key_types(user_id, device_id),
        }
        if since is not None:
            out["device_lists"] = self.device_lists.for_sync(user_id, since, upto)
        return out
