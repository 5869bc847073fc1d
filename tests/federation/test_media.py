"""Remote media fetched over federation into the cache, against a TLS peer on loopback that answers
as a server does, or lies. spec: server-server-api "Content Repository" (GET
/_matrix/federation/v1/media/download/{mediaId}), client-server-api "Content repository"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trustme
from aiohttp import web

from federation.media import FederationMediaSource, filename_of
from federation.multipart import encode
from homeserver.errors import MatrixError
from homeserver.media.files import MediaFiles
from homeserver.media.remote import RemoteMediaCache
from homeserver.protocol.signing import generate_signing_key
from storage.database import Database
from tests.federation.test_client import Peer, client

PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 500
BOUNDARY = "6067d4698f8d40a0a794ea7d7ff4d8a9"
Cached = tuple[RemoteMediaCache, MediaFiles]


class MediaPeer(Peer):
    """Answers media requests by the media id: each id is one behaviour."""

    def __init__(self, ca: trustme.CA, key: Any) -> None:
        super().__init__(ca, ["127.0.0.1"], key)
        self.hits: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        media_id = path.rsplit("/", 1)[1]
        self.hits[path] = self.hits.get(path, 0) + 1
        ctype = f"multipart/mixed; boundary={BOUNDARY}"
        part = {"Content-Type": "image/png", "Content-Disposition": "inline; filename*=utf-8''caf%C3%A9.png"}
        if "/_matrix/media/v3/download/" in path:
            if media_id == "old":
                return web.Response(body=PNG, content_type="image/png")
            return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)
        if media_id == "good" or media_id == "slow":
            if media_id == "slow":
                await asyncio.sleep(0.2)
            return web.Response(body=encode(BOUNDARY, {}, part, PNG), headers={"Content-Type": ctype})
        if media_id == "old":
            return web.json_response({"errcode": "M_UNRECOGNIZED", "error": "unknown endpoint"}, status=404)
        if media_id == "lying":
            body = encode(BOUNDARY, {}, {**part, "Content-Length": "10"}, PNG)
            return web.Response(body=body, headers={"Content-Type": ctype})
        if media_id == "huge":
            return web.Response(body=encode(BOUNDARY, {}, part, b"x" * 5000), headers={"Content-Type": ctype})
        if media_id == "notmultipart":
            return web.Response(body=PNG, content_type="image/png")
        return web.json_response({"errcode": "M_NOT_FOUND", "error": "no such media"}, status=404)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def signing() -> tuple[str, nacl.signing.SigningKey]:
    return generate_signing_key("c1")


@pytest.fixture
async def peer(ca: trustme.CA, signing: Any) -> AsyncIterator[MediaPeer]:
    p = MediaPeer(ca, signing[1].verify_key)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
async def remote_cache(tmp_path: Path, ca: trustme.CA, signing: Any) -> AsyncIterator[Cached]:
    db = Database(tmp_path / "db")
    files = MediaFiles(tmp_path / "media")
    c = client(signing, ca, ["127.0.0.0/8"])
    yield (
        RemoteMediaCache(db, files, "origin.test", FederationMediaSource(c), max_bytes=1000, cache_bytes=1500),
        files,
    )
    await c.close()
    db.close()


async def test_fetched_once_cached_and_named(peer: MediaPeer, remote_cache: Cached) -> None:
    remote, _ = remote_cache
    server = f"127.0.0.1:{peer.port}"
    results = await asyncio.gather(*(remote.get(server, "slow") for _ in range(5)))
    assert all(r is not None and r.path.read_bytes() == PNG for r in results)
    assert peer.hits == {"/_matrix/federation/v1/media/download/slow": 1}  # concurrent requests share one fetch
    again = await remote.get(server, "slow")
    assert again is not None and again.content_type == "image/png" and again.filename == "café.png"
    assert peer.hits == {"/_matrix/federation/v1/media/download/slow": 1}  # the cache answered


async def test_falls_back_to_the_legacy_path(peer: MediaPeer, remote_cache: Cached) -> None:
    remote, _ = remote_cache
    media = await remote.get(f"127.0.0.1:{peer.port}", "old")
    assert media is not None and media.path.read_bytes() == PNG and media.content_type == "image/png"
    assert any("/_matrix/media/v3/download/" in p for p in peer.hits)


async def test_unknown_media_is_none(peer: MediaPeer, remote_cache: Cached) -> None:
    remote, _ = remote_cache
    assert await remote.get(f"127.0.0.1:{peer.port}", "nothing") is None
    assert not any("/_matrix/media/v3/" in p for p in peer.hits)  # a plain 404 is not a reason to fall back


@pytest.mark.parametrize(
    ("media_id", "errcode"), [("lying", "M_UNKNOWN"), ("huge", "M_TOO_LARGE"), ("notmultipart", "M_UNKNOWN")]
)
async def test_bad_answers_are_refused_and_nothing_is_stored(
    peer: MediaPeer, remote_cache: Cached, media_id: str, errcode: str
) -> None:
    remote, files = remote_cache
    with pytest.raises(MatrixError) as err:
        await remote.get(f"127.0.0.1:{peer.port}", media_id)
    assert (err.value.status, err.value.errcode) == (502, errcode)
    assert remote.db.media.get(f"127.0.0.1:{peer.port}", media_id) is None
    assert not any(files.content_dir.rglob("*")) or all(p.is_dir() for p in files.content_dir.rglob("*"))
    assert not any(files.tmp_dir.iterdir())


async def test_cache_is_bounded_and_evictable(peer: MediaPeer, remote_cache: Cached) -> None:
    remote, _ = remote_cache
    server = f"127.0.0.1:{peer.port}"
    first = await remote.get(server, "good")
    assert first is not None
    # the same bytes under another id share the file; a third fetch takes the cache over 1500 bytes
    assert await remote.get(server, "slow") is not None
    assert await remote.get(server, "old") is not None
    assert remote.db.media.get(server, "good") is None  # the oldest went
    assert remote.db.media.get(server, "old") is not None
    count, freed = await remote.evict(before_ms=10**15)
    assert count == 2 and freed == 2 * len(PNG)
    assert not first.path.exists()


def test_filename_of() -> None:
    assert filename_of("inline; filename=a.png") == "a.png"
    assert filename_of('attachment; filename="a \\"b\\".png"') == 'a "b".png'
    assert filename_of("inline; filename*=utf-8''caf%C3%A9.png; filename=x") == "café.png"
    assert filename_of("inline") is None
    assert filename_of(None) is None
