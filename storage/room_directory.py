"""Room aliases of this server and the published room directory.

spec: client-server-api "Room aliases", "Published room directory". The directory service decides
who may change what; this module stores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import read_u64, u64
from storage.engine import Batch, Store, Table

ROOM_ALIASES = Table("room_aliases", ("str",), "json", "alias -> room id, the user who created it")
ALIASES_BY_ROOM = Table("room_alias_index", ("room", "str"), "empty", "room, alias: a room's local aliases")
PUBLISHED_ROOMS = Table("published_rooms", ("room",), "empty", "rooms published in the room directory")
TABLES = (ROOM_ALIASES, ALIASES_BY_ROOM, PUBLISHED_ROOMS)


class RoomDirectoryStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- aliases ---------------------------------------------------------------------------------

    def alias(self, alias: str) -> dict[str, Any] | None:
        raw = self.store.get(ROOM_ALIASES, alias.encode())
        return orjson.loads(raw) if raw is not None else None

    def aliases_of(self, room: int) -> list[str]:
        return [k[8:].decode() for k in self.store.keys(ALIASES_BY_ROOM, u64(room))]

    def put_alias(self, alias: str, room: int, room_id: str, creator: str, batch: Batch) -> None:
        value = {"room_id": room_id, "creator": creator}
        batch.put(ROOM_ALIASES, alias.encode(), orjson.dumps(value, option=orjson.OPT_SORT_KEYS))
        batch.put(ALIASES_BY_ROOM, u64(room) + alias.encode(), b"")

    def delete_alias(self, alias: str, room: int, batch: Batch) -> None:
        batch.delete(ROOM_ALIASES, alias.encode())
        batch.delete(ALIASES_BY_ROOM, u64(room) + alias.encode())

    # -- published rooms -------------------------------------------------------------------------

    def is_published(self, room: int) -> bool:
        return self.store.get(PUBLISHED_ROOMS, u64(room)) is not None

    def published(self) -> Iterator[int]:
        for k in self.store.keys(PUBLISHED_ROOMS):
            yield read_u64(k)

    def set_published(self, room: int, published: bool, batch: Batch) -> None:
        if published:
            batch.put(PUBLISHED_ROOMS, u64(room), b"")
        else:
            batch.delete(PUBLISHED_ROOMS, u64(room))
