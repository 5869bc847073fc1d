"""Media bytes on disk, content-addressed by SHA-256: identical uploads share one file.

Layout under `<data_dir>/media`:
    content/ab/cd/abcd…         the bytes of every upload, named by their SHA-256
    thumbnails/ab/cd/abcd…/     generated thumbnails of that content (a cache: safe to delete)
    tmp/                        uploads being received; emptied at start

A file is written to tmp/, fsynced, then renamed into place (and the directory fsynced), so a
content file is either whole or absent. Metadata rows are written only after the file exists.
Blocking file work runs in the default executor, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import AsyncIterable
from pathlib import Path
from typing import BinaryIO, Final

log = logging.getLogger(__name__)

# Received chunks are gathered up to this size before a write in the executor.
_WRITE_BUFFER = 1024 * 1024


class TooLarge(Exception):
    """The stream went past the size limit."""


class StoredFile:
    __slots__ = ("deduplicated", "path", "sha256", "size")

    sha256: Final[str]
    size: Final[int]
    path: Final[Path]
    deduplicated: Final[bool]  # the same bytes were already stored

    def __init__(self, sha256: str, size: int, path: Path, deduplicated: bool) -> None:
        self.sha256 = sha256
        self.size = size
        self.path = path
        self.deduplicated = deduplicated


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flush_and_sync(f: BinaryIO) -> None:
    f.flush()
    os.fsync(f.fileno())


class MediaFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.content_dir = root / "content"
        self.thumbnail_dir = root / "thumbnails"
        self.tmp_dir = root / "tmp"
        for d in (self.content_dir, self.thumbnail_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._clean_tmp()

    def _clean_tmp(self) -> None:
        """Drop partial uploads left by a crash: nothing refers to them."""
        for f in self.tmp_dir.iterdir():
            with contextlib.suppress(OSError):
                f.unlink()

    def content_path(self, sha256: str) -> Path:
        return self.content_dir / sha256[:2] / sha256[2:4] / sha256

    def thumbnail_path(self, sha256: str, name: str) -> Path:
        return self.thumbnail_dir / sha256[:2] / sha256[2:4] / sha256 / name

    async def receive(self, chunks: AsyncIterable[bytes], max_size: int) -> StoredFile:
        """Stream `chunks` into the store, hashing as they come; `TooLarge` past `max_size` bytes.

        Never holds more than about one write buffer in memory; on any failure the partial file is removed.
        """
        loop = asyncio.get_running_loop()
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        tmp = Path(tmp_name)
        digest = hashlib.sha256()
        size = 0
        moved = False
        try:
            with os.fdopen(fd, "wb") as f:

                def write(data: bytes) -> None:
                    digest.update(data)
                    f.write(data)

                buffer: list[bytes] = []
                buffered = 0
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_size:
                        raise TooLarge()
                    buffer.append(chunk)
                    buffered += len(chunk)
                    if buffered >= _WRITE_BUFFER:
                        await loop.run_in_executor(None, write, b"".join(buffer))
                        buffer, buffered = [], 0
                if buffer:
                    await loop.run_in_executor(None, write, b"".join(buffer))
                await loop.run_in_executor(None, _flush_and_sync, f)
            sha = digest.hexdigest()
            target = self.content_path(sha)
            deduplicated = await loop.run_in_executor(None, self._place, tmp, target)
            moved = True
            return StoredFile(sha, size, target, deduplicated)
        finally:
            if not moved:
                with contextlib.suppress(OSError):
                    tmp.unlink()

    @staticmethod
    def _place(tmp: Path, target: Path) -> bool:
        """Move a finished upload to its content address; True if those bytes were already there."""
        if target.exists():
            tmp.unlink()
            return True
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        return False

    def write_atomic(self, target: Path, data: bytes) -> None:
        """Write `data` to `target` through a temporary file and a rename (call in an executor)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="write-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
