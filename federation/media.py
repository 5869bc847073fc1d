"""Media across servers (spec: server-server-api "Content Repository", MSC3916).

Served: GET /_matrix/federation/v1/media/download/{mediaId} and /thumbnail/{mediaId}, for this
server's own media only, as `multipart/mixed`: a JSON metadata part (`{}`), then the bytes.

Fetched (`FederationMediaSource`, used by homeserver/media/remote.py): the same endpoint on the
media's server; a `Location` part is followed (https only, under the address policy); a server
that does not know the endpoint (`M_UNRECOGNIZED`) is asked at the legacy
`/_matrix/media/v3/download/...` instead. Every answer is read as it streams, under the size limit.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import aiohttp
import orjson
from aiohttp import web

from federation.client import FederationClient, Unreachable, path_of
from federation.multipart import (
    MultipartError,
    MultipartTooLarge,
    boundary_of,
    encode_head,
    encode_tail,
    new_boundary,
    parse_media,
)
from homeserver.api.http import Router, query_bool, query_int
from homeserver.errors import MatrixError
from homeserver.media.files import StoredFile
from homeserver.media.headers import content_disposition
from homeserver.media.remote import Fetched, Receive

if TYPE_CHECKING:
    from federation.service import Federation
    from homeserver.media.repository import MediaRepository

FED = "/_matrix/federation/v1/media"
CHUNK = 64 * 1024
READ_CHUNK = 1024 * 1024
MEDIA_TIMEOUT_S = 120.0
WAIT_MS = 20_000  # how long the remote may wait for a pending upload
ERROR_BODY_LIMIT = 64 * 1024

Authenticate = Callable[[web.Request], Awaitable[str]]


# -- serving ---------------------------------------------------------------------------------------


def register(router: Router, authenticate: Authenticate, media: Callable[[], MediaRepository]) -> None:
    """`authenticate` checks the X-Matrix header (federation/api.py) and gives the origin."""

    async def answer(request: web.Request, path: Any, content_type: str, filename: str | None) -> web.StreamResponse:
        boundary = new_boundary()
        part = {"Content-Type": content_type, "Content-Disposition": content_disposition(content_type, filename)}
        resp = web.StreamResponse(headers={"Content-Type": f"multipart/mixed; boundary={boundary}"})
        await resp.prepare(request)
        await resp.write(encode_head(boundary, {}, part))
        loop = asyncio.get_running_loop()
        f = await loop.run_in_executor(None, open, path, "rb")
        try:
            while chunk := await loop.run_in_executor(None, f.read, READ_CHUNK):
                await resp.write(chunk)
        finally:
            f.close()
        await resp.write(encode_tail(boundary))
        await resp.write_eof()
        return resp

    async def download(request: web.Request) -> web.StreamResponse:
        await authenticate(request)
        repo = media()
        found = await repo.get(
            repo.server_name, request.match_info["mediaId"], timeout_ms=query_int(request, "timeout_ms")
        )
        return await answer(request, found.path, found.content_type, found.filename)

    async def thumbnail(request: web.Request) -> web.StreamResponse:
        await authenticate(request)
        width = query_int(request, "width", minimum=1)
        height = query_int(request, "height", minimum=1)
        if width is None or height is None:
            raise MatrixError(400, "M_MISSING_PARAM", "width and height are required")
        repo = media()
        result = await repo.thumbnail(
            repo.server_name,
            request.match_info["mediaId"],
            width=width,
            height=height,
            method=request.query.get("method", "scale"),
            animated=query_bool(request, "animated", False),
            timeout_ms=query_int(request, "timeout_ms"),
        )
        return await answer(request, result.path, result.content_type, None)

    router.add("GET", f"{FED}/download/{{mediaId}}", download)
    router.add("GET", f"{FED}/thumbnail/{{mediaId}}", thumbnail)


# -- fetching --------------------------------------------------------------------------------------


def filename_of(disposition: str | None) -> str | None:
    """The file name of a Content-Disposition header (`filename*` preferred), None without one."""
    if not disposition:
        return None
    star = re.search(r"filename\*\s*=\s*(?:UTF-8|utf-8)''([^;\s]+)", disposition)
    if star:
        return unquote(star.group(1))
    plain = re.search(r'filename\s*=\s*"((?:[^"\\]|\\.)*)"|filename\s*=\s*([^;\s]+)', disposition)
    if plain:
        return (plain.group(1) or plain.group(2) or "").replace('\\"', '"') or None
    return None


async def _limited(resp: aiohttp.ClientResponse, max_bytes: int) -> AsyncIterator[bytes]:
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise MultipartTooLarge(f"the media is {resp.content_length} bytes, more than {max_bytes}")
    size = 0
    async for chunk in resp.content.iter_chunked(CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise MultipartTooLarge(f"the media is larger than {max_bytes} bytes")
        yield chunk
    if resp.content_length is not None and size != resp.content_length:
        raise MultipartError("the answer is shorter than its Content-Length")


async def _errcode(resp: aiohttp.ClientResponse) -> str | None:
    raw = b""
    async for chunk in resp.content.iter_chunked(CHUNK):
        raw += chunk
        if len(raw) > ERROR_BODY_LIMIT:
            return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    errcode = body.get("errcode") if isinstance(body, dict) else None
    return errcode if isinstance(errcode, str) else None


def _fetched(stored: StoredFile, resp: aiohttp.ClientResponse) -> Fetched:
    return Fetched(stored, resp.headers.get("Content-Type"), filename_of(resp.headers.get("Content-Disposition")))


class FederationMediaSource:
    def __init__(self, client: FederationClient) -> None:
        self.client = client

    async def fetch(self, server_name: str, media_id: str, max_bytes: int, receive: Receive) -> Fetched | None:
        try:
            return await self._fetch(server_name, media_id, max_bytes, receive)
        except MultipartTooLarge as e:
            raise MatrixError(502, "M_TOO_LARGE", f"{server_name}: {e}") from None
        except MultipartError as e:
            raise MatrixError(502, "M_UNKNOWN", f"{server_name} answered a malformed media response: {e}") from None
        except Unreachable as e:
            # the client API documents 404 for media that cannot be found; the message says why
            raise MatrixError(404, "M_NOT_FOUND", f"Not found: {server_name} could not be reached ({e})") from None
        except (aiohttp.ClientError, TimeoutError) as e:
            raise MatrixError(502, "M_UNKNOWN", f"{server_name}: the media could not be fetched: {e!r}") from None

    async def _fetch(self, server_name: str, media_id: str, max_bytes: int, receive: Receive) -> Fetched | None:
        path = path_of("_matrix", "federation", "v1", "media", "download", media_id, query={"timeout_ms": WAIT_MS})
        async with self.client.stream(server_name, path, timeout=MEDIA_TIMEOUT_S) as resp:
            if resp.status == 200:
                boundary = boundary_of(resp.headers.get("Content-Type"))
                if resp.content_length is not None and resp.content_length > max_bytes + ERROR_BODY_LIMIT:
                    raise MultipartTooLarge(f"the answer is {resp.content_length} bytes")
                parts = await parse_media(_limited(resp, max_bytes + ERROR_BODY_LIMIT), boundary, max_bytes)
                if parts.location is not None:
                    return await self._follow(parts.location, max_bytes, receive)
                stored = await receive(parts.content())
                name = filename_of(parts.headers.get("content-disposition"))
                return Fetched(stored, parts.content_type, name)
            errcode = await _errcode(resp)
            if errcode != "M_UNRECOGNIZED" and not (resp.status in (400, 404, 405) and errcode is None):
                return self._failed(server_name, resp.status, errcode)
        return await self._legacy(server_name, media_id, max_bytes, receive)

    @staticmethod
    def _failed(server_name: str, status: int, errcode: str | None) -> None:
        if status == 404:
            return None
        if status == 504 and errcode == "M_NOT_YET_UPLOADED":
            raise MatrixError(504, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
        raise MatrixError(502, "M_UNKNOWN", f"{server_name} answered {status} {errcode or ''} for the media")

    async def _follow(self, location: str, max_bytes: int, receive: Receive) -> Fetched | None:
        async with self.client.stream_url(location, timeout=MEDIA_TIMEOUT_S) as resp:
            if resp.status != 200:
                raise MatrixError(502, "M_UNKNOWN", f"the media's location answered {resp.status}")
            stored = await receive(_limited(resp, max_bytes))
            return _fetched(stored, resp)

    async def _legacy(self, server_name: str, media_id: str, max_bytes: int, receive: Receive) -> Fetched | None:
        # spec: servers without the federation endpoint are asked at the deprecated client path
        path = path_of("_matrix", "media", "v3", "download", server_name, media_id, query={"allow_remote": "false"})
        async with self.client.stream(server_name, path, timeout=MEDIA_TIMEOUT_S) as resp:
            if resp.status != 200:
                return self._failed(server_name, resp.status, await _errcode(resp))
            stored = await receive(_limited(resp, max_bytes))
            return _fetched(stored, resp)


def register_for(router: Router, fed: Federation, media: Callable[[], MediaRepository]) -> None:
    """The media routes, authenticated like every federation route."""
    from federation.api import authenticate

    async def origin(request: web.Request) -> str:
        return (await authenticate(fed, request, 0))[0]

    register(router, origin, media)
