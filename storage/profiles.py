"""User profiles: one JSON object of fields (displayname, avatar_url, m.tz, custom keys) per local user.

The profile service decides what goes in; this module stores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.engine import Batch, Store, Table

PROFILES = Table("profiles", ("str",), "json", "user id -> profile fields (displayname, avatar_url, m.tz, custom)")
TABLES = (PROFILES,)


class ProfileStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, user_id: str) -> dict[str, Any] | None:
        raw = self.store.get(PROFILES, user_id.encode())
        return orjson.loads(raw) if raw is not None else None

    def put(self, user_id: str, profile: dict[str, Any], batch: Batch) -> None:
        batch.put(PROFILES, user_id.encode(), orjson.dumps(profile, option=orjson.OPT_SORT_KEYS))

    def all(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for k, v in self.store.iterate(PROFILES):
            yield k.decode(), orjson.loads(v)
