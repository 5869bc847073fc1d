"""The full-text index of room events: token -> (room, timeline order) postings.

A key per (token, room, order) lets a query scan the tokens that start with a term and keep the
rooms a user may search. The search service tokenises and ranks; this module stores postings.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Final

from storage.batch_view import Reader
from storage.codec import SEP, read_u64, u64
from storage.engine import Batch, Table

SEARCH_POSTINGS = Table(
    "search_postings",
    ("str", "room", "order"),
    "search_posting",
    "token, room, order -> event, field (1 body, 2 name, 3 topic), occurrences",
)
TABLES = (SEARCH_POSTINGS,)

_POSTING = struct.Struct(">QBH")  # short event id, field, occurrences


class Posting:
    __slots__ = ("count", "event", "field", "order", "room", "token")

    token: Final[str]
    room: Final[int]
    order: Final[int]
    event: Final[int]
    field: Final[int]
    count: Final[int]

    def __init__(self, token: str, room: int, order: int, event: int, field: int, count: int) -> None:
        self.token = token
        self.room = room
        self.order = order
        self.event = event
        self.field = field
        self.count = count


class SearchIndexStore:
    def __init__(self, reader: Reader) -> None:
        self.reader = reader

    def scan(self, term_prefix: str) -> Iterator[Posting]:
        """Postings of every token starting with `term_prefix`."""
        for k, v in self.reader.iterate(SEARCH_POSTINGS, term_prefix.encode()):
            cut = k.find(SEP)
            if cut < 0 or len(k) != cut + 17:
                continue
            event, field, count = _POSTING.unpack(v)
            yield Posting(k[:cut].decode(), read_u64(k, cut + 1), read_u64(k, cut + 9), event, field, count)

    def put_event(self, batch: Batch, tokens: dict[str, int], room: int, order: int, event: int, field: int) -> None:
        """The postings of one event: token -> occurrences. Written straight to the batch (nothing in
        the same batch reads them back; a later delete in the batch still applies after them)."""
        where = SEP + u64(room) + u64(order)
        for token, count in tokens.items():
            batch.put(SEARCH_POSTINGS, token.encode() + where, _POSTING.pack(event, field, min(count, 0xFFFF)))

    def delete_event(self, batch: Batch, tokens: Iterable[str], room: int, order: int) -> None:
        where = SEP + u64(room) + u64(order)
        for token in tokens:
            batch.delete(SEARCH_POSTINGS, token.encode() + where)
