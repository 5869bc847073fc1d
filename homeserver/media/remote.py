"""Other servers' media, fetched once and kept (spec: client-server-api "Content repository": a
server fetches remote media for its clients and SHOULD cache it).

The fetching (federation's `/media/download`, with its fall-backs) is a `MediaSource` handed in;
this module streams its bytes into the content-addressed store under the upload size limit, writes
one metadata row (`remote: true`, `created_ts` = when fetched) and keeps the cache under
`cache_bytes` by dropping the oldest entries. Concurrent requests for the same media share one
fetch, which a client going away does not cancel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.errors import MatrixError
from homeserver.media.files import MediaFiles, StoredFile, TooLarge
from homeserver.media.headers import clean_content_type
from homeserver.media.repository import StoredMedia, check_filename
from storage.database import Database

log = logging.getLogger(__name__)

Receive = Callable[[AsyncIterable[bytes]], Awaitable[StoredFile]]


@dataclass(frozen=True)
class Fetched:
    stored: StoredFile
    content_type: str | None
    filename: str | None


class MediaSource(Protocol):
    async def fetch(self, server_name: str, media_id: str, max_bytes: int, receive: Receive) -> Fetched | None:
        """Fetch the media and pass its bytes to `receive`; None when the server says it has none.
        Raises MatrixError when the server cannot be asked or answers badly or too much."""
        ...


class RemoteMediaCache:
    def __init__(
        self,
        db: Database,
        files: MediaFiles,
        server_name: str,
        source: MediaSource,
        *,
        max_bytes: int,
        cache_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.files = files
        self.server_name = server_name
        self.source = source
        self.max_bytes = max_bytes
        self.cache_bytes = cache_bytes
        self.clock = clock
        self._fetching: dict[tuple[str, str], asyncio.Future[StoredMedia | None]] = {}
        self._total: int | None = None  # bytes cached, counted on first use

    def _media(self, server_name: str, media_id: str) -> StoredMedia | None:
        record = self.db.media.get(server_name, media_id)
        if record is None or not record.get("remote"):
            return None
        path = self.files.content_path(record["sha256"])
        if not path.is_file():
            return None
        return StoredMedia(
            server_name,
            media_id,
            record.get("content_type") or "application/octet-stream",
            record.get("filename"),
            int(record["size"]),
            record["sha256"],
            path,
            int(record.get("created_ts", 0)),
        )

    async def get(self, server_name: str, media_id: str) -> StoredMedia | None:
        cached = await asyncio.get_running_loop().run_in_executor(None, self._media, server_name, media_id)
        if cached is not None:
            return cached
        key = (server_name, media_id)
        running = self._fetching.get(key)
        if running is None:
            running = asyncio.ensure_future(self._fetch(server_name, media_id))
            self._fetching[key] = running

            def done(f: asyncio.Future[StoredMedia | None]) -> None:
                self._fetching.pop(key, None)
                if not f.cancelled():
                    f.exception()

            running.add_done_callback(done)
        return await asyncio.shield(running)

    async def _fetch(self, server_name: str, media_id: str) -> StoredMedia | None:
        async def receive(chunks: AsyncIterable[bytes]) -> StoredFile:
            try:
                return await self.files.receive(chunks, self.max_bytes)
            except TooLarge:
                raise MatrixError(502, "M_TOO_LARGE", f"the media is larger than {self.max_bytes} bytes") from None

        fetched = await self.source.fetch(server_name, media_id, self.max_bytes, receive)
        if fetched is None:
            return None
        try:
            filename = check_filename(fetched.filename)
        except MatrixError:
            filename = None  # a remote name we would not accept from our users is dropped
        record = {
            "content_type": clean_content_type(fetched.content_type),
            "size": fetched.stored.size,
            "sha256": fetched.stored.sha256,
            "created_ts": int(self.clock() * 1000),
            "remote": True,
        }
        if filename is not None:
            record["filename"] = filename
        batch = self.db.store.batch()
        with batch:
            self.db.media.put(server_name, media_id, record, batch)
            await batch.commit()
        self._count(fetched.stored.size)
        if self._total is not None and self._total > self.cache_bytes:
            await self.evict(keep_bytes=self.cache_bytes)
        return self._media(server_name, media_id)

    def _count(self, added: int) -> None:
        if self._total is None:
            self._total = sum(int(r.get("size", 0)) for _, _, r in self._remote_rows())
        else:
            self._total += added

    def _remote_rows(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(s, m, r) for s, m, r in self.db.media.all() if s != self.server_name and r.get("remote")]

    async def evict(self, *, before_ms: int | None = None, keep_bytes: int | None = None) -> tuple[int, int]:
        """Forget cached remote media fetched before `before_ms`, and then the oldest until at most
        `keep_bytes` remain; their files go unless another row uses the same bytes. (count, bytes)."""
        rows = sorted(self._remote_rows(), key=lambda row: int(row[2].get("created_ts", 0)))
        total = sum(int(r.get("size", 0)) for _, _, r in rows)
        drop = []
        for server, media_id, record in rows:
            old = before_ms is not None and int(record.get("created_ts", 0)) < before_ms
            over = keep_bytes is not None and total > keep_bytes
            if not (old or over):
                continue
            drop.append((server, media_id, record))
            total -= int(record.get("size", 0))
        if not drop:
            self._total = total
            return 0, 0
        batch = self.db.store.batch()
        with batch:
            for server, media_id, _ in drop:
                self.db.media.delete(server, media_id, batch)
            await batch.commit()
        self._total = total
        dropped = {(s, m) for s, m, _ in drop}
        in_use = {str(r.get("sha256")) for s, m, r in self.db.media.all() if (s, m) not in dropped}
        loop = asyncio.get_running_loop()
        for sha in {str(r.get("sha256")) for _, _, r in drop} - in_use:
            await loop.run_in_executor(None, self._remove_files, sha)
        freed = sum(int(r.get("size", 0)) for _, _, r in drop)
        log.info("media: %d remote media (%d bytes) dropped from the cache", len(drop), freed)
        return len(drop), freed

    def _remove_files(self, sha256: str) -> None:
        with contextlib.suppress(OSError):
            self.files.content_path(sha256).unlink()
        shutil.rmtree(self.files.thumbnail_path(sha256, "x").parent, ignore_errors=True)
