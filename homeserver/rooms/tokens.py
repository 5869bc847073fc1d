"""Pagination tokens of the room endpoints, and how they meet the sync tokens.

Two kinds, both opaque to clients:

- `s<stream>` — a position on the global stream (what `/sync` hands out as `next_batch`, and as
  `prev_batch` for a timeline whose first event is at stream position N: `s<N-1>`). Everything at or
  below `<stream>` is before the position.
- `t<n>` — a position in a room's timeline: events whose timeline order is at or below
  `LIVE_BASE + n` are before it. Live events have order `LIVE_BASE + stream`, so `t123` and `s123`
  name the same place; backfilled events sort below `LIVE_BASE` and give negative `n`.

`/messages`, `/context`, `/relations`, `/members?at=` accept both kinds (spec: GET /messages "from":
a `prev_batch`/`next_batch` from `/sync` or an `end` from `/messages`). A sync token may carry more
after an underscore (`s123_…`); only the stream position is read here.
"""

from __future__ import annotations

import re

from homeserver.errors import MatrixError
from storage.events import BACKFILLED, EventMeta
from storage.rooms import LIVE_BASE

_TOKEN = re.compile(r"([st])(-?[0-9]{1,20})(?:_.*)?", re.DOTALL)
_MAX_ORDER = 2**64 - 2  # readers scan up to `order + 1`, which must still fit a u64
# The largest stream position or counter a client may name: positions are stored as u64 and
# readers scan up to `position + 1`, and no stream gets anywhere near 2^63.
MAX_COUNTER = 2**63 - 1
_COUNTER_DIGITS = len(str(MAX_COUNTER))


def order_of(meta: EventMeta) -> int:
    """The timeline order of a stored timeline event (`TIMELINE` table key)."""
    if meta.flags & BACKFILLED:
        return meta.stream
    return live_order(meta.stream)


def live_order(stream: int) -> int:
    """The timeline order of stream position `stream`: where a live event sent at that position
    sits. Every backfilled event sorts below every live one."""
    return LIVE_BASE + stream


def stream_of(order: int) -> int | None:
    """The stream position of a live timeline order; None for a backfilled order, which has none."""
    return order - LIVE_BASE if order >= LIVE_BASE else None


def relative_order(order: int) -> int:
    """A timeline order as a signed number: the stream position of a live event, below zero for a
    backfilled one (what search tokens and `inspect` show)."""
    return order - LIVE_BASE


def from_relative(number: int) -> int:
    """The timeline order `relative_order` gave `number` for."""
    return LIVE_BASE + number


def position_token(order: int) -> str:
    """A timeline position: everything with order <= `order` is before it."""
    return f"t{order - LIVE_BASE}"


def before_token(order: int) -> str:
    """The position just before the event at `order` (a `prev_batch` for a timeline starting there)."""
    return position_token(order - 1)


def stream_token(stream: int) -> str:
    """A global stream position, as sync hands it out."""
    return f"s{stream}"


def parse_position(token: str, name: str = "from") -> int:
    """The timeline order a `t…` or `s…` token stands for; 400 `M_INVALID_PARAM` if it is neither."""
    m = _TOKEN.fullmatch(token)
    if m is None:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} is not a pagination token this server issued")
    kind, value = m.group(1), int(m.group(2))
    order = live_order(value)
    if (kind == "s" and value < 0) or not 0 <= order <= _MAX_ORDER:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} is out of range")
    return order


def parse_stream_token(token: str, name: str = "since") -> int:
    """The stream position of an `s…` token (sync, /events, /keys/changes); 400 `M_INVALID_PARAM`
    otherwise, also for a position no stream reaches (above MAX_COUNTER)."""
    m = _TOKEN.fullmatch(token)
    if m is None or m.group(1) != "s":
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} is not a stream token this server issued")
    value = int(m.group(2))
    if not 0 <= value <= MAX_COUNTER:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} is out of range")
    return value


def parse_counter(text: str) -> int | None:
    """The number in the numeric part of a token or id this server hands out (an offset, a
    notification position, a backup version, a filter id): ASCII digits only (`str.isdigit` also
    takes "²", which `int` refuses) and at most MAX_COUNTER, or None. Callers answer None with
    their own 400 or 404."""
    if not 0 < len(text) <= _COUNTER_DIGITS or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value <= MAX_COUNTER else None
