"""URL previews: off by default; when on, OpenGraph from a page served on loopback (the only address
tests fetch), its image stored as media, and the address filter that keeps internal hosts out."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from homeserver.media.preview import parse_html

from .conftest import Harness
from .test_media import AUTHED, path_of

ON = {"url_previews": True}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


PAGE = (
    """<!doctype html><html><head>
<meta charset="utf-8"><title>Fallback title</title>
<meta property="og:title" content="A &amp; B">
<meta name="description" content="Plain description">
<meta property="og:image" content="/img.png">
<meta property="og:site_name" content="Site">
</head><body>"""
    + "x" * 5000
    + "</body></html>"
)


@pytest_asyncio.fixture
async def site() -> AsyncIterator[TestServer]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=_png(), content_type="image/png")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound("/page")

    async def missing(request: web.Request) -> web.Response:
        raise web.HTTPNotFound()

    app = web.Application()
    app.router.add_get("/page", page)
    app.router.add_get("/img.png", image)
    app.router.add_get("/moved", moved)
    app.router.add_get("/missing", missing)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_previews_are_off_by_default(harness: Harness) -> None:
    alice = await harness.user("alice")
    for path in (f"{AUTHED}/preview_url", "/_matrix/media/v3/preview_url"):
        status, body = await harness.request("GET", path, alice, params={"url": "https://example.org/"})
        assert status == 403 and body["errcode"] == "M_FORBIDDEN"
        status, body = await harness.request("GET", path, params={"url": "https://example.org/"})
        assert status == 401


@pytest.mark.parametrize("harness", [ON], indirect=True)
async def test_loopback_is_blocked(harness: Harness, site: TestServer) -> None:
    alice = await harness.user("alice")
    for url in (str(site.make_url("/page")), f"http://localhost:{site.port}/page", "http://[::1]/x"):
        status, body = await harness.request("GET", f"{AUTHED}/preview_url", alice, params={"url": url})
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", (url, body)
    status, body = await harness.request("GET", f"{AUTHED}/preview_url", alice, params={"url": "ftp://x/"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = await harness.request("GET", f"{AUTHED}/preview_url", alice)
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"


@pytest.mark.parametrize("harness", [ON], indirect=True)
async def test_preview_of_a_page(harness: Harness, site: TestServer) -> None:
    alice = await harness.user("alice")
    harness.hs.url_previews.blocked_networks = ()  # this test's site is on loopback
    status, body = await harness.request(
        "GET", f"{AUTHED}/preview_url", alice, params={"url": str(site.make_url("/moved"))}
    )
    assert status == 200, body
    assert body["og:title"] == "A & B"
    assert body["og:description"] == "Plain description"
    assert body["og:site_name"] == "Site"
    assert body["og:image:type"] == "image/png"
    assert body["og:image:width"] == 48 and body["og:image:height"] == 32
    assert body["matrix:image:size"] == len(_png())
    resp = await harness.client.get(f"{AUTHED}/download/{path_of(body['og:image'])}", headers=alice.headers)
    assert resp.status == 200 and await resp.read() == _png()
    # an image URL previews as the image
    status, body = await harness.request(
        "GET", f"{AUTHED}/preview_url", alice, params={"url": str(site.make_url("/img.png"))}
    )
    assert status == 200 and body["og:image"].startswith("mxc://hs.test/")
    # upstream errors are 502
    status, body = await harness.request(
        "GET", f"{AUTHED}/preview_url", alice, params={"url": str(site.make_url("/missing"))}
    )
    assert status == 502 and body["errcode"] == "M_UNKNOWN"


def test_parse_html_fallbacks() -> None:
    og = parse_html(
        '<html><head><title> Just a\n title </title><meta name="twitter:image" content="pic.jpg">'
        '<meta property="og:image:width" content="nope"></head></html>',
        "https://example.org/dir/page",
    )
    assert og == {"og:title": "Just a title", "og:image": "https://example.org/dir/pic.jpg"}
    assert parse_html("<<<not html", "https://example.org/") == {}
