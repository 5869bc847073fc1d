"""Signing keys between servers: ours as we publish them, and other servers' as we learn them.

spec: server-server-api "Retrieving server keys". We publish `/_matrix/key/v2/server` signed with
our key, valid for a day (re-signed after half of that), with the keys we used before in
`old_verify_keys`. Other servers' keys come from the server itself, else from the notaries the admin
trusts (`trusted_key_servers`, each with its own key ids and keys); an answer counts only when the
server signed it with the keys it lists (and, through a notary, the notary signed it too). A key's
`valid_until_ts` is capped at seven days after we fetched it (spec: the lesser of the field and 7
days into the future). A key is used for an event only if it was valid at the event's time (rooms
v5+), for a request only if it is valid now; unknown and expired keys are skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import nacl.signing

from homeserver.protocol.errors import SignatureError
from homeserver.protocol.signing import decode_verify_key, encode_verify_key, sign_json, verify_json
from storage.cache import LruCache
from storage.engine import Store
from storage.server_keys import ServerKeyStore, StoredKey

log = logging.getLogger(__name__)

PUBLISH_VALIDITY_MS = 24 * 3600 * 1000
MAX_VALIDITY_MS = 7 * 24 * 3600 * 1000
REFETCH_AFTER_MS = 60 * 1000  # a server whose keys were just fetched is not asked again sooner
FETCH_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class OldKey:
    key: str  # unpadded base64 of the public key
    expired_ts: int


@dataclass(frozen=True, slots=True)
class Notary:
    server_name: str
    verify_keys: Mapping[str, str]  # key id -> unpadded base64 public key


class KeyFetcher(Protocol):
    async def server_keys(self, server: str) -> Any:
        """GET /_matrix/key/v2/server on `server` (its JSON answer)."""
        ...

    async def notary_query(self, notary: str, server: str) -> Any:
        """POST /_matrix/key/v2/query on `notary` for `server` (its JSON answer)."""
        ...


class OurKeys:
    """What `/_matrix/key/v2/server` answers: the current key, the old ones, signed."""

    def __init__(
        self,
        server_name: str,
        key_id: str,
        signing_key: nacl.signing.SigningKey,
        old_keys: Mapping[str, OldKey] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.server_name = server_name
        self.key_id = key_id
        self.signing_key = signing_key
        self.old_keys = dict(old_keys or {})
        self.clock = clock
        self._signed: dict[str, Any] | None = None

    def response(self) -> dict[str, Any]:
        now = int(self.clock() * 1000)
        if self._signed is None or self._signed["valid_until_ts"] - now < PUBLISH_VALIDITY_MS // 2:
            body: dict[str, Any] = {
                "server_name": self.server_name,
                "verify_keys": {self.key_id: {"key": encode_verify_key(self.signing_key)}},
                "old_verify_keys": {k: {"key": o.key, "expired_ts": o.expired_ts} for k, o in self.old_keys.items()},
                "valid_until_ts": now + PUBLISH_VALIDITY_MS,
            }
            self._signed = dict(sign_json(body, self.server_name, self.key_id, self.signing_key))
        return self._signed

    def sign(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Add our signature to an object another server signed (notary answers)."""
        return dict(sign_json(dict(obj), self.server_name, self.key_id, self.signing_key))

    def verify_keys(self, key_ids: Iterable[str], valid_at: int | None) -> dict[str, nacl.signing.VerifyKey]:
        out: dict[str, nacl.signing.VerifyKey] = {}
        for key_id in key_ids:
            if key_id == self.key_id:
                out[key_id] = self.signing_key.verify_key
            elif key_id in self.old_keys and (valid_at is None or valid_at <= self.old_keys[key_id].expired_ts):
                out[key_id] = decode_verify_key(self.old_keys[key_id].key)
        return out


def parse_key_response(response: Any, server: str, now_ms: int) -> dict[str, StoredKey]:
    """The keys of a `/key/v2/server` answer for `server`, after checking that the server signed it
    with the keys it lists (every one of its signatures by a listed key must verify, and there must
    be at least one); `SignatureError` otherwise."""
    if not isinstance(response, dict) or response.get("server_name") != server:
        raise SignatureError(f"the key answer is not for {server}")
    verify_keys = response.get("verify_keys")
    valid_until = response.get("valid_until_ts")
    if not isinstance(verify_keys, dict) or not isinstance(valid_until, int) or isinstance(valid_until, bool):
        raise SignatureError(f"the key answer of {server} lacks verify_keys or valid_until_ts")
    keys: dict[str, StoredKey] = {}
    capped = min(valid_until, now_ms + MAX_VALIDITY_MS)
    for key_id, value in verify_keys.items():
        if isinstance(value, dict) and isinstance(value.get("key"), str) and key_id.startswith("ed25519:"):
            keys[key_id] = StoredKey(value["key"], capped, None, now_ms)
    signatures = response.get("signatures")
    signed_by = signatures.get(server) if isinstance(signatures, dict) else None
    checked = 0
    for key_id in signed_by if isinstance(signed_by, dict) else ():
        if key_id in keys:
            verify_json(response, server, key_id, decode_verify_key(keys[key_id].key), strict=False)
            checked += 1
    if not checked:
        raise SignatureError(f"the key answer of {server} is not signed by a key it lists")
    old = response.get("old_verify_keys")
    for key_id, value in old.items() if isinstance(old, dict) else ():
        if (
            isinstance(value, dict)
            and isinstance(value.get("key"), str)
            and isinstance(value.get("expired_ts"), int)
            and key_id.startswith("ed25519:")
            and key_id not in keys
        ):
            keys[key_id] = StoredKey(value["key"], 0, value["expired_ts"], now_ms)
    return keys


