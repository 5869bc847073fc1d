"""URL previews (spec: GET /_matrix/client/v1/media/preview_url): OpenGraph data of a web page,
with its image stored in the media repository as an `mxc://` URI.

Off unless `url_previews = true`: it makes this server fetch arbitrary URLs for its users. When on:
- only http(s); every address a host resolves to (and every IP literal, on every redirect hop) is
  checked against `blocked_networks` (loopback, private, link-local, … by default), and the
  connection goes only to an address that passed, so DNS tricks cannot reach internal services;
- at most `MAX_REDIRECTS` redirects, `TIMEOUT_S` seconds, `MAX_PAGE_BYTES` of HTML (the rest of a
  longer page is not read: the metadata lives in <head>), images up to `MAX_IMAGE_BYTES`;
- results are cached in memory for an hour.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterable
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from homeserver.errors import MatrixError, forbidden
from homeserver.media.headers import clean_content_type, media_type
from homeserver.media.repository import MediaRepository

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
TIMEOUT_S = 10.0
MAX_PAGE_BYTES = 1024 * 1024
MAX_IMAGE_BYTES = 10 * 1024 * 1024
CACHE_TTL_S = 3600.0
CACHE_ENTRIES = 1000
USER_AGENT = "Mozilla/5.0 (compatible; MatrixHomeserver URL preview)"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_BLOCKED_NETWORKS: tuple[IpNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "255.255.255.255/32",
        "::/128",
        "::1/128",
        "::ffff:0:0/96",
        "64:ff9b::/96",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "ff00::/8",
    )
)


class _Blocked(Exception):
    pass


class _UpstreamError(Exception):
    pass


class _BlockedAddress(OSError):
    """Raised by the resolver: every address of the host is blocked."""


class _OpenGraphParser(HTMLParser):
    """Collects <meta property|name=… content=…> and the <title> of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.title: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "meta":
            a = {k.lower(): v for k, v in attrs if v is not None}
            key = a.get("property") or a.get("name")
            content = a.get("content")
            if key and content is not None:
                self.meta.setdefault(key.strip().lower(), content.strip())
        elif tag == "title" and self.title is None:
            self._in_title = True

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title_parts.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = " ".join("".join(self._title_parts).split())


def parse_html(html: str, base_url: str) -> dict[str, Any]:
    """OpenGraph properties of a page, falling back to <title>, the description meta and Twitter cards."""
    parser = _OpenGraphParser()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # a broken page still yields what was parsed before the break
        pass
    meta = parser.meta
    og: dict[str, Any] = {k: v[:2000] for k, v in meta.items() if k.startswith("og:")}
    title = og.get("og:title") or meta.get("twitter:title") or parser.title
    if title:
        og["og:title"] = title[:2000]
    description = og.get("og:description") or meta.get("twitter:description") or meta.get("description")
    if description:
        og["og:description"] = description[:2000]
    image = og.get("og:image") or meta.get("og:image:url") or meta.get("twitter:image")
    if image:
        og["og:image"] = urljoin(base_url, image)
    for key in ("og:image:width", "og:image:height"):
        if key in og:
            try:
                og[key] = int(og[key])
            except ValueError:
                del og[key]
    return og


def _charset(content_type_header: str | None) -> str | None:
    if not content_type_header:
        return None
    for part in content_type_header.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.lower() == "charset" and v:
            return v.strip("\"' ")
    return None


