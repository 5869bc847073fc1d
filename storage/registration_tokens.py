"""Registration tokens: who may register (spec: client-server-api "Token-authenticated registration").

One JSON record per token. Pending uses are kept inside the record as `{session id: expiry ms}`, so
a restart or an abandoned registration never leaks a use: a reservation simply runs out.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.engine import Batch, Store, Table

REGISTRATION_TOKENS = Table(
    "registration_tokens",
    ("str",),
    "json",
    "token -> uses allowed, completed, expiry, pending reservations {session: expiry}, admin flag",
)
TABLES = (REGISTRATION_TOKENS,)


class RegistrationTokenStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, token: str) -> dict[str, Any] | None:
        raw = self.store.get(REGISTRATION_TOKENS, token.encode())
        return orjson.loads(raw) if raw is not None else None

    def put(self, token: str, record: dict[str, Any], batch: Batch) -> None:
        batch.put(REGISTRATION_TOKENS, token.encode(), orjson.dumps(record, option=orjson.OPT_SORT_KEYS))

    def delete(self, token: str, batch: Batch) -> None:
        batch.delete(REGISTRATION_TOKENS, token.encode())

    def all(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for k, v in self.store.iterate(REGISTRATION_TOKENS):
            yield k.decode(), orjson.loads(v)
