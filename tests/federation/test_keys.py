"""Server keys: what we publish, how other servers' answers are checked, and the key ring's rules
(fetch once, from the server then notaries; validity at the event's time; the 7-day cap).

spec: server-server-api "Retrieving server keys", "Validating hashes and signatures on received events".
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import signedjson.key
import signedjson.sign

from federation.keys import (
    MAX_VALIDITY_MS,
    PUBLISH_VALIDITY_MS,
    KeyRing,
    Notary,
    OldKey,
    OurKeys,
    parse_key_response,
)
from homeserver.protocol.errors import SignatureError
from homeserver.protocol.signing import encode_verify_key, generate_signing_key, sign_json
from storage.cache import LruCache
from storage.engine import Store
from storage.server_keys import ServerKeyStore

DAY = 24 * 3600 * 1000
NOW = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = NOW

    def __call__(self) -> float:
        return self.ms / 1000


class Remote:
    """Another server: its key answer, signed as it would sign it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.key_id, self.key = generate_signing_key("r1")
        self.old: dict[str, tuple[nacl.signing.SigningKey, int]] = {}

    def answer(self, valid_until: int) -> dict[str, Any]:
        body: dict[str, Any] = {
            "server_name": self.name,
            "verify_keys": {self.key_id: {"key": encode_verify_key(self.key)}},
            "old_verify_keys": {
                k: {"key": encode_verify_key(sk), "expired_ts": ts} for k, (sk, ts) in self.old.items()
            },
            "valid_until_ts": valid_until,
        }
        return dict(sign_json(body, self.name, self.key_id, self.key))


class Fetcher:
    def __init__(self) -> None:
        self.direct: dict[str, Any] = {}
        self.notary: dict[tuple[str, str], Any] = {}
        self.calls: list[tuple[str, str]] = []

    async def server_keys(self, server: str) -> Any:
        self.calls.append(("direct", server))
        await asyncio.sleep(0.01)
        answer = self.direct.get(server)
        if answer is None:
            raise OSError("unreachable")
        return copy.deepcopy(answer)

    async def notary_query(self, notary: str, server: str) -> Any:
        self.calls.append((notary, server))
        answer = self.notary.get((notary, server))
        if answer is None:
            raise OSError("unreachable")
        return copy.deepcopy(answer)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "db")
    yield s
    s.close()


def ring(store: Store, fetcher: Fetcher, clock: Clock, notaries: list[Notary] | None = None) -> KeyRing:
    key_id, key = generate_signing_key("me")
    ours = OurKeys("us.test", key_id, key, clock=clock)
    return KeyRing(
        ours, store, ServerKeyStore(store), fetcher, notaries or [], attempts=LruCache("a", 100), clock=clock
    )


def test_our_answer_is_signed_valid_a_day_and_lists_old_keys() -> None:
    clock = Clock()
    key_id, key = generate_signing_key("new")
    _, old = generate_signing_key("old")
    ours = OurKeys("us.test", key_id, key, {"ed25519:old": OldKey(encode_verify_key(old), NOW - DAY)}, clock=clock)
    answer = ours.response()
    assert answer["valid_until_ts"] == NOW + PUBLISH_VALIDITY_MS
    assert answer["old_verify_keys"] == {"ed25519:old": {"key": encode_verify_key(old), "expired_ts": NOW - DAY}}
    vk = signedjson.key.decode_verify_key_bytes(key_id, bytes(key.verify_key))
    signedjson.sign.verify_signed_json(answer, "us.test", vk)  # what Synapse checks
    assert parse_key_response(answer, "us.test", NOW)[key_id].valid_until_ts == NOW + PUBLISH_VALIDITY_MS
    clock.ms += PUBLISH_VALIDITY_MS // 2 + 1  # re-signed once half its validity has passed
    assert ours.response()["valid_until_ts"] == clock.ms + PUBLISH_VALIDITY_MS
    # our own keys: the old one only for events from before it expired
    assert set(ours.verify_keys(["ed25519:old", key_id], NOW - DAY - 1)) == {"ed25519:old", key_id}
    assert set(ours.verify_keys(["ed25519:old", key_id], NOW)) == {key_id}


