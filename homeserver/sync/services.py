"""Builds the sync-side services (notifier, account data, filters, push, receipts, typing, presence,
the sync handler) and connects them to the event pipeline and the E2EE service."""

from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.account_data.service import AccountData
from homeserver.ephemeral.presence import Presence
from homeserver.ephemeral.receipts import Receipts
from homeserver.ephemeral.typing import Typing
from homeserver.push.service import PushService
from homeserver.rooms.client_format import EventSerializer
from homeserver.rooms.pipeline import PersistedEvent
from homeserver.rooms.redactions import Redactions
from homeserver.rooms.relations import Relations
from homeserver.sync.filters import Filters
from homeserver.sync.handler import SyncHandler
from homeserver.sync.legacy import LegacySync
from homeserver.sync.notifier import Notifier
from homeserver.sync.rooms import RoomSync

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class SyncServices:
    def __init__(self, hs: HomeServer) -> None:
        db = hs.db
        self.db = db
        self.notifier = Notifier(db.store)
        self.account_data = AccountData(db, self.notifier)
        self.filters = Filters(db.filters, db.caches)
        self.push = PushService(db, self.notifier, hs.server_name, hs.clock)
        self.push.ignored = self.account_data.ignored
        self.account_data.ignore_listeners.append(self.push.ignores_changed)
        self.receipts = Receipts(db, self.notifier, self.push, self.account_data, hs.clock)
        self.typing = Typing(db.store, self.notifier)
        self.presence = Presence(db, self.notifier, enabled=hs.config.presence, clock=hs.clock)
        rooms_service = getattr(hs, "rooms", None)
        serializer = getattr(rooms_service, "serializer", None)
        if not isinstance(serializer, EventSerializer):
            serializer = EventSerializer(db, Relations(db), Redactions(db), hs.clock)
        self.rooms = RoomSync(db, serializer, self.push, self.receipts, self.typing, self.account_data)
        e2ee = getattr(hs, "e2ee", None)
        extensions = e2ee.sync_extensions if e2ee is not None else None
        if e2ee is not None:
            e2ee.add_listener(self.notifier.notify_users)
        self.legacy = LegacySync(db, self.notifier, serializer)
        self.handler = SyncHandler(
            db, self.notifier, self.rooms, self.account_data, self.push, self.presence, extensions
        )
        # notifications are written in the event's own batch; wake-ups once it has landed
        hs.pipeline.write_hooks.append(self.push.write_hook)
        hs.add_persisted_listener(self.on_persisted)
        self.server_name = hs.server_name

    def on_persisted(self, persisted: PersistedEvent) -> None:
        """Wake the syncs an event concerns: its room's, and the subject of a membership change."""
        room = self.db.ids.room(persisted.room_id)
        users: tuple[str, ...] = ()
        event = persisted.event
        if event.get("type") == "m.room.member" and isinstance(event.get("state_key"), str):
            users = (event["state_key"],)
        self.notifier.notify(users=users, rooms=(room,) if room is not None else ())
        sender = event.get("sender")
        if persisted.stream and isinstance(sender, str) and sender.endswith(":" + self.server_name):
            self.presence.active(sender)

    async def close(self) -> None:
        self.typing.close()
        self.notifier.close()
        await self.presence.close()
