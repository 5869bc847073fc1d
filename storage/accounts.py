"""Accounts, devices, access and refresh tokens.

Tokens are stored by their SHA-256 only: a copy of the store does not let anyone log in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP
from storage.engine import Batch, Store, Table

ACCOUNTS = Table("accounts", ("str",), "json", "user id -> account (password hash, admin, deactivated, ...)")
DEVICES = Table("devices", ("str", "str"), "json", "user id, device id -> device (display name, last seen)")
ACCESS_TOKENS = Table("access_tokens", ("bytes",), "json", "sha256(access token) -> user, device, expiry")
REFRESH_TOKENS = Table("refresh_tokens", ("bytes",), "json", "sha256(refresh token) -> user, device, access token")
DEVICE_TOKENS = Table(
    "device_tokens", ("str", "str", "bytes"), "empty", "user, device, sha256(token): the tokens of a device"
)
TABLES = (ACCOUNTS, DEVICES, ACCESS_TOKENS, REFRESH_TOKENS, DEVICE_TOKENS)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class AccountStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    # accounts
    def account(self, user_id: str) -> dict[str, Any] | None:
        raw = self.store.get(ACCOUNTS, user_id.encode())
        return orjson.loads(raw) if raw is not None else None

    def put_account(self, user_id: str, account: dict[str, Any], batch: Batch) -> None:
        batch.put(ACCOUNTS, user_id.encode(), _dumps(account))

    def accounts(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for k, v in self.store.iterate(ACCOUNTS):
            yield k.decode(), orjson.loads(v)

    def has_accounts(self) -> bool:
        return next(self.store.keys(ACCOUNTS), None) is not None

    # devices
    def device(self, user_id: str, device_id: str) -> dict[str, Any] | None:
        raw = self.store.get(DEVICES, user_id.encode() + SEP + device_id.encode())
        return orjson.loads(raw) if raw is not None else None

    def devices(self, user_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
        prefix = user_id.encode() + SEP
        for k, v in self.store.iterate(DEVICES, prefix):
            yield k[len(prefix) :].decode(), orjson.loads(v)

    def put_device(self, user_id: str, device_id: str, device: dict[str, Any], batch: Batch) -> None:
        batch.put(DEVICES, user_id.encode() + SEP + device_id.encode(), _dumps(device))

    def delete_device(self, user_id: str, device_id: str, batch: Batch) -> list[bytes]:
        """Delete a device and every token it holds; returns the deleted access-token hashes."""
        batch.delete(DEVICES, user_id.encode() + SEP + device_id.encode())
        prefix = user_id.encode() + SEP + device_id.encode() + SEP
        hashes = [k[len(prefix) :] for k in self.store.keys(DEVICE_TOKENS, prefix)]
        for h in hashes:
            batch.delete(DEVICE_TOKENS, prefix + h)
            batch.delete(ACCESS_TOKENS, h)
            batch.delete(REFRESH_TOKENS, h)
        return hashes

    # tokens
    def device_token_hashes(self, user_id: str, device_id: str) -> list[bytes]:
        prefix = user_id.encode() + SEP + device_id.encode() + SEP
        return [k[len(prefix) :] for k in self.store.keys(DEVICE_TOKENS, prefix)]

    def access_token(self, h: bytes) -> dict[str, Any] | None:
        raw = self.store.get(ACCESS_TOKENS, h)
        return orjson.loads(raw) if raw is not None else None

    def put_access_token(self, h: bytes, info: dict[str, Any], batch: Batch) -> None:
        batch.put(ACCESS_TOKENS, h, _dumps(info))
        batch.put(DEVICE_TOKENS, info["user_id"].encode() + SEP + info["device_id"].encode() + SEP + h, b"")

    def delete_access_token(self, h: bytes, user_id: str, device_id: str, batch: Batch) -> None:
        batch.delete(ACCESS_TOKENS, h)
        batch.delete(DEVICE_TOKENS, user_id.encode() + SEP + device_id.encode() + SEP + h)

    def refresh_token(self, h: bytes) -> dict[str, Any] | None:
        raw = self.store.get(REFRESH_TOKENS, h)
        return orjson.loads(raw) if raw is not None else None

    def put_refresh_token(self, h: bytes, info: dict[str, Any], batch: Batch) -> None:
        batch.put(REFRESH_TOKENS, h, _dumps(info))
        batch.put(DEVICE_TOKENS, info["user_id"].encode() + SEP + info["device_id"].encode() + SEP + h, b"")

    def delete_refresh_token(self, h: bytes, user_id: str, device_id: str, batch: Batch) -> None:
        batch.delete(REFRESH_TOKENS, h)
        batch.delete(DEVICE_TOKENS, user_id.encode() + SEP + device_id.encode() + SEP + h)