def test_answers_must_be_signed_by_the_keys_they_list() -> None:
    remote = Remote("remote.test")
    good = remote.answer(NOW + DAY)
    assert parse_key_response(good, "remote.test", NOW)[remote.key_id].key == encode_verify_key(remote.key)
    with pytest.raises(SignatureError):
        parse_key_response(good, "other.test", NOW)  # an answer for another server
    tampered = copy.deepcopy(good)
    tampered["valid_until_ts"] += 1
    with pytest.raises(SignatureError):
        parse_key_response(tampered, "remote.test", NOW)
    unsigned = {k: v for k, v in good.items() if k != "signatures"}
    with pytest.raises(SignatureError):
        parse_key_response(unsigned, "remote.test", NOW)
    # signed by a key it does not list
    _, stranger = generate_signing_key("x")
    body = {k: v for k, v in good.items() if k != "signatures"}
    with pytest.raises(SignatureError):
        parse_key_response(dict(sign_json(body, "remote.test", "ed25519:x", stranger)), "remote.test", NOW)


def test_validity_is_capped_at_seven_days() -> None:
    remote = Remote("remote.test")
    keys = parse_key_response(remote.answer(NOW + 365 * DAY), "remote.test", NOW)
    assert keys[remote.key_id].valid_until_ts == NOW + MAX_VALIDITY_MS


async def test_keys_are_fetched_once_and_used_within_their_validity(store: Store) -> None:
    clock, fetcher, remote = Clock(), Fetcher(), Remote("remote.test")
    fetcher.direct["remote.test"] = remote.answer(NOW + DAY)
    r = ring(store, fetcher, clock)
    got = await asyncio.gather(*(r.verify_keys("remote.test", [remote.key_id], NOW) for _ in range(5)))
    assert all(bytes(g[remote.key_id]) == bytes(remote.key.verify_key) for g in got)
    assert fetcher.calls == [("direct", "remote.test")]  # concurrent asks share one fetch
    assert remote.key_id in await r.verify_keys("remote.test", [remote.key_id], NOW + DAY)
    # an event from after the key's validity: the key is not used (and a refetch waits a minute)
    assert await r.verify_keys("remote.test", [remote.key_id], NOW + DAY + 1) == {}
    assert len(fetcher.calls) == 1
    # rooms v1-v4 ignore validity
    assert remote.key_id in await r.verify_keys("remote.test", [remote.key_id], None)
    # a minute later the server is asked again, and its renewed answer counts
    clock.ms += 61_000
    fetcher.direct["remote.test"] = remote.answer(NOW + 3 * DAY)
    assert remote.key_id in await r.verify_keys("remote.test", [remote.key_id], NOW + DAY + 1)
    assert len(fetcher.calls) == 2


async def test_old_keys_count_for_events_before_they_expired(store: Store) -> None:
    clock, fetcher, remote = Clock(), Fetcher(), Remote("remote.test")
    old_key = generate_signing_key("o")[1]
    remote.old["ed25519:o"] = (old_key, NOW - DAY)
    fetcher.direct["remote.test"] = remote.answer(NOW + DAY)
    r = ring(store, fetcher, clock)
    assert set(await r.verify_keys("remote.test", ["ed25519:o"], NOW - 2 * DAY)) == {"ed25519:o"}
    assert await r.verify_keys("remote.test", ["ed25519:o"], NOW) == {}


async def test_notaries_are_asked_when_the_server_is_not_and_must_sign(store: Store) -> None:
    clock, fetcher, remote = Clock(), Fetcher(), Remote("remote.test")
    notary_id, notary_key = generate_signing_key("n")
    notary = Notary("notary.test", {notary_id: encode_verify_key(notary_key)})
    liar_id, liar_key = generate_signing_key("l")
    liar = Notary("liar.test", {liar_id: encode_verify_key(generate_signing_key("l")[1])})  # not its real key
    fetcher.notary[("liar.test", "remote.test")] = {
        "server_keys": [dict(sign_json(remote.answer(NOW + DAY), "liar.test", liar_id, liar_key))]
    }
    fetcher.notary[("notary.test", "remote.test")] = {
        "server_keys": [dict(sign_json(remote.answer(NOW + DAY), "notary.test", notary_id, notary_key))]
    }
    r = ring(store, fetcher, clock, [liar, notary])
    assert remote.key_id in await r.verify_keys("remote.test", [remote.key_id], NOW)
    assert fetcher.calls == [("direct", "remote.test"), ("liar.test", "remote.test"), ("notary.test", "remote.test")]
    kept = r.stored_response("remote.test")
    assert kept is not None and set(kept["signatures"]) == {"remote.test"}  # as the server signed it


async def test_unknown_servers_and_keys_give_nothing(store: Store) -> None:
    clock, fetcher = Clock(), Fetcher()
    r = ring(store, fetcher, clock)
    assert await r.verify_keys("nowhere.test", ["ed25519:a"], NOW) == {}
    assert await r.verify_keys("nowhere.test", ["ed25519:a"], NOW) == {}
    assert fetcher.calls == [("direct", "nowhere.test")]  # not asked again within the minute
