"""`multipart/mixed` as federation media uses it (spec: server-server-api "Content Repository",
GET /_matrix/federation/v1/media/download/{mediaId}): exactly two parts, the first JSON metadata
(an object, `{}` today), the second the bytes (with `Content-Type` and `Content-Disposition`) or a
`Location` header to fetch them from.

Encoding is two pieces of bytes around the content, so a file can be streamed between them.
Parsing is streaming too: the second part's bytes are handed on as they come, never held whole,
and the parse fails (`MultipartError`) on anything malformed, on a part whose `Content-Length`
does not match its bytes, and past a size limit.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

import orjson

HEADERS_LIMIT = 16 * 1024  # one part's header block
METADATA_LIMIT = 64 * 1024  # the JSON part
PREAMBLE_LIMIT = 1024
_BOUNDARY_RE = re.compile(r"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")  # RFC 2046 bchars


class MultipartError(Exception):
    """The multipart answer is malformed or lies about itself."""


class MultipartTooLarge(MultipartError):
    """The content part is larger than allowed."""


def new_boundary() -> str:
    return secrets.token_hex(16)


def _headers(headers: Mapping[str, str]) -> bytes:
    return b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())


def encode_head(boundary: str, metadata: Mapping[str, Any], part_headers: Mapping[str, str]) -> bytes:
    """Everything before the content bytes: the JSON part, then the second part's headers."""
    b = boundary.encode()
    return (
        b"--" + b + b"\r\nContent-Type: application/json\r\n\r\n" + orjson.dumps(dict(metadata)) + b"\r\n"
        b"--" + b + b"\r\n" + _headers(part_headers) + b"\r\n"
    )


def encode_tail(boundary: str) -> bytes:
    return b"\r\n--" + boundary.encode() + b"--\r\n"


def encode(boundary: str, metadata: Mapping[str, Any], part_headers: Mapping[str, str], body: bytes = b"") -> bytes:
    """The whole answer at once (a `Location` part has an empty body)."""
    return encode_head(boundary, metadata, part_headers) + body + encode_tail(boundary)


def boundary_of(content_type: str | None) -> str:
    """The boundary of a `multipart/mixed` Content-Type; MultipartError for anything else."""
    if not content_type:
        raise MultipartError("no Content-Type")
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/mixed":
        raise MultipartError(f"Content-Type is {kind.strip()!r}, not multipart/mixed")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not _BOUNDARY_RE.match(value) or value.endswith(" "):
                raise MultipartError("invalid boundary")
            return value
    raise MultipartError("multipart/mixed without a boundary")


def parse_headers(block: bytes) -> dict[str, str]:
    """A part's header block (lower-cased names)."""
    out: dict[str, str] = {}
    if not block:
        return out
    for line in block.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep or not name.strip() or name != name.strip():
            raise MultipartError("malformed part header")
        try:
            out[name.decode("ascii").lower()] = value.strip().decode("utf-8")
        except UnicodeDecodeError:
            raise MultipartError("part header is not text") from None
    return out


class _Reader:
    def __init__(self, chunks: AsyncIterable[bytes]) -> None:
        self._it = chunks.__aiter__()
        self.buf = bytearray()

    async def _more(self) -> bool:
        try:
            chunk = await self._it.__anext__()
        except StopAsyncIteration:
            return False
        self.buf += chunk
        return True

    async def need(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._more():
                raise MultipartError("the answer ends early")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def until(self, delim: bytes, limit: int, what: str) -> bytes:
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + len(delim)]
                return out
            if len(self.buf) > limit + len(delim):
                raise MultipartError(f"{what} is longer than {limit} bytes")
            start = max(0, len(self.buf) - len(delim) + 1)
            if not await self._more():
                raise MultipartError(f"the answer ends inside {what}")

    async def stream_until(self, delim: bytes) -> AsyncIterator[bytes]:
        keep = len(delim) - 1
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                if i:
                    yield bytes(self.buf[:i])
                del self.buf[: i + len(delim)]
                return
            if len(self.buf) > keep:
                yield bytes(self.buf[:-keep])
                del self.buf[:-keep]
            if not await self._more():
                raise MultipartError("the answer ends inside the content")


class MediaParts:
    """The parsed head of an answer: metadata, the second part's headers, then `content()`."""

    def __init__(
        self, reader: _Reader, boundary: bytes, metadata: dict[str, Any], headers: dict[str, str], max_bytes: int
    ) -> None:
        self._reader = reader
        self._boundary = boundary
        self.metadata = metadata
        self.headers = headers
        self.max_bytes = max_bytes
        self.location = headers.get("location")
        length = headers.get("content-length")
        self.declared: int | None = None
        if length is not None:
            if not length.isdigit():
                raise MultipartError("invalid Content-Length in a part")
            self.declared = int(length)
            if self.declared > max_bytes:
                raise MultipartTooLarge(f"the content is {self.declared} bytes, more than {max_bytes}")

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    async def content(self) -> AsyncIterator[bytes]:
        """The second part's bytes as they arrive; raises at the end if the answer lied or ended badly."""
        size = 0
        async for chunk in self._reader.stream_until(b"\r\n--" + self._boundary):
            size += len(chunk)
            if size > self.max_bytes:
                raise MultipartTooLarge(f"the content is larger than {self.max_bytes} bytes")
            if self.declared is not None and size > self.declared:
                raise MultipartError("the part is longer than its Content-Length")
            yield chunk
        if self.declared is not None and size != self.declared:
            raise MultipartError(f"the part has {size} bytes, its Content-Length says {self.declared}")
        if await self._reader.need(2) != b"--":
            raise MultipartError("more than two parts")


async def parse_media(chunks: AsyncIterable[bytes], boundary: str, max_bytes: int) -> MediaParts:
    """Read the metadata part and the second part's headers; the bytes follow through `content()`."""
    b = boundary.encode()
    reader = _Reader(chunks)
    # the first delimiter may open the body or follow a preamble (and its CRLF)
    first = await reader.need(len(b) + 2)
    if first != b"--" + b:
        reader.buf[:0] = first
        await reader.until(b"\r\n--" + b, PREAMBLE_LIMIT, "the preamble")
    metadata_headers = await _part_headers(reader)
    kind = metadata_headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise MultipartError("the first part is not application/json")
    raw = await reader.until(b"\r\n--" + b, METADATA_LIMIT, "the metadata part")
    try:
        metadata = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MultipartError("the metadata part is not JSON") from None
    if not isinstance(metadata, dict):
        raise MultipartError("the metadata part is not a JSON object")
    if await reader.need(2) == b"--":
        raise MultipartError("the answer has no content part")
    reader.buf[:0] = b"\r\n"
    headers = await _part_headers(reader)
    return MediaParts(reader, b, metadata, headers, max_bytes)


async def _part_headers(reader: _Reader) -> dict[str, str]:
    """After a delimiter: its line end, then the header block up to the blank line."""
    if await reader.need(2) != b"\r\n":
        raise MultipartError("malformed delimiter line")
    head = await reader.need(2)
    if head == b"\r\n":
        return {}  # a part without headers
    reader.buf[:0] = head
    return parse_headers(await reader.until(b"\r\n\r\n", HEADERS_LIMIT, "a part's headers"))
