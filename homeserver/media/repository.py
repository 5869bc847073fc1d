"""The media repository service: uploads (direct and `create` + `PUT`), downloads, thumbnails.

spec: content_repo. Files are content-addressed (`files.py`); one metadata row per media id
(`storage/media.py`), written in one batch after the file is on disk.

Remote media (another server's `mxc://`) goes through `fetch_remote`, which federation sets;
until then it is 404 `M_NOT_FOUND`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from homeserver.errors import MatrixError, not_found
from homeserver.media import thumbnails
from homeserver.media.files import MediaFiles, TooLarge
from homeserver.media.headers import media_type
from homeserver.media.mxc import check_media_path, mxc_uri, new_media_id
from storage.database import Database

log = logging.getLogger(__name__)

# spec: POST /media/v1/create — recommended expiry of unused ids is 24 hours
UNUSED_ID_LIFETIME_MS = 24 * 3600 * 1000
MAX_PENDING_PER_USER = 10
# spec: timeout_ms defaults to 20 s and the server SHOULD cap it
DEFAULT_WAIT_MS = 20_000
MAX_WAIT_MS = 60_000
MAX_THUMBNAIL_SOURCE_BYTES = 64 * 1024 * 1024
MAX_FILENAME_BYTES = 255


class StoredMedia:
    __slots__ = ("content_type", "created_ts", "filename", "media_id", "origin", "path", "sha256", "size")

    origin: Final[str]
    media_id: Final[str]
    content_type: Final[str]
    filename: Final[str | None]
    size: Final[int]
    sha256: Final[str]
    path: Final[Path]
    created_ts: Final[int]

    def __init__(
        self,
        origin: str,
        media_id: str,
        content_type: str,
        filename: str | None,
        size: int,
        sha256: str,
        path: Path,
        created_ts: int,
    ) -> None:
        self.origin = origin
        self.media_id = media_id
        self.content_type = content_type
        self.filename = filename
        self.size = size
        self.sha256 = sha256
        self.path = path
        self.created_ts = created_ts


class Thumbnail:
    __slots__ = ("content_type", "path")

    path: Final[Path]
    content_type: Final[str]

    def __init__(self, path: Path, content_type: str) -> None:
        self.path = path
        self.content_type = content_type


# (server name, media id) -> the media, fetched and cached; set by federation.
RemoteFetcher = Callable[[str, str], Awaitable[StoredMedia | None]]


def check_filename(filename: str | None) -> str | None:
    if filename is None or filename == "":
        return None
    if len(filename.encode()) > MAX_FILENAME_BYTES or any(ord(c) < 0x20 or ord(c) == 0x7F for c in filename):
        raise MatrixError(400, "M_INVALID_PARAM", "filename must be at most 255 bytes without control characters")
    return filename


class MediaRepository:
    def __init__(
        self,
        db: Database,
        files: MediaFiles,
        server_name: str,
        *,
        max_upload_size: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.files = files
        self.server_name = server_name
        self.max_upload_size = max_upload_size
        self.clock = clock
        self.fetch_remote: RemoteFetcher | None = None
        # spec: content_repo "freeze" — the unauthenticated endpoints serve only media created
        # before this time (ms). This server was born after the freeze: nothing.
        self.unauthenticated_before_ms = 0
        self._arrived: dict[str, asyncio.Event] = {}  # media id -> set when its pending upload lands
        self._uploading: set[str] = set()
        self._thumbnailing: dict[Path, asyncio.Future[bytes | None]] = {}

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- uploads ---------------------------------------------------------------------------------

    def _check_declared_size(self, content_length: int | None) -> None:
        if content_length is not None and content_length > self.max_upload_size:
            raise self._too_large()

    def _too_large(self) -> MatrixError:
        return MatrixError(413, "M_TOO_LARGE", f"Cannot upload files larger than {self.max_upload_size} bytes")

    async def _receive(self, chunks: AsyncIterable[bytes], content_length: int | None) -> tuple[str, int]:
        self._check_declared_size(content_length)
        try:
            stored = await self.files.receive(chunks, self.max_upload_size)
        except TooLarge:
            raise self._too_large() from None
        return stored.sha256, stored.size

    def _record(self, user_id: str, content_type: str, filename: str | None, sha256: str, size: int) -> dict[str, Any]:
        record: dict[str, Any] = {
            "content_type": content_type,
            "size": size,
            "sha256": sha256,
            "uploader": user_id,
            "created_ts": self._now_ms(),
        }
        if filename is not None:
            record["filename"] = filename
        return record

    async def upload(
        self,
        user_id: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        filename: str | None,
        content_length: int | None,
    ) -> str:
        """Store an upload and return its `mxc://` URI."""
        filename = check_filename(filename)
        sha256, size = await self._receive(chunks, content_length)
        media_id = new_media_id()
        batch = self.db.store.batch()
        with batch:
            record = self._record(user_id, content_type, filename, sha256, size)
            self.db.media.put(self.server_name, media_id, record, batch)
            await batch.commit()
        return mxc_uri(self.server_name, media_id)

    async def create(self, user_id: str) -> tuple[str, int]:
        """A new `mxc://` URI to upload to later, and when it expires (ms). spec: POST /media/v1/create."""
        now = self._now_ms()
        live = [m for m, expires in self.db.media.pending(user_id) if expires > now]
        if len(live) >= MAX_PENDING_PER_USER:
            # spec: limit concurrent pending uploads with 429 M_LIMIT_EXCEEDED
            raise MatrixError(429, "M_LIMIT_EXCEEDED", f"at most {MAX_PENDING_PER_USER} pending uploads at a time")
        media_id = new_media_id()
        expires_at = now + UNUSED_ID_LIFETIME_MS
        batch = self.db.store.batch()
        with batch:
            for m, expires in self.db.media.pending(user_id):
                if expires <= now:  # forget expired ids as we go
                    self.db.media.delete_pending(user_id, m, batch)
                    self.db.media.delete(self.server_name, m, batch)
            record = {"pending": True, "uploader": user_id, "created_ts": now, "expires_at": expires_at}
            self.db.media.put(self.server_name, media_id, record, batch)
            self.db.media.put_pending(user_id, media_id, expires_at, batch)
            await batch.commit()
        return mxc_uri(self.server_name, media_id), expires_at

    async def upload_to(
        self,
        user_id: str,
        server_name: str,
        media_id: str,
        chunks: AsyncIterable[bytes],
        *,
        content_type: str,
        filename: str | None,
        content_length: int | None,
    ) -> None:
        """Fill an id made by `create`. spec: PUT /media/v3/upload/{serverName}/{mediaId}."""
        check_media_path(server_name, media_id)
        filename = check_filename(filename)
        record = self.db.media.get(server_name, media_id) if server_name == self.server_name else None
        if record is None or (record.get("pending") and record["expires_at"] <= self._now_ms()):
            raise not_found("Unknown media ID (not created with /media/v1/create, or expired)")
        if record["uploader"] != user_id:
            raise MatrixError(403, "M_FORBIDDEN", "this media ID was created by another user")
        if not record.get("pending") or media_id in self._uploading:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
        self._uploading.add(media_id)
        try:
            sha256, size = await self._receive(chunks, content_length)
            current = self.db.media.get(server_name, media_id)
            if current is None or not current.get("pending"):
                raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
            batch = self.db.store.batch()
            with batch:
                final = self._record(user_id, content_type, filename, sha256, size)
                self.db.media.put(server_name, media_id, final, batch)
                self.db.media.delete_pending(user_id, media_id, batch)
                await batch.commit()
        finally:
            self._uploading.discard(media_id)
        arrived = self._arrived.pop(media_id, None)
        if arrived is not None:
            arrived.set()

    # -- downloads -------------------------------------------------------------------------------

    async def get(
        self,
        server_name: str,
        media_id: str,
        *,
        timeout_ms: int | None = None,
        allow_remote: bool = True,
        authenticated: bool = True,
    ) -> StoredMedia:
        """The media behind an `mxc://` URI, waiting up to `timeout_ms` for a pending upload.

        Raises 404 `M_NOT_FOUND` (unknown, expired, remote without federation, or frozen for the
        unauthenticated endpoints) and 504 `M_NOT_YET_UPLOADED`.
        """
        check_media_path(server_name, media_id)
        if server_name != self.server_name:
            media = await self._remote(server_name, media_id, allow_remote)
        else:
            if not authenticated:
                record = self.db.media.get(self.server_name, media_id)
                if record is not None and record.get("created_ts", 0) >= self.unauthenticated_before_ms:
                    raise self._frozen()
            media = await self._local(media_id, timeout_ms)
        if not authenticated and media.created_ts >= self.unauthenticated_before_ms:
            raise self._frozen()
        return media

    @staticmethod
    def _frozen() -> MatrixError:
        return not_found("Not found: this media is served only by the authenticated /_matrix/client/v1/media API")

    async def _remote(self, server_name: str, media_id: str, allow_remote: bool) -> StoredMedia:
        if not allow_remote or self.fetch_remote is None:
            raise not_found("Remote media is not available")
        media = await self.fetch_remote(server_name, media_id)
        if media is None:
            raise not_found("Not found")
        return media

    async def _local(self, media_id: str, timeout_ms: int | None) -> StoredMedia:
        record = self.db.media.get(self.server_name, media_id)
        if record is not None and record.get("pending"):
            record = await self._wait_for_upload(media_id, record, timeout_ms)
        if record is None:
            raise not_found("Not found")
        path = self.files.content_path(record["sha256"])
        if not await asyncio.get_running_loop().run_in_executor(None, path.is_file):
            log.error("media %s: its file %s is missing", media_id, path)
            raise not_found("Not found")
        return StoredMedia(
            self.server_name,
            media_id,
            record.get("content_type") or "application/octet-stream",
            record.get("filename"),
            int(record["size"]),
            record["sha256"],
            path,
            int(record.get("created_ts", 0)),
        )

    async def _wait_for_upload(
        self, media_id: str, record: dict[str, Any], timeout_ms: int | None
    ) -> dict[str, Any] | None:
        if record["expires_at"] <= self._now_ms():
            return None
        wait_ms = min(DEFAULT_WAIT_MS if timeout_ms is None else timeout_ms, MAX_WAIT_MS)
        arrived = self._arrived.setdefault(media_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), wait_ms / 1000)
        current = self.db.media.get(self.server_name, media_id)
        if current is not None and current.get("pending"):
            # spec: 504 M_NOT_YET_UPLOADED once the client's wait is over
            raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
        return current

    # -- thumbnails ------------------------------------------------------------------------------

    async def thumbnail(
        self,
        server_name: str,
        media_id: str,
        *,
        width: int,
        height: int,
        method: str,
        animated: bool,
        timeout_ms: int | None = None,
        allow_remote: bool = True,
        authenticated: bool = True,
    ) -> StoredMedia | Thumbnail:
        """A thumbnail (cached on disk), or the media itself when it already fits the request."""
        if width < 1 or height < 1:
            raise MatrixError(400, "M_INVALID_PARAM", "width and height must be positive integers")
        if method not in ("crop", "scale"):
            raise MatrixError(400, "M_INVALID_PARAM", "method must be crop or scale")
        media = await self.get(
            server_name,
            media_id,
            timeout_ms=timeout_ms,
            allow_remote=allow_remote,
            authenticated=authenticated,
        )
        source_type = media_type(media.content_type)
        if source_type not in thumbnails.THUMBNAILABLE_TYPES:
            raise MatrixError(400, "M_UNKNOWN", "Cannot generate thumbnails for the requested content")
        if media.size > MAX_THUMBNAIL_SOURCE_BYTES:
            raise MatrixError(413, "M_TOO_LARGE", "Content is too large to thumbnail")
        spec = thumbnails.choose_spec(width, height, method, animated, source_type)
        target = self.files.thumbnail_path(media.sha256, spec.file_name)
        original_marker = target.with_name(target.name + ".original")
        loop = asyncio.get_running_loop()
        cached = await loop.run_in_executor(None, _cached_state, target, original_marker)
        if cached == "thumbnail":
            return Thumbnail(target, spec.content_type)
        if cached == "original":
            return media
        result = await self._generate_once(media.path, target, original_marker, spec)
        return media if result is None else Thumbnail(target, spec.content_type)

    async def _generate_once(
        self, source: Path, target: Path, original_marker: Path, spec: thumbnails.ThumbnailSpec
    ) -> bytes | None:
        """Generate in the executor; concurrent requests for one thumbnail share the work, and a
        client that goes away does not stop it (the next one finds it cached)."""
        running = self._thumbnailing.get(target)
        if running is None:
            loop = asyncio.get_running_loop()
            running = loop.run_in_executor(None, self._generate_and_cache, source, target, original_marker, spec)
            self._thumbnailing[target] = running

            def done(f: asyncio.Future[bytes | None]) -> None:
                self._thumbnailing.pop(target, None)
                if not f.cancelled():
                    f.exception()  # retrieved here, so an error nobody waits for is not reported twice

            running.add_done_callback(done)
        try:
            return await asyncio.shield(running)
        except thumbnails.SourceTooLarge:
            raise MatrixError(413, "M_TOO_LARGE", "Content is too large to thumbnail") from None
        except thumbnails.ThumbnailError as e:
            log.info("cannot thumbnail %s: %s", source.name, e)
            raise MatrixError(400, "M_UNKNOWN", "Cannot generate thumbnails for the requested content") from None

    def _generate_and_cache(
        self, source: Path, target: Path, original_marker: Path, spec: thumbnails.ThumbnailSpec
    ) -> bytes | None:
        data = thumbnails.generate(source, spec)
        if data is None:
            self.files.write_atomic(original_marker, b"")
        else:
            self.files.write_atomic(target, data)
        return data


def _cached_state(target: Path, original_marker: Path) -> str | None:
    if target.exists():
        return "thumbnail"
    if original_marker.exists():
        return "original"
    return None
