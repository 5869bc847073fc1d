"""External identities both ways: (provider, subject) -> user and user -> identities, kept in step
by every write, and filled in for stores written before the second table existed."""

from __future__ import annotations

from pathlib import Path

import orjson

from storage import engine
from storage.codec import u64
from storage.engine import Store
from storage.external_ids import EXTERNAL_IDS, ExternalIdStore


async def link(ids: ExternalIdStore, provider: str, subject: str, user_id: str) -> None:
    batch = ids.store.batch()
    with batch:
        ids.put(provider, subject, {"user_id": user_id, "linked_ts": 1}, batch)
        await batch.commit()


async def test_a_users_identities_follow_their_links(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        ids = ExternalIdStore(store)
        await link(ids, "oidc", "s1", "@a:hs")
        await link(ids, "mastodon", "42", "@a:hs")
        await link(ids, "oidc", "s2", "@ab:hs")  # a user id that extends another's must not leak into it
        assert ids.of_user("@a:hs") == [("mastodon", "42"), ("oidc", "s1")]
        assert ids.of_user("@ab:hs") == [("oidc", "s2")]
        await link(ids, "oidc", "s1", "@b:hs")  # re-linked: it leaves the old user
        assert ids.of_user("@a:hs") == [("mastodon", "42")]
        assert ids.of_user("@b:hs") == [("oidc", "s1")]
        assert ids.of_user("@nobody:hs") == []


def test_schema_3_store_is_indexed_by_user(tmp_path: Path) -> None:
    path = tmp_path / "db"
    # made at the current schema, then turned into a schema 3 store
    with Store(path) as store, store.db.write_batch() as wb:
        wb.put(engine.META.prefix + b"schema_version", u64(3))
        for provider, subject, user in [("oidc", "s1", "@a:hs"), ("oidc", "s2", "@b:hs"), ("gh", "7", "@a:hs")]:
            record = orjson.dumps({"user_id": user, "linked_ts": 1})
            wb.put(EXTERNAL_IDS.prefix + provider.encode() + b"\xff" + subject.encode(), record)
    with Store(path) as store:
        assert store.schema_version == engine.SCHEMA_VERSION
        ids = ExternalIdStore(store)
        assert ids.of_user("@a:hs") == [("gh", "7"), ("oidc", "s1")]
        assert ids.of_user("@b:hs") == [("oidc", "s2")]
