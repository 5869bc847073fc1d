"""Reading the body of an outgoing HTTP request's answer up to a cap.

`StreamReader.read(n)` answers with what is buffered, at most `n` bytes, and often fewer: one
network chunk. Reading once with `limit + 1` therefore cuts large bodies short without noticing
that they were too large. This reads until the end or until more than `limit` bytes came.
"""

from __future__ import annotations

import aiohttp


async def read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    """The whole body when it has at most `limit` bytes; otherwise `limit + 1` bytes of it (so that
    the caller sees it was too large) and the rest is left unread."""
    parts: list[bytes] = []
    total = 0
    while total <= limit:
        chunk = await stream.read(limit + 1 - total)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)
