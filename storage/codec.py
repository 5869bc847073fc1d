"""Key encoding: parts joined with 0xFF (never in UTF-8), integers as 8-byte big-endian so that byte
order is numeric order and ranges are prefix scans."""

from __future__ import annotations

import struct
from collections.abc import Callable

SEP = b"\xff"
_U64 = struct.Struct(">Q")
U64_MAX = 2**64 - 1


# the packer itself, not a function calling it: keys are built on every write and read, and a
# Python-level call per integer part was measurable on the send path
u64: Callable[[int], bytes] = _U64.pack


def read_u64(b: bytes, offset: int = 0) -> int:
    value: int = _U64.unpack_from(b, offset)[0]
    return value


def key(*parts: bytes | str | int) -> bytes:
    """Join key parts: str as UTF-8, int as u64, bytes as they are."""
    out = []
    for p in parts:
        if isinstance(p, int):
            out.append(_U64.pack(p))
        elif isinstance(p, str):
            out.append(p.encode("utf-8"))
        else:
            out.append(p)
    return SEP.join(out)


def split(k: bytes, n: int | None = None) -> list[bytes]:
    """Split a key of text parts on 0xFF (not for keys holding u64 parts, which may contain 0xFF)."""
    return k.split(SEP) if n is None else k.split(SEP, n)


def prefix_upper_bound(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix` (None: no bound)."""
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return None
    b[-1] += 1
    return bytes(b)
