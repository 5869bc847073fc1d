"""Send-to-device messages (spec: modules/send_to_device.md).

A message waits under its target device at a position on the global stream; `/sync` hands it out
(at most 100 at a time) and deletes it once a later `since` shows the client received it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from homeserver.errors import MatrixError
from homeserver.rooms.queries import RoomQueries
from storage.engine import Batch, Store
from storage.to_device import ToDeviceStore

if TYPE_CHECKING:
    from homeserver.auth.accounts import Accounts

MAX_PER_SYNC = 100
# Each message is re-sent in the recipient's /sync and, for a remote user, in a federation EDU; its
# content gets the cap of a whole event (spec: client-server-api "Size limits", 65536 bytes).
MAX_CONTENT_BYTES = 65536


def _check_content(content: Any) -> None:
    if not isinstance(content, dict):
        raise MatrixError(400, "M_BAD_JSON", "each message content must be an object")
    if len(orjson.dumps(content)) > MAX_CONTENT_BYTES:
        raise MatrixError(413, "M_TOO_LARGE", f"a to-device message content is larger than {MAX_CONTENT_BYTES} bytes")


class ToDevice:
    def __init__(
        self,
        store: Store,
        inboxes: ToDeviceStore,
        queries: RoomQueries,
        accounts: Accounts,
        *,
        notify_users: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.inboxes = inboxes
        self.queries = queries
        self.accounts = accounts
        self.notify_users = notify_users or (lambda users: None)
        # set when federation is on: (sender, event type, {user: {device: content}}) for other servers' users
        self.remote: Callable[[str, str, dict[str, dict[str, Any]]], None] | None = None

    async def send(
        self, sender: str, sender_device: str, event_type: str, txn_id: str, messages: Mapping[str, Any]
    ) -> None:
        inboxes = self.inboxes
        if inboxes.txn_seen(sender, sender_device, txn_id):
            return  # spec: the same transaction id is idempotent
        targets: set[str] = set()
        remote: dict[str, dict[str, Any]] = {}
        batch = self.store.batch()
        with batch:
            for user_id, by_device in messages.items():
                if not isinstance(by_device, dict):
                    raise MatrixError(400, "M_BAD_JSON", f"messages.{user_id} must map device ids to contents")
                if not isinstance(user_id, str) or not self.queries.is_local(user_id):
                    if self.remote is not None and isinstance(user_id, str) and ":" in user_id:
                        for content in by_device.values():
                            _check_content(content)
                        remote[user_id] = dict(by_device)
                    continue
                known = [d for d, _ in self.accounts.devices(user_id)]
                for device_id, content in by_device.items():
                    _check_content(content)
                    devices = known if device_id == "*" else [device_id] if device_id in known else []
                    for d in devices:
                        inboxes.put(user_id, d, {"sender": sender, "type": event_type, "content": content}, batch)
                        targets.add(user_id)
            inboxes.mark_txn(sender, sender_device, txn_id, batch)
            await batch.commit()
        if targets:
            self.notify_users(targets)
        if remote and self.remote is not None:
            self.remote(sender, event_type, remote)

    async def deliver_remote(self, sender: str, event_type: str, messages: Mapping[str, Any]) -> None:
        """An `m.direct_to_device` EDU from another server (its sender checked by federation): each
        message into the inboxes of our users' devices named (or all of them, for "*")."""
        targets: set[str] = set()
        batch = self.store.batch()
        with batch:
            for user_id, by_device in messages.items():
                if not isinstance(by_device, dict) or not self.queries.is_local(user_id):
                    continue
                known = [d for d, _ in self.accounts.devices(user_id)]
                for device_id, content in by_device.items():
                    if not isinstance(content, dict) or len(orjson.dumps(content)) > MAX_CONTENT_BYTES:
                        continue
                    devices = known if device_id == "*" else [device_id] if device_id in known else []
                    for d in devices:
                        self.inboxes.put(user_id, d, {"sender": sender, "type": event_type, "content": content}, batch)
                        targets.add(user_id)
            if targets:
                await batch.commit()
        if targets:
            self.notify_users(targets)

    async def for_sync(self, user_id: str, device_id: str, since: int | None, upto: int) -> list[dict[str, Any]]:
        """The messages for a sync response; first deletes those an earlier response delivered.

        Deleted are only messages at or below both `since` and the last position handed out, so a
        lost response (the client retries with an older `since`) loses nothing.
        """
        inboxes = self.inboxes
        delivered = inboxes.last_delivered(user_id, device_id)
        pending = inboxes.pending(user_id, device_id, upto, MAX_PER_SYNC + 1)
        ack = min(since, delivered) if since is not None else 0
        if ack and pending and pending[0][0] <= ack:
            batch = self.store.batch()
            with batch:
                inboxes.delete_upto(user_id, device_id, ack, batch)
                await batch.commit()
            pending = inboxes.pending(user_id, device_id, upto, MAX_PER_SYNC)
        pending = pending[:MAX_PER_SYNC]
        if pending and pending[-1][0] > delivered:
            batch = self.store.batch()
            with batch:
                inboxes.set_last_delivered(user_id, device_id, pending[-1][0], batch)
                await batch.commit()
        return [message for _, message in pending]

    def devices_deleted(self, user_id: str, device_ids: list[str], batch: Batch) -> None:
        """In the batch that deletes devices: drop the messages waiting for them."""
        for device_id in device_ids:
            self.inboxes.delete_device(user_id, device_id, batch)
