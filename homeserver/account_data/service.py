"""Account data (spec: modules/account_data.md, tags.md, read_markers.md).

Each write is one batch at a new position on the global stream, then wakes the user's syncs.
Writes of one user are serialised so that read-modify-write updates (tags) never lose a change.
The service owns the account data tables; everyone else (sync, push, receipts, invite blocking)
reads account data through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from homeserver.errors import MatrixError
from homeserver.locks import KeyedLock, KeyedLocks
from homeserver.notifier import Notifier
from storage.account_data import AccountDataStore
from storage.engine import Batch, Store

IGNORED_USERS = "m.ignored_user_list"
DIRECT = "m.direct"
# Every entry is re-sent in each initial /sync, so one entry (all tags of a room together, for
# m.tag) is capped: 256 KiB holds an m.direct of some four thousand rooms.
MAX_ENTRY_BYTES = 256 * 1024
# spec: modules/tags.md — "The name of a tag MUST NOT exceed 255 bytes."
MAX_TAG_BYTES = 255
# spec: account data that only the server writes (set through other endpoints)
SERVER_CONTROLLED = {
    "m.fully_read": "Cannot set m.fully_read through this API; use /read_markers",
    "m.push_rules": "Cannot set m.push_rules through this API; use /pushrules",
}


class AccountData:
    def __init__(self, data: AccountDataStore, store: Store, notifier: Notifier) -> None:
        self._data = data
        self._store = store  # for write batches and the stream counter
        self.notifier = notifier
        self._locks: KeyedLocks[str] = KeyedLocks()  # a user's lock lives only while in use
        self._ignored: dict[str, frozenset[str]] = {}
        self.ignore_listeners: list[Callable[[str], None]] = []  # called with whoever changed their list

    def add_ignore_listener(self, listener: Callable[[str], None]) -> None:
        """At wiring time: `listener` is called with a user whose ignored-users list changed."""
        self.ignore_listeners.append(listener)

    def get(self, user_id: str, data_type: str, room_id: str = "") -> dict[str, Any] | None:
        found = self._data.get(user_id, room_id, data_type)
        return found[1] if found is not None else None

    def all_of(self, user_id: str, room_id: str = "") -> list[tuple[str, dict[str, Any]]]:
        """(type, content) of every entry of the user's global account data, or of one room's."""
        return [(data_type, content) for _, data_type, content in self._data.all_of(user_id, room_id)]

    def changed(self, user_id: str, after: int, upto: int) -> list[tuple[str, str]]:
        """(room id, type) of the user's entries written at a stream position in (after, upto]; the
        room id is "" for global account data."""
        return list(self._data.changed(user_id, after, upto))

    async def set(self, user_id: str, data_type: str, content: dict[str, Any], room_id: str = "") -> int:
        """Write one entry; returns its stream position."""
        return await self.update(user_id, data_type, lambda _old: content, room_id)

    async def update(
        self,
        user_id: str,
        data_type: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any] | None],
        room_id: str = "",
    ) -> int:
        """Replace an entry with `change(old content)`; nothing is written if it returns None."""
        async with self._locks(user_id):
            new = change(self.get(user_id, data_type, room_id))
            if new is None:
                return 0
            if len(orjson.dumps(new)) > MAX_ENTRY_BYTES:
                what = "the room's tags" if data_type == "m.tag" and room_id else "account data"
                raise MatrixError(413, "M_TOO_LARGE", f"{what} would be larger than {MAX_ENTRY_BYTES} bytes")
            batch = self._store.batch()
            with batch:
                stream = batch.next_count()
                self._data.put(user_id, room_id, data_type, new, stream, batch)
                await batch.commit()
            if data_type == IGNORED_USERS and not room_id:
                self._ignored.pop(user_id, None)
                for listener in self.ignore_listeners:
                    listener(user_id)
        self.notifier.notify(users=(user_id,))
        return stream

    def ignored(self, user_id: str) -> frozenset[str]:
        """spec: modules/ignore_users.md — the users in `m.ignored_user_list`."""
        found = self._ignored.get(user_id)
        if found is None:
            users = (self.get(user_id, IGNORED_USERS) or {}).get("ignored_users")
            found = frozenset(u for u in users if isinstance(u, str)) if isinstance(users, dict) else frozenset()
            self._ignored[user_id] = found
        return found

    @staticmethod
    def check_client_writable(data_type: str, room_id: str = "") -> None:
        message = SERVER_CONTROLLED.get(data_type)
        if message is not None and (data_type == "m.fully_read" or not room_id):
            # spec: PUT account_data — 405 M_BAD_JSON for types the server controls
            raise MatrixError(405, "M_BAD_JSON", message)

    # -- tags (spec: modules/tags.md): the m.tag room account data ------------------------------

    def tags(self, user_id: str, room_id: str) -> dict[str, Any]:
        content = self.get(user_id, "m.tag", room_id) or {}
        tags = content.get("tags")
        return dict(tags) if isinstance(tags, dict) else {}

    async def set_tag(self, user_id: str, room_id: str, tag: str, body: dict[str, Any]) -> None:
        if len(tag.encode()) > MAX_TAG_BYTES:
            raise MatrixError(400, "M_INVALID_PARAM", f"a tag name must not exceed {MAX_TAG_BYTES} bytes")

        def change(old: dict[str, Any] | None) -> dict[str, Any]:
            tags = dict((old or {}).get("tags") or {})
            tags[tag] = body
            return {"tags": tags}

        await self.update(user_id, "m.tag", change, room_id)

    async def remove_tag(self, user_id: str, room_id: str, tag: str) -> None:
        def change(old: dict[str, Any] | None) -> dict[str, Any] | None:
            tags = dict((old or {}).get("tags") or {})
            if tag not in tags:
                return None
            del tags[tag]
            return {"tags": tags}

        await self.update(user_id, "m.tag", change, room_id)

    # -- room upgrades: the user's tags and direct chats follow them to the replacement room ------

    def settings_lock(self, user_id: str) -> KeyedLock[str]:
        """Held by whoever stages a change of the user's account data in a batch of their own."""
        return self._locks(user_id)

    def copy_room_settings(self, user_id: str, old_room_id: str, new_room_id: str, batch: Batch) -> None:
        """Stage, for a user joining the room that replaced another (`settings_lock` held): the old
        room's tags on the new one (tags the user already gave the new room win), and the new room in
        `m.direct` beside the old one (as Synapse does, so the direct chat stays one after an upgrade).
        spec: room upgrades "Server behaviour" — the user's personalised settings such as tags."""
        writes: list[tuple[str, str, dict[str, Any]]] = []
        old_tags = self.tags(user_id, old_room_id)
        if old_tags:
            tags = self.tags(user_id, new_room_id)
            merged = {**old_tags, **tags}
            if merged != tags:
                writes.append((new_room_id, "m.tag", {"tags": merged}))
        direct = self.get(user_id, DIRECT)
        for key, rooms in (direct or {}).items():
            if isinstance(rooms, list) and old_room_id in rooms:
                if new_room_id not in rooms:
                    writes.append(("", DIRECT, {**(direct or {}), key: [*rooms, new_room_id]}))
                break
        for room_id, data_type, content in writes:
            if len(orjson.dumps(content)) <= MAX_ENTRY_BYTES:  # else left as it is: the join stands
                self._data.put(user_id, room_id, data_type, content, batch.next_count(), batch)
        if writes:
            batch.on_commit.append(lambda: self.notifier.notify(users=(user_id,)))
