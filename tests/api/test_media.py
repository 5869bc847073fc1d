"""The content repository over HTTP: uploads, downloads, dedup, size limits, async uploads, headers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import Harness, User

pytestmark = pytest.mark.asyncio

AUTHED = "/_matrix/client/v1/media"


def media_files(harness: Harness, sub: str = "content") -> list[Path]:
    root = harness.hs.config.data_dir / "media" / sub
    return sorted(p for p in root.rglob("*") if p.is_file())


async def upload(
    harness: Harness, user: User, data: bytes, content_type: str | None = "text/plain", filename: str | None = None
) -> str:
    headers = dict(user.headers)
    if content_type is not None:
        headers["Content-Type"] = content_type
    params = {"filename": filename} if filename is not None else {}
    resp = await harness.client.post("/_matrix/media/v3/upload", data=data, headers=headers, params=params)
    body = await resp.json()
    assert resp.status == 200, body
    assert body["content_uri"].startswith("mxc://hs.test/")
    return str(body["content_uri"])


def path_of(mxc: str) -> str:
    return mxc[len("mxc://") :]


async def test_upload_then_download_is_byte_identical(harness: Harness) -> None:
    alice = await harness.user("alice")
    data = bytes(range(256)) * 1000
    mxc = await upload(harness, alice, data, "application/octet-stream", "blob.bin")
    resp = await harness.client.get(f"{AUTHED}/download/{path_of(mxc)}", headers=alice.headers)
    assert resp.status == 200
    assert await resp.read() == data
    assert resp.headers["Content-Type"] == "application/octet-stream"
    # not an inline-safe type: served as an attachment, with the upload's file name
    assert resp.headers["Content-Disposition"] == 'attachment; filename="blob.bin"'
    assert resp.headers["Content-Security-Policy"].startswith("sandbox;")
    assert resp.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


async def test_download_headers_inline_and_filenames(harness: Harness) -> None:
    alice = await harness.user("alice")
    mxc = await upload(harness, alice, b"hello", "text/plain", "notes.txt")
    resp = await harness.client.get(f"{AUTHED}/download/{path_of(mxc)}", headers=alice.headers)
    assert resp.headers["Content-Type"] == "text/plain"
    assert resp.headers["Content-Disposition"] == 'inline; filename="notes.txt"'
    # the file name in the path replaces the upload's; non-ASCII names are RFC 5987 encoded
    resp = await harness.client.get(f"{AUTHED}/download/{path_of(mxc)}/r%C3%A9sum%C3%A9.txt", headers=alice.headers)
    assert resp.status == 200
    assert resp.headers["Content-Disposition"] == "inline; filename*=utf-8''r%C3%A9sum%C3%A9.txt"
    # HTML is never inline; no filename when the upload had none
    mxc = await upload(harness, alice, b"<script>alert(1)</script>", "text/html")
    resp = await harness.client.get(f"{AUTHED}/download/{path_of(mxc)}", headers=alice.headers)
    assert resp.headers["Content-Type"] == "text/html"
    assert resp.headers["Content-Disposition"] == "attachment"
    # no Content-Type on upload: application/octet-stream
    resp = await harness.client.post(
        "/_matrix/media/v3/upload", data=b"x", headers={**alice.headers, "Content-Type": ""}
    )
    assert resp.status == 200
    mxc = (await resp.json())["content_uri"]
    resp = await harness.client.get(f"{AUTHED}/download/{path_of(mxc)}", headers=alice.headers)
    assert resp.headers["Content-Type"] == "application/octet-stream"


async def test_download_needs_a_token_and_legacy_endpoints_are_frozen(harness: Harness) -> None:
    alice = await harness.user("alice")
    mxc = await upload(harness, alice, b"hello")
    status, body = await harness.request("GET", f"{AUTHED}/download/{path_of(mxc)}")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    for v in ("v3", "r0"):
        status, body = await harness.request("GET", f"/_matrix/media/{v}/download/{path_of(mxc)}")
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"
        status, body = await harness.request("GET", f"/_matrix/media/{v}/thumbnail/{path_of(mxc)}?width=32&height=32")
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_unknown_remote_and_malformed_media(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("GET", f"{AUTHED}/download/hs.test/doesNotExist123", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"{AUTHED}/download/other.example/abcdef", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"  # a server that cannot be reached
    status, body = await harness.request("GET", f"{AUTHED}/download/hs.test/bad.id", alice)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("GET", f"{AUTHED}/download/bad_server!/abc", alice)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


async def test_identical_uploads_share_one_file(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    data = b"the same bytes " * 100
    first = await upload(harness, alice, data, "text/plain", "a.txt")
    second = await upload(harness, bob, data, "application/octet-stream", "b.bin")
    assert first != second
    files = media_files(harness)
    assert len(files) == 1 and files[0].read_bytes() == data
    # each media id keeps its own metadata
    resp = await harness.client.get(f"{AUTHED}/download/{path_of(second)}", headers=bob.headers)
    assert resp.headers["Content-Disposition"] == 'attachment; filename="b.bin"'
    record = harness.hs.db.media.get("hs.test", path_of(first).split("/")[1])
    assert record is not None
    assert record["uploader"] == alice.user_id and record["size"] == len(data) and record["filename"] == "a.txt"
    assert files[0].name == record["sha256"]


@pytest.mark.parametrize("harness", [{"max_upload_size": 2048}], indirect=True)
async def test_oversized_upload_is_refused_and_leaves_nothing(harness: Harness) -> None:
    alice = await harness.user("alice")
    # with a Content-Length: refused before reading
    status, body = await harness.request(
        "POST", "/_matrix/media/v3/upload", alice, data=b"x" * 4096, headers={"Content-Type": "text/plain"}
    )
    assert status == 413 and body["errcode"] == "M_TOO_LARGE"

    # streamed without a length: refused while streaming
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 1000

    status, body = await harness.request(
        "POST", "/_matrix/media/v3/upload", alice, data=chunks(), headers={"Content-Type": "text/plain"}
    )
    assert status == 413 and body["errcode"] == "M_TOO_LARGE"
    assert media_files(harness) == [] and media_files(harness, "tmp") == []
    assert list(harness.hs.db.media.all()) == []
    # exactly the limit is fine
    mxc = await upload(harness, alice, b"z" * 2048)
    assert mxc.startswith("mxc://")
    status, body = await harness.request("GET", f"{AUTHED}/config", alice)
    assert status == 200 and body == {"m.upload.size": 2048}


async def test_media_config_on_both_paths(harness: Harness) -> None:
    alice = await harness.user("alice")
    for path in (f"{AUTHED}/config", "/_matrix/media/v3/config"):
        status, body = await harness.request("GET", path, alice)
        assert status == 200 and body == {"m.upload.size": harness.hs.config.max_upload_size}
        status, body = await harness.request("GET", path)
        assert status == 401


async def test_upload_needs_a_token_and_a_sane_filename(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("POST", "/_matrix/media/v3/upload", data=b"x")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    status, body = await harness.request(
        "POST", "/_matrix/media/v3/upload", alice, data=b"x", params={"filename": "a\nb"}
    )
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


@pytest.mark.parametrize("harness", [{"rate_limits": {"media": {"per_second": 0.001, "burst": 2}}}], indirect=True)
async def test_uploads_are_rate_limited(harness: Harness) -> None:
    alice = await harness.user("alice")
    await upload(harness, alice, b"1")
    await upload(harness, alice, b"2")
    status, body = await harness.request("POST", "/_matrix/media/v3/upload", alice, data=b"3")
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0


# -- create + PUT (asynchronous uploads) -------------------------------------------------------------


async def create(harness: Harness, user: User) -> tuple[str, dict[str, Any]]:
    status, body = await harness.request("POST", "/_matrix/media/v1/create", user, json={})
    assert status == 200, body
    assert body["unused_expires_at"] > 0
    return path_of(body["content_uri"]), body


async def test_async_upload(harness: Harness) -> None:
    alice = await harness.user("alice")
    bob = await harness.user("bob")
    path, _ = await create(harness, alice)
    # nothing yet: the download waits at most timeout_ms, then 504
    status, body = await harness.request("GET", f"{AUTHED}/download/{path}?timeout_ms=0", alice)
    assert status == 504 and body["errcode"] == "M_NOT_YET_UPLOADED"
    # only the creator may fill it
    status, body = await harness.request(
        "PUT", f"/_matrix/media/v3/upload/{path}", bob, data=b"x", headers={"Content-Type": "text/plain"}
    )
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # a download waiting for it gets the bytes as soon as they land
    waiting = asyncio.create_task(harness.client.get(f"{AUTHED}/download/{path}?timeout_ms=10000", headers=bob.headers))
    media_id = path.split("/")[1]
    deadline = asyncio.get_running_loop().time() + 5
    while media_id not in harness.hs.media._arrived:  # the download is waiting
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    status, body = await harness.request(
        "PUT",
        f"/_matrix/media/v3/upload/{path}",
        alice,
        data=b"later bytes",
        headers={"Content-Type": "text/plain"},
        params={"filename": "later.txt"},
    )
    assert status == 200 and body == {}
    resp = await asyncio.wait_for(waiting, 10)
    assert resp.status == 200 and await resp.read() == b"later bytes"
    assert resp.headers["Content-Disposition"] == 'inline; filename="later.txt"'
    # a second upload to the same id is refused
    status, body = await harness.request("PUT", f"/_matrix/media/v3/upload/{path}", alice, data=b"again")
    assert status == 409 and body["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    # ids never created
    status, body = await harness.request("PUT", "/_matrix/media/v3/upload/hs.test/neverCreated", alice, data=b"x")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("PUT", "/_matrix/media/v3/upload/other.example/abc", alice, data=b"x")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_pending_uploads_are_limited_and_expire(harness: Harness) -> None:
    from homeserver.media import repository

    alice = await harness.user("alice")
    paths = [(await create(harness, alice))[0] for _ in range(repository.MAX_PENDING_PER_USER)]
    status, body = await harness.request("POST", "/_matrix/media/v1/create", alice, json={})
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"
    # uploading to one frees a place
    status, _ = await harness.request("PUT", f"/_matrix/media/v3/upload/{paths[0]}", alice, data=b"x")
    assert status == 200
    await create(harness, alice)
    # after expiry an id is unknown
    repo = harness.hs.media
    now = repo.clock()
    repo.clock = lambda: now + repository.UNUSED_ID_LIFETIME_MS / 1000 + 1
    status, body = await harness.request("PUT", f"/_matrix/media/v3/upload/{paths[1]}", alice, data=b"x")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = await harness.request("GET", f"{AUTHED}/download/{paths[1]}?timeout_ms=0", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    # and the expired ones no longer count against the limit
    await create(harness, alice)


@pytest.mark.parametrize("harness", [{"max_upload_size": 2048}], indirect=True)
async def test_async_upload_too_large_keeps_the_id_pending(harness: Harness) -> None:
    alice = await harness.user("alice")
    path, _ = await create(harness, alice)
    status, body = await harness.request("PUT", f"/_matrix/media/v3/upload/{path}", alice, data=b"x" * 4096)
    assert status == 413 and body["errcode"] == "M_TOO_LARGE"
    assert media_files(harness) == [] and media_files(harness, "tmp") == []
    status, body = await harness.request("PUT", f"/_matrix/media/v3/upload/{path}", alice, data=b"small")
    assert status == 200
