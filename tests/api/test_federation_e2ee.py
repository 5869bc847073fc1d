"""End-to-end encryption over federation, in-process: what other servers may tell us about their
users' devices, keys and to-device messages, and what we tell them about ours.

spec: server-server-api "Device Management", "End-to-End Encryption", "Send-to-device messaging".
A server speaks only for its own users: an update about anyone else's user, keys that are not
signed by their own key, claims for devices that do not exist, to-device messages from a spoofed
sender are refused, and nothing is stored.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any
from urllib.parse import quote

import nacl.signing
import orjson
import pytest

from federation.client import Unreachable
from federation.e2ee import MAX_DELIVERIES_PER_EDU
from homeserver.errors import MatrixError
from homeserver.protocol.signing import sign_json

from .conftest import Harness, User
from .test_e2ee import Device, b64, upload
from .test_media_federation import fed_get, trust_remote

PEER = "peer.test"
EVE = "@eve:peer.test"


def remote_device(user_id: str, device_id: str, key: nacl.signing.SigningKey | None = None) -> dict[str, Any]:
    """Device keys as a client on another server signs them (with `key`, when given, instead of its own)."""
    own = nacl.signing.SigningKey.generate()
    keys: dict[str, Any] = {
        "user_id": user_id,
        "device_id": device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {f"ed25519:{device_id}": b64(own.verify_key), f"curve25519:{device_id}": "Y3VydmU"},
    }
    return dict(sign_json(keys, user_id, f"ed25519:{device_id}", key or own))


@pytest.fixture
async def alice(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> User:
    """Alice, here, who shares a room with Eve of peer.test."""
    user = await harness.user("alice")
    queries = harness.hs.queries
    sharing = {EVE: {user.user_id, EVE}, user.user_id: {user.user_id, EVE}}
    monkeypatch.setattr(queries, "users_sharing_a_room", lambda u: set(sharing.get(u, {u})))
    shares = lambda u: any(queries.is_local(x) for x in sharing.get(u, {u}))  # noqa: E731
    monkeypatch.setattr(queries, "shares_a_room_with_us", shares)
    return user


async def test_device_list_updates_only_for_the_origins_users(harness: Harness, alice: User) -> None:
    hs = harness.hs
    stream = hs.db.device_lists
    resyncs: list[str] = []

    async def resync(user_id: str) -> None:
        resyncs.append(user_id)

    hs.device_updates.remote.resync = resync  # type: ignore[method-assign]
    handle = hs.device_updates.handlers()["m.device_list_update"]
    # about a user of another server, or malformed: nothing stored
    await handle("evil.test", {"user_id": EVE, "device_id": "D", "stream_id": 5, "prev_id": []})
    await handle(PEER, {"user_id": EVE, "device_id": "D", "stream_id": "5"})
    await handle(PEER, {"user_id": "@nobody:peer.test", "device_id": "D", "stream_id": 5})  # shares no room
    assert stream.remote_stream(EVE) is None and stream.position(EVE) == 0
    assert stream.remote_stream("@nobody:peer.test") is None

    batch = hs.db.store.batch()
    with batch:
        stream.cache(EVE, {"devices": {}}, batch)
        await batch.commit()
    before = hs.db.store.counter.visible
    await handle(PEER, {"user_id": EVE, "device_id": "D", "stream_id": 5, "prev_id": []})
    assert stream.remote_stream(EVE) == 5 and stream.position(EVE) > before and stream.cached(EVE) is None
    # the users who share a room with Eve hear of it in /sync and /keys/changes (the stream they read)
    assert list(stream.changes(before, hs.db.store.counter.visible)) == [EVE]
    assert resyncs == []
    await handle(PEER, {"user_id": EVE, "device_id": "D", "stream_id": 6, "prev_id": [5]})  # continuous
    assert resyncs == [] and stream.remote_stream(EVE) == 6
    await handle(PEER, {"user_id": EVE, "device_id": "D", "stream_id": 9, "prev_id": [8]})  # a gap
    await handle(PEER, {"user_id": EVE, "device_id": "D", "stream_id": 7, "prev_id": [6]})  # older: ignored
    assert stream.remote_stream(EVE) == 9
    for _ in range(3):
        await asyncio.sleep(0)  # the resync runs in the background
    assert resyncs == [EVE]


async def test_to_device_only_from_the_origins_senders_and_once(harness: Harness, alice: User) -> None:
    hs = harness.hs
    handle = hs.device_updates.handlers()["m.direct_to_device"]
    message = {"type": "m.test", "messages": {alice.user_id: {"*": {"n": 1}}}}
    await handle(PEER, {**message, "sender": "@mallory:other.test", "message_id": "m1"})  # spoofed
    await handle(PEER, {**message, "sender": EVE})  # no message id
    flood = {alice.user_id: {f"D{i}": {"n": i} for i in range(MAX_DELIVERIES_PER_EDU)} | {"*": {"n": -1}}}
    await handle(PEER, {"type": "m.test", "sender": EVE, "message_id": "flood", "messages": flood})
    assert hs.db.to_device.pending(alice.user_id, alice.device_id, hs.db.store.counter.visible, 10) == []
    await handle(PEER, {**message, "sender": EVE, "message_id": "m2"})
    await handle(PEER, {**message, "sender": EVE, "message_id": "m2"})  # the same EDU again
    pending = hs.db.to_device.pending(alice.user_id, alice.device_id, hs.db.store.counter.visible, 10)
    assert [m for _, m in pending] == [{"sender": EVE, "type": "m.test", "content": {"n": 1}}]


async def test_signing_key_update_for_the_wrong_user_is_refused(harness: Harness, alice: User) -> None:
    hs = harness.hs
    handle = hs.device_updates.handlers()["m.signing_key_update"]
    pub = b64(nacl.signing.SigningKey.generate().verify_key)
    master = {"user_id": "@someone:else.test", "usage": ["master"], "keys": {f"ed25519:{pub}": pub}}
    await handle(PEER, {"user_id": EVE, "master_key": master})
    await handle("else.test", {"user_id": EVE, "master_key": {**master, "user_id": EVE}})
    assert hs.db.device_lists.position(EVE) == 0
    await handle(PEER, {"user_id": EVE, "master_key": {**master, "user_id": EVE}})
    assert hs.db.device_lists.position(EVE) > 0


async def test_we_answer_only_for_our_users_and_devices(harness: Harness) -> None:
    hs = harness.hs
    bob = await harness.user("bob")
    dev = Device(bob)
    status, _ = await upload(harness, dev, device_keys=dev.device_keys(), one_time_keys=dev.otk(1))
    assert status == 200
    answers = hs.device_answers
    for call in (
        lambda: answers.devices(EVE),
        lambda: answers.query({EVE: []}),
    ):
        with pytest.raises(MatrixError) as e:
            call()
        assert e.value.status == 400
    with pytest.raises(MatrixError):
        await answers.claim({EVE: {"D": "signed_curve25519"}})
    devices = answers.devices(bob.user_id)
    assert [d["device_id"] for d in devices["devices"]] == [bob.device_id]
    assert devices["stream_id"] == hs.db.device_lists.last_sent(bob.user_id) > 0
    # a device that does not exist gets nothing, and no key is spent on it
    claimed = await answers.claim({bob.user_id: {"NOPE": "signed_curve25519"}})
    assert claimed == {"one_time_keys": {}}
    claimed = await answers.claim({bob.user_id: {bob.device_id: "signed_curve25519"}})
    assert list(claimed["one_time_keys"][bob.user_id][bob.device_id]) == ["signed_curve25519:K1"]


async def test_remote_keys_are_checked_and_cached(
    harness: Harness, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    hs = harness.hs
    assert hs.outbound is not None
    good = remote_device(EVE, "GOOD")
    forged = remote_device(EVE, "FORGED", key=nacl.signing.SigningKey.generate())
    asked: list[tuple[str, str]] = []

    async def request(destination: str, method: str, path: str, **kw: Any) -> Any:
        asked.append((destination, path))
        if destination == "down.test":
            raise Unreachable("no route")
        return {
            "device_keys": {
                EVE: {"GOOD": good, "FORGED": forged, "OTHER": good},
                "@zed:evil.test": {"Z": remote_device("@zed:evil.test", "Z")},
            }
        }

    monkeypatch.setattr(hs.outbound.client, "request", request)
    body = {"device_keys": {EVE: [], "@x:down.test": []}, "timeout": 1000}
    status, answer = await harness.request("POST", "keys/query", alice, json=body)
    assert status == 200
    assert answer["device_keys"][EVE] == {"GOOD": good}  # forged, misnamed and foreign keys dropped
    assert "down.test" in answer["failures"] and "@zed:evil.test" not in answer["device_keys"]
    assert hs.db.device_lists.cached(EVE) == {"devices": {"GOOD": good}}
    # answered from the cache until an update drops it
    asked.clear()
    status, answer = await harness.request("POST", "keys/query", alice, json={"device_keys": {EVE: []}})
    assert answer["device_keys"][EVE] == {"GOOD": good} and asked == []
    await hs.device_updates.handlers()["m.device_list_update"](PEER, {"user_id": EVE, "device_id": "N", "stream_id": 3})
    await harness.request("POST", "keys/query", alice, json={"device_keys": {EVE: []}})
    assert [d for d, _ in asked] == [PEER]


async def test_our_device_changes_go_out_as_a_chain(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    hs = harness.hs
    assert hs.federation is not None
    sent: list[tuple[str, str, dict[str, Any]]] = []
    monkeypatch.setattr(hs.federation.sender, "send_edu", lambda d, t, c: sent.append((d, t, c)))
    monkeypatch.setattr(hs.device_relay, "servers_sharing", lambda user_id: [PEER])
    bob = await harness.user("bob")
    dev = Device(bob)
    await upload(harness, dev, device_keys=dev.device_keys())
    status, _ = await harness.request("PUT", "sendToDevice/m.test/t1", bob, json={"messages": {EVE: {"D": {"x": 1}}}})
    assert status == 200
    status, _ = await harness.request("PUT", f"devices/{bob.device_id}", bob, json={"display_name": "Bob's phone"})
    assert status == 200
    await hs.accounts.delete_devices(bob.user_id, [bob.device_id])
    updates = [c for _, t, c in sent if t == "m.device_list_update"]
    assert len(updates) == 3 and updates[0]["keys"] == dev.device_keys() and updates[0]["prev_id"] == []
    assert updates[1]["device_display_name"] == "Bob's phone" and updates[1]["keys"] == dev.device_keys()
    assert updates[2]["deleted"] is True and "keys" not in updates[2]
    for earlier, later in itertools.pairwise(updates):
        assert later["prev_id"] == [earlier["stream_id"]]
    (to_device,) = [c for d, t, c in sent if t == "m.direct_to_device"]
    assert to_device["sender"] == bob.user_id and to_device["messages"] == {EVE: {"D": {"x": 1}}}
    assert to_device["message_id"]


async def test_a_resync_keeps_only_keys_that_hold_up(
    harness: Harness, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    hs = harness.hs
    assert hs.outbound is not None
    good = remote_device(EVE, "GOOD")
    forged = remote_device(EVE, "FORGED", key=nacl.signing.SigningKey.generate())
    answer: dict[str, Any] = {
        "user_id": EVE,
        "stream_id": 12,
        "devices": [
            {"device_id": "GOOD", "keys": good, "device_display_name": "phone"},
            {"device_id": "FORGED", "keys": forged},
            {"device_id": "OTHER", "keys": good},
        ],
    }

    async def request(destination: str, method: str, path: str, **kw: Any) -> Any:
        assert (destination, method) == (PEER, "GET") and path.endswith("/user/devices/%40eve%3Apeer.test")
        return answer

    monkeypatch.setattr(hs.outbound.client, "request", request)
    await hs.device_updates.remote.resync(EVE)
    stream = hs.db.device_lists
    assert stream.cached(EVE) == {"devices": {"GOOD": {**good, "unsigned": {"device_display_name": "phone"}}}}
    assert stream.remote_stream(EVE) == 12
    # the answer is about somebody else: nothing kept
    answer["user_id"] = "@zed:peer.test"
    batch = hs.db.store.batch()
    with batch:
        stream.drop_cache(EVE, batch)
        await batch.commit()
    await hs.device_updates.remote.resync(EVE)
    assert stream.cached(EVE) is None


async def test_a_cache_is_not_trusted_once_no_room_is_shared(
    harness: Harness, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    hs = harness.hs
    assert hs.outbound is not None
    stranger = "@nobody:peer.test"  # shares no room with anyone here: their server owes us no updates
    fresh = remote_device(stranger, "NEW")
    batch = hs.db.store.batch()
    with batch:
        hs.db.device_lists.cache(stranger, {"devices": {"OLD": remote_device(stranger, "OLD")}}, batch)
        await batch.commit()

    async def request(destination: str, method: str, path: str, **kw: Any) -> Any:
        return {"device_keys": {stranger: {"NEW": fresh}}}

    monkeypatch.setattr(hs.outbound.client, "request", request)
    status, answer = await harness.request("POST", "keys/query", alice, json={"device_keys": {stranger: []}})
    assert status == 200 and answer["device_keys"][stranger] == {"NEW": fresh}


async def test_device_list_of_an_unknown_or_foreign_user_over_http(harness: Harness) -> None:
    """GET /user/devices/{userId}: the spec names no error for a local user who does not exist, and
    Synapse answers with an empty list (a resyncing peer then holds "no devices", not an error to
    retry); a user of another server is not ours to answer for (400, as Synapse answers)."""
    await trust_remote(harness)
    bob = await harness.user("bob")
    dev = Device(bob)
    await upload(harness, dev, device_keys=dev.device_keys())
    status, _, raw = await fed_get(harness, f"/_matrix/federation/v1/user/devices/{quote('@nobody:hs.test', safe='')}")
    assert status == 200 and orjson.loads(raw) == {"user_id": "@nobody:hs.test", "stream_id": 0, "devices": []}
    status, _, raw = await fed_get(harness, f"/_matrix/federation/v1/user/devices/{quote(bob.user_id, safe='')}")
    assert status == 200 and [d["device_id"] for d in orjson.loads(raw)["devices"]] == [bob.device_id]
    for foreign in (EVE, "not-a-user-id"):
        status, _, raw = await fed_get(harness, f"/_matrix/federation/v1/user/devices/{quote(foreign, safe='')}")
        assert status == 400 and orjson.loads(raw)["errcode"] == "M_INVALID_PARAM", raw
    status, _, _ = await fed_get(harness, "/_matrix/federation/v1/user/devices/%40nobody%3Ahs.test", sign=False)
    assert status == 401
