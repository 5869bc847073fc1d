"""Media metadata: one row per media id (the bytes live in content-addressed files beside the store),
and the ids created by `POST /media/v1/create` that still wait for their upload.

The media service decides what goes in; this module stores it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Store, Table

MEDIA = Table(
    "media",
    ("str", "str"),
    "json",
    "origin server, media id -> content type, filename, size, sha256, uploader, created ts (or pending)",
)
MEDIA_PENDING = Table(
    "media_pending", ("str", "str"), "u64", "uploader, media id -> expiry (ms) of an id created but not uploaded"
)
TABLES = (MEDIA, MEDIA_PENDING)


def _key(origin: str, media_id: str) -> bytes:
    return origin.encode() + SEP + media_id.encode()


class MediaStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, origin: str, media_id: str) -> dict[str, Any] | None:
        raw = self.store.get(MEDIA, _key(origin, media_id))
        return orjson.loads(raw) if raw is not None else None

    def put(self, origin: str, media_id: str, record: dict[str, Any], batch: Batch) -> None:
        batch.put(MEDIA, _key(origin, media_id), orjson.dumps(record, option=orjson.OPT_SORT_KEYS))

    def delete(self, origin: str, media_id: str, batch: Batch) -> None:
        batch.delete(MEDIA, _key(origin, media_id))

    def all(self, origin: str | None = None) -> Iterator[tuple[str, str, dict[str, Any]]]:
        prefix = origin.encode() + SEP if origin is not None else b""
        for k, v in self.store.iterate(MEDIA, prefix):
            server, _, media_id = k.partition(SEP)
            yield server.decode(), media_id.decode(), orjson.loads(v)

    # -- ids waiting for their upload ------------------------------------------------------------

    def put_pending(self, user_id: str, media_id: str, expires_at: int, batch: Batch) -> None:
        batch.put(MEDIA_PENDING, _key(user_id, media_id), u64(expires_at))

    def delete_pending(self, user_id: str, media_id: str, batch: Batch) -> None:
        batch.delete(MEDIA_PENDING, _key(user_id, media_id))

    def pending(self, user_id: str) -> Iterator[tuple[str, int]]:
        """(media id, expiry ms) of the ids `user_id` created and has not uploaded to."""
        prefix = user_id.encode() + SEP
        for k, v in self.store.iterate(MEDIA_PENDING, prefix):
            yield k[len(prefix) :].decode(), read_u64(v)
