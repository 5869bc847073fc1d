"""Thumbnails over HTTP: sizes per method, serving the original, animation, caching, errors."""

from __future__ import annotations

import io

from PIL import Image

from homeserver.media.thumbnails import cropped_size, scaled_size

from .conftest import Harness, User
from .test_media import AUTHED, media_files, path_of, upload


def png(width: int, height: int, colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


def gif(width: int, height: int, frames: int) -> bytes:
    images = [Image.new("RGB", (width, height), (i * 40 % 256, 100, 200)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=80, loop=0)
    return buf.getvalue()


async def thumbnail(harness: Harness, user: User, mxc: str, query: str) -> tuple[int, str, bytes, dict[str, str]]:
    resp = await harness.client.get(f"{AUTHED}/thumbnail/{path_of(mxc)}?{query}", headers=user.headers)
    return resp.status, resp.content_type, await resp.read(), dict(resp.headers)


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        return im.size


async def test_crop_gives_the_requested_size(harness: Harness) -> None:
    alice = await harness.user("alice")
    mxc = await upload(harness, alice, png(400, 300), "image/png")
    status, ctype, data, headers = await thumbnail(harness, alice, mxc, "width=96&height=96&method=crop")
    assert status == 200 and ctype == "image/png"
    assert size_of(data) == (96, 96)
    assert headers["Content-Disposition"] == 'inline; filename="thumbnail.png"'
    assert headers["Content-Security-Policy"].startswith("sandbox;")


async def test_scale_keeps_aspect_and_covers_the_request(harness: Harness) -> None:
    alice = await harness.user("alice")
    mxc = await upload(harness, alice, png(400, 300), "image/png")
    for w, h in ((100, 50), (320, 240), (50, 100), (33, 33)):
        status, _, data, _ = await thumbnail(harness, alice, mxc, f"width={w}&height={h}&method=scale")
        assert status == 200
        tw, th = size_of(data)
        assert tw >= w and th >= h, (w, h, tw, th)  # spec: never smaller than requested
        assert tw <= 400 and th <= 300  # never upscaled
        assert abs(tw / th - 400 / 300) < 0.02  # aspect kept
        assert tw == w or th == h  # and no bigger than needed
    # method defaults to scale
    status, _, data, _ = await thumbnail(harness, alice, mxc, "width=100&height=50")
    assert status == 200 and size_of(data) == (100, 75)


async def test_jpeg_source_gives_jpeg(harness: Harness) -> None:
    alice = await harness.user("alice")
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (10, 200, 10)).save(buf, "JPEG")
    mxc = await upload(harness, alice, buf.getvalue(), "image/jpeg")
    status, ctype, data, _ = await thumbnail(harness, alice, mxc, "width=320&height=240&method=scale")
    assert status == 200 and ctype == "image/jpeg" and size_of(data) == (320, 240)


async def test_small_original_is_served_as_is(harness: Harness) -> None:
    alice = await harness.user("alice")
    original = png(40, 30)
    mxc = await upload(harness, alice, original, "image/png")
    for method in ("scale", "crop"):
        status, ctype, data, headers = await thumbnail(harness, alice, mxc, f"width=96&height=96&method={method}")
        assert status == 200 and ctype == "image/png" and data == original
        assert headers["Content-Disposition"].startswith("inline")


async def test_thumbnails_are_cached_on_disk(harness: Harness) -> None:
    alice = await harness.user("alice")
    mxc = await upload(harness, alice, png(300, 300), "image/png")
    _, _, first, _ = await thumbnail(harness, alice, mxc, "width=32&height=32&method=crop")
    cached = media_files(harness, "thumbnails")
    assert len(cached) == 1 and cached[0].read_bytes() == first
    _, _, second, _ = await thumbnail(harness, alice, mxc, "width=32&height=32&method=crop")
    assert second == first and media_files(harness, "thumbnails") == cached


async def test_animated_thumbnails(harness: Harness) -> None:
    alice = await harness.user("alice")
    mxc = await upload(harness, alice, gif(200, 100, 4), "image/gif")
    status, ctype, data, _ = await thumbnail(harness, alice, mxc, "width=64&height=64&method=crop&animated=true")
    assert status == 200 and ctype == "image/webp"
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (64, 64) and getattr(im, "n_frames", 1) == 4
    # animated=false MUST NOT be animated, even when the original would fit
    for query in ("width=64&height=64&method=crop", "width=500&height=500&method=scale&animated=false"):
        status, ctype, data, _ = await thumbnail(harness, alice, mxc, query)
        assert status == 200 and ctype == "image/png"
        with Image.open(io.BytesIO(data)) as im:
            assert getattr(im, "n_frames", 1) == 1


async def test_thumbnail_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    image = await upload(harness, alice, png(100, 100), "image/png")
    text = await upload(harness, alice, b"not an image", "text/plain")
    liar = await upload(harness, alice, b"not an image either", "image/png")
    cases = [
        (text, "width=32&height=32", 400, "M_UNKNOWN"),
        (liar, "width=32&height=32", 400, "M_UNKNOWN"),
        (image, "height=32", 400, "M_MISSING_PARAM"),
        (image, "width=abc&height=32", 400, "M_INVALID_PARAM"),
        (image, "width=0&height=32", 400, "M_INVALID_PARAM"),
        (image, "width=32&height=32&method=stretch", 400, "M_INVALID_PARAM"),
        ("mxc://hs.test/unknownMedia", "width=32&height=32", 404, "M_NOT_FOUND"),
    ]
    for mxc, query, want_status, errcode in cases:
        status, body = await harness.request("GET", f"{AUTHED}/thumbnail/{path_of(mxc)}?{query}", alice)
        assert (status, body["errcode"]) == (want_status, errcode), (mxc, query, body)
    status, body = await harness.request("GET", f"{AUTHED}/thumbnail/{path_of(image)}?width=32&height=32")
    assert status == 401


def test_size_arithmetic() -> None:
    assert scaled_size(400, 300, 100, 50) == (100, 75)
    assert scaled_size(400, 300, 50, 100) == (134, 100)
    assert scaled_size(400, 300, 800, 600) == (400, 300)  # never upscaled
    assert scaled_size(10000, 1, 32, 32) == (10000, 1)
    assert cropped_size(400, 300, 96, 96) == (96, 96)
    assert cropped_size(100, 50, 64, 64) == (50, 50)  # smaller original: the aspect, no upscaling
    assert cropped_size(50, 100, 64, 64) == (50, 50)
