"""External identities: an account at an upstream provider (OpenID Connect, Mastodon), keyed by
(provider id, subject), mapped to one of our users. Keyed by the subject, never by a name the
provider lets people change, so a renamed upstream account keeps its Matrix account. Also the
client credentials the server registered for itself at a provider that hands them out (a Mastodon
server's `POST /api/v1/apps`)."""

from __future__ import annotations

from typing import Any

import orjson

from storage.engine import Batch, Store, Table

EXTERNAL_IDS = Table(
    "external_ids", ("str", "str"), "json", "(provider id, subject) -> {user_id, linked_ts} (single sign-on)"
)
SSO_CLIENTS = Table(
    "sso_clients",
    ("str",),
    "json",
    "provider id -> the client credentials the server registered there for itself (Mastodon apps)",
)
TABLES = (EXTERNAL_IDS, SSO_CLIENTS)


def _key(provider: str, subject: str) -> bytes:
    return provider.encode() + b"\xff" + subject.encode()


class ExternalIdStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, provider: str, subject: str) -> dict[str, Any] | None:
        raw = self.store.get(EXTERNAL_IDS, _key(provider, subject))
        return orjson.loads(raw) if raw is not None else None

    def put(self, provider: str, subject: str, record: dict[str, Any], batch: Batch) -> None:
        batch.put(EXTERNAL_IDS, _key(provider, subject), orjson.dumps(record, option=orjson.OPT_SORT_KEYS))

    def client(self, provider: str) -> dict[str, Any] | None:
        raw = self.store.get(SSO_CLIENTS, provider.encode())
        return orjson.loads(raw) if raw is not None else None

    def put_client(self, provider: str, record: dict[str, Any], batch: Batch) -> None:
        batch.put(SSO_CLIENTS, provider.encode(), orjson.dumps(record, option=orjson.OPT_SORT_KEYS))

    def delete_client(self, provider: str, batch: Batch) -> None:
        batch.delete(SSO_CLIENTS, provider.encode())
