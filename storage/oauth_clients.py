"""OAuth 2.0 clients registered through dynamic client registration (RFC 7591): client id -> the
metadata the server accepted. The id is derived from the metadata, so identical registrations
(every install of one app) share one record instead of growing the table."""

from __future__ import annotations

from typing import Any

import orjson

from storage.engine import Batch, Store, Table

OAUTH_CLIENTS = Table("oauth_clients", ("str",), "json", "client id -> registered client metadata (OAuth 2.0)")
TABLES = (OAUTH_CLIENTS,)


class OAuthClientStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, client_id: str) -> dict[str, Any] | None:
        raw = self.store.get(OAUTH_CLIENTS, client_id.encode())
        return orjson.loads(raw) if raw is not None else None

    def put(self, client_id: str, metadata: dict[str, Any], batch: Batch) -> None:
        batch.put(OAUTH_CLIENTS, client_id.encode(), orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS))
