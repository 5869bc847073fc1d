"""multipart/mixed for federation media (spec: server-server-api "Content Repository"): what we
encode parses back whole however the bytes are split, and bad answers are refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from federation.multipart import (
    MultipartError,
    MultipartTooLarge,
    boundary_of,
    encode,
    new_boundary,
    parse_media,
)

PART = {"Content-Type": "image/png", "Content-Disposition": "inline; filename=a.png"}


async def _chunks(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    i = 0
    for n in sizes:
        if i >= len(data):
            break
        yield data[i : i + n]
        i += n
    if i < len(data):
        yield data[i:]


def _parse(data: bytes, boundary: str, max_bytes: int = 1 << 20, sizes: list[int] | None = None) -> tuple:
    async def go() -> tuple:
        parts = await parse_media(_chunks(data, sizes or [7]), boundary, max_bytes)
        body = b"".join([c async for c in parts.content()])
        return parts.metadata, parts.headers, parts.location, body

    return asyncio.run(go())


@settings(max_examples=200, deadline=None)
@given(body=st.binary(max_size=3000), sizes=st.lists(st.integers(1, 300), max_size=40))
def test_round_trip_whatever_the_chunking(body: bytes, sizes: list[int]) -> None:
    boundary = new_boundary()
    data = encode(boundary, {}, PART, body)
    metadata, headers, location, got = _parse(data, boundary, sizes=sizes)
    assert metadata == {}
    assert headers == {"content-type": "image/png", "content-disposition": "inline; filename=a.png"}
    assert location is None
    assert got == body


def test_body_containing_a_near_boundary_is_kept_whole() -> None:
    boundary = "abc"
    body = b"x\r\n--ab\r\n--abd--abc" + b"\r\n-"
    assert _parse(encode(boundary, {}, PART, body), boundary, sizes=[1] * 200)[3] == body


def test_location_part() -> None:
    boundary = new_boundary()
    data = encode(boundary, {}, {"Location": "https://cdn.example/x"})
    assert _parse(data, boundary)[2] == "https://cdn.example/x"


def test_preamble_and_synapse_style_layout() -> None:
    # a preamble, then the parts (Synapse writes the JSON part the same way)
    data = (
        b"ignored preamble\r\n--6067d4698f8d40a0a794ea7d7ff4d8a9\r\nContent-Type: application/json\r\n\r\n{}"
        b"\r\n--6067d4698f8d40a0a794ea7d7ff4d8a9\r\nContent-Type: text/plain\r\n\r\nhello"
        b"\r\n--6067d4698f8d40a0a794ea7d7ff4d8a9--\r\n"
    )
    assert _parse(data, "6067d4698f8d40a0a794ea7d7ff4d8a9")[3] == b"hello"


def test_content_larger_than_the_limit_is_refused() -> None:
    boundary = new_boundary()
    data = encode(boundary, {}, PART, b"x" * 1001)
    with pytest.raises(MultipartTooLarge):
        _parse(data, boundary, max_bytes=1000)
    assert _parse(encode(boundary, {}, PART, b"x" * 1000), boundary, max_bytes=1000)[3] == b"x" * 1000


def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    boundary = new_boundary()
    data = encode(boundary, {}, {**PART, "Content-Length": "5000"}, b"x")
    with pytest.raises(MultipartTooLarge):
        _parse(data, boundary, max_bytes=1000)


@pytest.mark.parametrize("declared", ["4", "6", "0"])
def test_part_lying_about_its_size_is_refused(declared: str) -> None:
    boundary = new_boundary()
    data = encode(boundary, {}, {**PART, "Content-Length": declared}, b"hello")
    with pytest.raises(MultipartError):
        _parse(data, boundary)


def test_part_telling_its_size_truly_is_accepted() -> None:
    boundary = new_boundary()
    assert _parse(encode(boundary, {}, {**PART, "Content-Length": "5"}, b"hello"), boundary)[3] == b"hello"


@pytest.mark.parametrize(
    "data",
    [
        b"",  # nothing
        b"--B\r\nContent-Type: application/json\r\n\r\n{}",  # ends inside the metadata
        b"--B\r\nContent-Type: text/plain\r\n\r\n{}\r\n--B\r\n\r\nx\r\n--B--",  # first part not JSON
        b"--B\r\nContent-Type: application/json\r\n\r\n[1]\r\n--B\r\n\r\nx\r\n--B--",  # metadata not an object
        b"--B\r\nContent-Type: application/json\r\n\r\n{x\r\n--B\r\n\r\nx\r\n--B--",  # metadata not JSON
        b"--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B--",  # no content part
        b"--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B\r\nbad header\r\n\r\nx\r\n--B--",
        b"--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B\r\n\r\nxyz",  # never closed
        b"--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B\r\n\r\nx\r\n--B\r\n\r\ny\r\n--B--",  # 3 parts
        b"--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B\r\nContent-Length: x\r\n\r\nx\r\n--B--",
    ],
)
def test_malformed_answers_are_refused(data: bytes) -> None:
    with pytest.raises(MultipartError):
        _parse(data, "B")


def test_endless_headers_and_preamble_are_bounded() -> None:
    with pytest.raises(MultipartError):
        _parse(b"x" * 100_000, "B")
    data = b"--B\r\nContent-Type: application/json\r\n\r\n{}\r\n--B\r\nX: " + b"a" * 100_000
    with pytest.raises(MultipartError):
        _parse(data, "B")


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ("multipart/mixed; boundary=abc", "abc"),
        ('multipart/mixed; charset=x; boundary="a b"', "a b"),
        ("Multipart/Mixed;boundary=6067d4698f8d40a0", "6067d4698f8d40a0"),
    ],
)
def test_boundary_of(header: str, boundary: str) -> None:
    assert boundary_of(header) == boundary


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "application/json",
        "multipart/mixed",
        "multipart/mixed; boundary=",
        "multipart/mixed; boundary=" + "a" * 71,
    ],
)
def test_boundary_of_refuses(header: str | None) -> None:
    with pytest.raises(MultipartError):
        boundary_of(header)
