"""External identities: an account at an upstream provider (OpenID Connect, Mastodon), keyed by
(provider id, subject), mapped to one of our users. Keyed by the subject, never by a name the
provider lets people change, so a renamed upstream account keeps its Matrix account. A second
table answers the other way round (which identities a user has, for re-authentication by single
sign-on); both are written in the same batch. Also the client credentials the server registered
for itself at a provider that hands them out (a Mastodon server's `POST /api/v1/apps`)."""

from __future__ import annotations

from typing import Any

import orjson

from storage.engine import Batch, Store, Table

EXTERNAL_IDS = Table(
    "external_ids", ("str", "str"), "json", "(provider id, subject) -> {user_id, linked_ts} (single sign-on)"
)
USER_EXTERNAL_IDS = Table(
    "user_external_ids", ("str", "str", "str"), "empty", "(user id, provider id, subject): a user's external ids"
)
SSO_CLIENTS = Table(
    "sso_clients",
    ("str",),
    "json",
    "provider id -> the client credentials the server registered there for itself (Mastodon apps)",
)
TABLES = (EXTERNAL_IDS, USER_EXTERNAL_IDS, SSO_CLIENTS)


def _key(provider: str, subject: str) -> bytes:
    return provider.encode() + b"\xff" + subject.encode()


def _user_key(user_id: str, provider: str, subject: str) -> bytes:
    return user_id.encode() + b"\xff" + _key(provider, subject)


class ExternalIdStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def get(self, provider: str, subject: str) -> dict[str, Any] | None:
        raw = self.store.get(EXTERNAL_IDS, _key(provider, subject))
        return orjson.loads(raw) if raw is not None else None

    def put(self, provider: str, subject: str, record: dict[str, Any], batch: Batch) -> None:
        old = self.get(provider, subject)
        if old is not None and old.get("user_id") != record["user_id"]:
            batch.delete(USER_EXTERNAL_IDS, _user_key(str(old["user_id"]), provider, subject))
        batch.put(EXTERNAL_IDS, _key(provider, subject), orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
        batch.put(USER_EXTERNAL_IDS, _user_key(record["user_id"], provider, subject), b"")

    def of_user(self, user_id: str) -> list[tuple[str, str]]:
        """The (provider id, subject) pairs linked to `user_id`, in key order."""
        out = []
        for key in self.store.keys(USER_EXTERNAL_IDS, user_id.encode() + b"\xff"):
            provider, _, subject = key[len(user_id.encode()) + 1 :].partition(b"\xff")
            out.append((provider.decode(), subject.decode()))
        return out

    def client(self, provider: str) -> dict[str, Any] | None:
        raw = self.store.get(SSO_CLIENTS, provider.encode())
        return orjson.loads(raw) if raw is not None else None

    def put_client(self, provider: str, record: dict[str, Any], batch: Batch) -> None:
        batch.put(SSO_CLIENTS, provider.encode(), orjson.dumps(record, option=orjson.OPT_SORT_KEYS))

    def delete_client(self, provider: str, batch: Batch) -> None:
        batch.delete(SSO_CLIENTS, provider.encode())


def index_by_user(store: Store, batch: Batch) -> None:
    """Schema 3 -> 4: the user -> external ids table, filled from the identities already linked."""
    for key, value in store.iterate(EXTERNAL_IDS):
        provider, _, subject = key.partition(b"\xff")
        user_id = str(orjson.loads(value)["user_id"])
        batch.put(USER_EXTERNAL_IDS, _user_key(user_id, provider.decode(), subject.decode()), b"")
