"""OpenID tokens: short-lived tokens a user hands to a third party to prove who they are."""

from __future__ import annotations

import orjson

from storage.accounts import token_hash
from storage.engine import Batch, Store, Table

OPENID_TOKENS = Table("openid_tokens", ("bytes",), "json", "sha256(openid token) -> user id, expiry")
TABLES = (OPENID_TOKENS,)


class OpenIdStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    def put(self, token: str, user_id: str, expires_at: int, batch: Batch) -> None:
        batch.put(OPENID_TOKENS, token_hash(token), orjson.dumps({"user_id": user_id, "expires_at": expires_at}))

    def get(self, token: str) -> tuple[str, int] | None:
        raw = self.store.get(OPENID_TOKENS, token_hash(token))
        if raw is None:
            return None
        info = orjson.loads(raw)
        return str(info["user_id"]), int(info["expires_at"])