class _FilteringResolver(AbstractResolver):
    """Resolves with the default resolver and keeps only addresses that are not blocked."""

    def __init__(self, allowed: Callable[[str], bool]) -> None:
        self._inner = DefaultResolver()
        self._allowed = allowed

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._allowed(r["host"])]
        if not allowed:
            raise _BlockedAddress(f"{host} resolves only to blocked addresses")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class UrlPreviewer:
    def __init__(self, repo: MediaRepository, *, enabled: bool, clock: Callable[[], float] = time.time) -> None:
        self.repo = repo
        self.enabled = enabled
        self.clock = clock
        self.blocked_networks: tuple[IpNetwork, ...] = DEFAULT_BLOCKED_NETWORKS
        self._cache: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def is_allowed_ip(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        return not any(ip in net for net in self.blocked_networks if net.version == ip.version)

    async def preview(self, user_id: str, url: str) -> dict[str, Any]:
        if not self.enabled:
            raise forbidden("URL previews are disabled on this server")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MatrixError(400, "M_INVALID_PARAM", "url must be an absolute http or https URL")
        now = self.clock()
        cached = self._cache.get(url)
        if cached is not None and cached[0] > now:
            return dict(cached[1])
        try:
            result = await asyncio.wait_for(self._preview(user_id, url), TIMEOUT_S * 2)
        except _Blocked as e:
            raise forbidden(f"URL is not allowed: {e}") from None
        except (_UpstreamError, aiohttp.ClientError, OSError, TimeoutError) as e:
            raise MatrixError(502, "M_UNKNOWN", f"Failed to fetch the URL: {e}") from None
        self._cache[url] = (now + CACHE_TTL_S, result)
        self._cache.move_to_end(url)
        while len(self._cache) > CACHE_ENTRIES:
            self._cache.popitem(last=False)
        return dict(result)

    async def _preview(self, user_id: str, url: str) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(resolver=_FilteringResolver(self.is_allowed_ip), limit=4)
        timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
            final_url, content_type, body = await self._fetch(session, url, MAX_PAGE_BYTES, truncate=True)
            kind = media_type(content_type or "")
            if kind.startswith("image/"):
                return await self._image_result(user_id, final_url, content_type or kind, body)
            if kind not in ("text/html", "application/xhtml+xml"):
                return {"og:url": final_url}
            text = body.decode(_charset(content_type) or "utf-8", errors="replace")
            og = parse_html(text, final_url)
            og.setdefault("og:url", final_url)
            image = og.pop("og:image", None)
            if isinstance(image, str):
                try:
                    image_url, image_type, image_body = await self._fetch(session, image, MAX_IMAGE_BYTES)
                except (_Blocked, _UpstreamError, aiohttp.ClientError, OSError, TimeoutError) as e:
                    log.info("preview of %s: image %s not fetched: %s", url, image, e)
                else:
                    if media_type(image_type or "").startswith("image/"):
                        og.update(await self._image_result(user_id, image_url, image_type or "", image_body, page=True))
            return og

    async def _fetch(
        self, session: aiohttp.ClientSession, url: str, limit: int, *, truncate: bool = False
    ) -> tuple[str, str | None, bytes]:
        """GET `url`, following redirects one hop at a time (each checked); at most `limit` bytes."""
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise _Blocked(f"{url} is not an http(s) URL")
            host = parts.hostname
            if _is_ip_literal(host) and not self.is_allowed_ip(host):
                raise _Blocked(f"{host} is a blocked address")
            headers = {"User-Agent": USER_AGENT, "Accept": "text/html, image/*;q=0.9, */*;q=0.5"}
            try:
                async with session.get(url, allow_redirects=False, headers=headers) as resp:
                    if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                        url = urljoin(url, resp.headers["Location"])
                        continue
                    if resp.status != 200:
                        raise _UpstreamError(f"{url} answered {resp.status}")
                    body = await _read_capped(resp.content.iter_chunked(64 * 1024), limit, truncate)
                    return str(resp.url), resp.headers.get("Content-Type"), body
            except aiohttp.ClientConnectorError as e:
                if isinstance(e.os_error, _BlockedAddress) or isinstance(e.__cause__, _BlockedAddress):
                    raise _Blocked(f"{host} resolves only to blocked addresses") from None
                raise
        raise _UpstreamError("too many redirects")

    async def _image_result(
        self, user_id: str, url: str, content_type: str, body: bytes, *, page: bool = False
    ) -> dict[str, Any]:
        mxc = await self.repo.upload(
            user_id,
            _chunks([body]),
            content_type=clean_content_type(content_type),
            filename=None,
            content_length=len(body),
        )
        out: dict[str, Any] = {
            "og:image": mxc,
            "og:image:type": media_type(content_type),
            "matrix:image:size": len(body),
        }
        size = await asyncio.get_running_loop().run_in_executor(None, _image_size, body)
        if size is not None:
            out["og:image:width"], out["og:image:height"] = size
        if not page:
            out["og:url"] = url
        return out


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def _read_capped(chunks: AsyncIterator[bytes], limit: int, truncate: bool) -> bytes:
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            if truncate:
                break
            raise _UpstreamError(f"content is larger than {limit} bytes")
    return b"".join(parts)[:limit]


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _image_size(body: bytes) -> tuple[int, int] | None:
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(body)) as im:
            return int(im.size[0]), int(im.size[1])
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None
