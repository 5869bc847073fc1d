"""Our media served to other servers, and other servers' media served to our clients, in-process.

spec: server-server-api "Content Repository" (GET /_matrix/federation/v1/media/download/{mediaId},
/thumbnail/{mediaId}: multipart/mixed, JSON metadata then the bytes); client-server-api
GET /_matrix/client/v1/media/download/{serverName}/{mediaId}.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from PIL import Image
from yarl import URL

from federation.multipart import boundary_of, parse_media
from federation.request_auth import authorization_header
from homeserver.media.remote import Fetched, Receive
from homeserver.protocol.signing import encode_verify_key, generate_signing_key
from storage.server_keys import ServerKeyStore, StoredKey
from tests.api.conftest import Harness

REMOTE = "remote.test"
KEY_ID, KEY = generate_signing_key("r1")


def png(w: int = 64, h: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


async def trust_remote(harness: Harness) -> None:
    batch = harness.hs.db.store.batch()
    with batch:
        ServerKeyStore(harness.hs.db.store).put(
            REMOTE, {KEY_ID: StoredKey(encode_verify_key(KEY), 2**62, None, 0)}, batch
        )
        await batch.commit()


async def fed_get(harness: Harness, path: str, *, sign: bool = True) -> tuple[int, dict[str, str], bytes]:
    raw = URL(path).raw_path_qs
    headers = {}
    if sign:
        headers["Authorization"] = authorization_header(REMOTE, "hs.test", KEY_ID, KEY, "GET", raw, None)
    resp = await harness.client.get(path, headers=headers)
    return resp.status, dict(resp.headers), await resp.read()


async def chunks_of(data: bytes) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 1000):
        yield data[i : i + 1000]


async def parts_of(headers: dict[str, str], body: bytes) -> tuple[dict[str, Any], dict[str, str], bytes]:
    parts = await parse_media(chunks_of(body), boundary_of(headers["Content-Type"]), 10**7)
    content = b"".join([c async for c in parts.content()])
    return parts.metadata, parts.headers, content


async def test_our_media_is_served_over_federation(harness: Harness) -> None:
    await trust_remote(harness)
    alice = await harness.user("alice")
    image = png()
    status, body = await harness.request(
        "POST", "/_matrix/media/v3/upload?filename=red.png", alice, data=image, headers={"Content-Type": "image/png"}
    )
    assert status == 200
    media_id = body["content_uri"].rsplit("/", 1)[1]

    status, headers, raw = await fed_get(harness, f"/_matrix/federation/v1/media/download/{media_id}")
    assert status == 200 and headers["Content-Type"].startswith("multipart/mixed")
    metadata, part, content = await parts_of(headers, raw)
    assert metadata == {} and content == image
    assert part["content-type"] == "image/png" and "red.png" in part["content-disposition"]

    path = f"/_matrix/federation/v1/media/thumbnail/{media_id}?width=32&height=32&method=scale"
    status, headers, raw = await fed_get(harness, path)
    assert status == 200
    _, part, content = await parts_of(headers, raw)
    thumb = Image.open(io.BytesIO(content))
    assert thumb.height == 32 and thumb.width < 64  # scaled down to the size asked for


async def test_federation_media_needs_a_signature_and_known_media(harness: Harness) -> None:
    await trust_remote(harness)
    status, _, _ = await fed_get(harness, "/_matrix/federation/v1/media/download/abc", sign=False)
    assert status == 401
    status, _, raw = await fed_get(harness, "/_matrix/federation/v1/media/download/nosuchmedia")
    assert status == 404 and b"M_NOT_FOUND" in raw
    status, _, raw = await fed_get(harness, "/_matrix/federation/v1/media/thumbnail/nosuchmedia")
    assert status == 400 and b"M_MISSING_PARAM" in raw


class FakeSource:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[tuple[str, str]] = []

    async def fetch(self, server_name: str, media_id: str, max_bytes: int, receive: Receive) -> Fetched | None:
        self.asked.append((server_name, media_id))
        if media_id != "there":
            return None

        async def one() -> AsyncIterable[bytes]:
            yield self.data

        return Fetched(await receive(one()), "image/png", "remote.png")


async def test_remote_media_reaches_our_clients_and_is_cached(harness: Harness) -> None:
    alice = await harness.user("alice")
    image = png(200, 100)
    source = FakeSource(image)
    repo = harness.hs.media
    harness.hs.remote_media.source = source
    assert repo.fetch_remote is not None

    status, body = await harness.request("GET", f"/_matrix/client/v1/media/download/{REMOTE}/there", alice)
    assert status == 200 and body == image
    status, body = await harness.request(
        "GET", f"/_matrix/client/v1/media/thumbnail/{REMOTE}/there?width=50&height=50&method=scale", alice
    )
    assert status == 200 and Image.open(io.BytesIO(body)).width < 200
    assert source.asked == [(REMOTE, "there")]  # fetched once, then from the cache
    status, body = await harness.request("GET", f"/_matrix/client/v1/media/download/{REMOTE}/gone", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_admins_empty_the_remote_media_cache_and_uploads_stay(harness: Harness) -> None:
    # Synapse's admin path and parameter, so admin tools made for Synapse work here
    alice, admin = await harness.user("alice"), await harness.user("root", admin=True)
    image = png(120, 80)
    source = FakeSource(image)
    _ = harness.hs.media
    assert harness.hs.remote_media is not None
    harness.hs.remote_media.source = source
    status, _body = await harness.request("GET", f"/_matrix/client/v1/media/download/{REMOTE}/there", alice)
    assert status == 200
    status, uploaded = await harness.request(
        "POST", "/_matrix/media/v3/upload", alice, data=image, headers={"Content-Type": "image/png"}
    )
    assert status == 200
    purge = "/_synapse/admin/v1/purge_media_cache"
    status, body = await harness.request("POST", f"{purge}?before_ts=1", admin)
    assert (status, body) == (200, {"deleted": 0})  # nothing was fetched that long ago
    status, body = await harness.request("POST", f"{purge}?before_ts=99999999999999", alice)
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, body = await harness.request("POST", purge, admin)
    assert (status, body["errcode"]) == (400, "M_MISSING_PARAM")
    status, body = await harness.request("POST", f"{purge}?before_ts=99999999999999", admin)
    assert (status, body) == (200, {"deleted": 1})
    # fetched again on the next ask; our own upload (the same bytes) was never touched
    status, _body = await harness.request("GET", f"/_matrix/client/v1/media/download/{REMOTE}/there", alice)
    assert status == 200 and source.asked == [(REMOTE, "there"), (REMOTE, "there")]
    media_id = uploaded["content_uri"].rsplit("/", 1)[1]
    status, body = await harness.request("GET", f"/_matrix/client/v1/media/download/hs.test/{media_id}", alice)
    assert status == 200 and body == image