class KeyRing:
    """Other servers' keys: from the store, else fetched (once at a time per server)."""

    def __init__(
        self,
        ours: OurKeys,
        store: Store,
        keys: ServerKeyStore,
        fetcher: KeyFetcher,
        notaries: Iterable[Notary] = (),
        *,
        attempts: LruCache[str, int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ours = ours
        self.store = store
        self.keys = keys
        self.fetcher = fetcher
        self.notaries = list(notaries)
        self.clock = clock
        self._attempts = attempts  # server -> when its keys were last fetched (ms)
        self._fetching: dict[str, asyncio.Future[None]] = {}

    async def verify_keys(
        self, server: str, key_ids: list[str], valid_at: int | None
    ) -> Mapping[str, nacl.signing.VerifyKey]:
        """The keys among `key_ids` that `server` has and that were valid at `valid_at` (ms; None: any
        known key, as rooms v1–v4 want). Fetches when one is unknown or not known valid then."""
        if server == self.ours.server_name:
            return self.ours.verify_keys(key_ids, valid_at)
        found = self._usable(server, key_ids, valid_at)
        if len(found) < len(key_ids) and (server in self._fetching or self._may_fetch(server)):
            await self._fetch(server)
            found = self._usable(server, key_ids, valid_at)
        return {key_id: decode_verify_key(k.key) for key_id, k in found.items()}

    async def refresh(self, server: str) -> None:
        """Fetch the server's keys again (at most once a minute), e.g. to answer a notary query."""
        if server != self.ours.server_name and (server in self._fetching or self._may_fetch(server)):
            await self._fetch(server)

    def _usable(self, server: str, key_ids: list[str], valid_at: int | None) -> dict[str, StoredKey]:
        out: dict[str, StoredKey] = {}
        for key_id in key_ids:
            k = self.keys.key(server, key_id)
            if k is not None and (valid_at is None or k.valid_at(valid_at)):
                out[key_id] = k
        return out

    def _may_fetch(self, server: str) -> bool:
        last = self._attempts.peek(server)
        return last is None or int(self.clock() * 1000) - last >= REFETCH_AFTER_MS

    async def _fetch(self, server: str) -> None:
        running = self._fetching.get(server)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._fetching[server] = future
        try:
            await self._fetch_now(server)
        finally:
            del self._fetching[server]
            future.set_result(None)

    async def _fetch_now(self, server: str) -> None:
        now = int(self.clock() * 1000)
        self._attempts.put(server, now)
        try:
            answer = await asyncio.wait_for(self.fetcher.server_keys(server), FETCH_TIMEOUT_S)
            await self._store(server, parse_key_response(answer, server, now), answer)
            return
        except Exception as e:
            log.info("keys of %s from itself: %s", server, e)
        for notary in self.notaries:
            try:
                answer = await asyncio.wait_for(self.fetcher.notary_query(notary.server_name, server), FETCH_TIMEOUT_S)
                for response in _notary_responses(answer, notary, server):
                    await self._store(server, parse_key_response(response, server, now), _without(response, notary))
                    return
            except Exception as e:
                log.info("keys of %s from %s: %s", server, notary.server_name, e)

    async def _store(self, server: str, keys: dict[str, StoredKey], response: dict[str, Any]) -> None:
        batch = self.store.batch()
        with batch:
            self.keys.put(server, keys, batch, response=response)
            await batch.commit()

    def stored_response(self, server: str) -> dict[str, Any] | None:
        return self.keys.response(server)


def _notary_responses(answer: Any, notary: Notary, server: str) -> list[dict[str, Any]]:
    """The answers a notary gave for `server` that the notary signed with a key we know for it."""
    listed = answer.get("server_keys") if isinstance(answer, dict) else None
    out: list[dict[str, Any]] = []
    for response in listed if isinstance(listed, list) else ():
        if not isinstance(response, dict) or response.get("server_name") != server:
            continue
        for key_id, key in notary.verify_keys.items():
            try:
                verify_json(response, notary.server_name, key_id, decode_verify_key(key), strict=False)
            except SignatureError:
                continue
            out.append(response)
            break
    return out


def _without(response: dict[str, Any], notary: Notary) -> dict[str, Any]:
    """The answer as its server signed it (the notary's signature removed)."""
    signatures = response.get("signatures")
    if isinstance(signatures, dict) and notary.server_name in signatures:
        response = {**response, "signatures": {k: v for k, v in signatures.items() if k != notary.server_name}}
    return response
