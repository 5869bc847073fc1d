"""All the tables of one data directory, opened together."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from storage import (
    accounts,
    cross_signing,
    device_keys,
    device_lists,
    event_relations,
    events,
    external_ids,
    federation_queue,
    key_backup,
    media,
    oauth_clients,
    one_time_keys,
    openid,
    profiles,
    redactions,
    registration_tokens,
    room_directory,
    room_extras,
    rooms,
    search_index,
    server_keys,
    shortids,
    sliding_sync,
    state_snapshots,
    to_device,
)
from storage.account_data import AccountDataStore
from storage.accounts import AccountStore
from storage.cache import DEFAULT_BUDGET_MB, CacheRegistry, leveldb_stats
from storage.cross_signing import CrossSigningStore
from storage.device_keys import DeviceKeyStore
from storage.device_lists import DeviceListStore
from storage.engine import META, Store, Table
from storage.event_relations import RelationStore
from storage.events import EventStore
from storage.external_ids import ExternalIdStore
from storage.filters import FilterStore
from storage.key_backup import KeyBackupStore
from storage.media import MediaStore
from storage.oauth_clients import OAuthClientStore
from storage.one_time_keys import OneTimeKeyStore
from storage.openid import OpenIdStore
from storage.presence import PresenceStore
from storage.profiles import ProfileStore
from storage.push import PushStore
from storage.receipts import ReceiptStore
from storage.redactions import RedactionStore
from storage.registration_tokens import RegistrationTokenStore
from storage.room_directory import RoomDirectoryStore
from storage.room_extras import RoomExtrasStore
from storage.rooms import RoomStore
from storage.search_index import SearchIndexStore
from storage.shortids import ShortIds
from storage.sliding_sync import ConnectionStore, RoomActivityStore
from storage.state_snapshots import StateSnapshots
from storage.sync_tables import TABLES as SYNC_TABLES
from storage.to_device import ToDeviceStore

ALL_TABLES: tuple[Table, ...] = (
    META,
    *shortids.TABLES,
    *events.TABLES,
    *state_snapshots.TABLES,
    *rooms.TABLES,
    *accounts.TABLES,
    *media.TABLES,
    *profiles.TABLES,
    *registration_tokens.TABLES,
    *SYNC_TABLES,
    *event_relations.TABLES,
    *redactions.TABLES,
    *search_index.TABLES,
    *room_directory.TABLES,
    *room_extras.TABLES,
    # end-to-end encryption
    *device_keys.TABLES,
    *one_time_keys.TABLES,
    *cross_signing.TABLES,
    *device_lists.TABLES,
    *to_device.TABLES,
    *key_backup.TABLES,
    *openid.TABLES,
    *external_ids.TABLES,
    *oauth_clients.TABLES,
    *server_keys.TABLES,
    *federation_queue.TABLES,
    *sliding_sync.TABLES,
)


class Database:
    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: bool = False,
        cache_mb: int = DEFAULT_BUDGET_MB,
        store: Store | None = None,
    ) -> None:
        self.path = Path(path)
        # every cache of the server is sized from `cache_mb` and registered here (storage/cache.py)
        self.caches = CacheRegistry(cache_mb)
        self.store = store if store is not None else Store(self.path, fsync=fsync, cache_mb=cache_mb)
        self.caches.add_reporter(lambda: leveldb_stats(self.store.db, cache_mb))
        self.ids = ShortIds(self.store, self.caches)
        self.events = EventStore(self.store, self.caches)
        self.rooms = RoomStore(self.store, self.caches)
        self.snapshots = StateSnapshots(self.store, self.caches)
        self.accounts = AccountStore(self.store)
        # end-to-end encryption
        self.device_keys = DeviceKeyStore(self.store)
        self.one_time_keys = OneTimeKeyStore(self.store)
        self.cross_signing = CrossSigningStore(self.store)
        self.device_lists = DeviceListStore(self.store)
        self.to_device = ToDeviceStore(self.store)
        self.key_backup = KeyBackupStore(self.store)
        self.openid = OpenIdStore(self.store)
        self.external_ids = ExternalIdStore(self.store)
        self.oauth_clients = OAuthClientStore(self.store)
        self.registration_tokens = RegistrationTokenStore(self.store)
        self.media = MediaStore(self.store)
        self.profiles = ProfileStore(self.store)
        # sync, push, receipts, presence, account data, filters
        self.account_data = AccountDataStore(self.store)
        self.receipts = ReceiptStore(self.store, self.caches)
        self.push = PushStore(self.store)
        self.filters = FilterStore(self.store)
        self.presence = PresenceStore(self.store)
        # room service indexes
        self.relations = RelationStore(self.store)
        self.redactions = RedactionStore(self.store)
        self.search_index = SearchIndexStore(self.store)
        self.room_directory = RoomDirectoryStore(self.store)
        self.room_extras = RoomExtrasStore(self.store)
        # simplified sliding sync: rooms by activity, connections
        self.room_activity = RoomActivityStore(self.store)
        self.sliding_sync = ConnectionStore(self.store)

    @classmethod
    @contextlib.contextmanager
    def open_read_only(cls, path: str | os.PathLike[str]) -> Iterator[Database]:
        """All tables, read-only, from a snapshot of the store (works while a server runs)."""
        with Store.open_read_only(path) as store:
            yield cls(path, store=store)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
