"""End-to-end encryption endpoints: keys, claims, cross-signing, to-device, key backup, device lists."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import nacl.signing
import pytest

from homeserver.protocol import unpadded_base64
from homeserver.protocol.signing import sign_json
from homeserver.rooms.creation import RoomCreation, create_room

from .conftest import Harness, User
from .sync_helpers import wait_until


def b64(key: nacl.signing.VerifyKey) -> str:
    return unpadded_base64.encode(bytes(key))


class Device:
    """A client device's keys, signed as a real client signs them."""

    def __init__(self, user: User) -> None:
        self.user = user
        self.ed = nacl.signing.SigningKey.generate()
        self.key_id = f"ed25519:{user.device_id}"

    def device_keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {
            "user_id": self.user.user_id,
            "device_id": self.user.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {self.key_id: b64(self.ed.verify_key), f"curve25519:{self.user.device_id}": "Y3VydmU"},
        }
        return dict(sign_json(keys, self.user.user_id, self.key_id, self.ed))

    def otk(self, n: int, *, fallback: bool = False) -> dict[str, Any]:
        key: dict[str, Any] = {"key": f"otk{n:04d}"}
        if fallback:
            key["fallback"] = True
        return {f"signed_curve25519:K{n}": dict(sign_json(key, self.user.user_id, self.key_id, self.ed))}


async def upload(h: Harness, dev: Device, **body: Any) -> tuple[int, Any]:
    return await h.request("POST", "keys/upload", dev.user, json=body)


async def test_upload_query_and_bad_signatures(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    dev = Device(alice)
    status, body = await upload(harness, dev, device_keys=dev.device_keys(), one_time_keys={**dev.otk(1), **dev.otk(2)})
    assert status == 200 and body["one_time_key_counts"] == {"signed_curve25519": 2}
    status, body = await harness.request("POST", "keys/query", bob, json={"device_keys": {alice.user_id: []}})
    assert status == 200
    got = body["device_keys"][alice.user_id][alice.device_id]
    assert got["keys"][dev.key_id] == b64(dev.ed.verify_key)
    assert got["signatures"][alice.user_id][dev.key_id]

    # a tampered key, keys for another device, and an unsigned one-time key object are refused
    tampered = dev.device_keys()
    tampered["algorithms"] = ["evil"]
    status, body = await upload(harness, dev, device_keys=tampered)
    assert status == 400 and body["errcode"] == "M_INVALID_SIGNATURE"
    other = dev.device_keys()
    other["device_id"] = "OTHER"
    status, body = await upload(harness, dev, device_keys=other)
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    forged = {"signed_curve25519:X": {"key": "x", "signatures": {alice.user_id: {dev.key_id: "AAAA"}}}}
    status, body = await upload(harness, dev, one_time_keys=forged)
    assert status == 400 and body["errcode"] == "M_INVALID_SIGNATURE"
    # nothing of the refused uploads was stored
    status, body = await harness.request("POST", "keys/query", bob, json={"device_keys": {alice.user_id: []}})
    assert body["device_keys"][alice.user_id][alice.device_id]["algorithms"] != ["evil"]
    assert harness.hs.db.one_time_keys.counts(alice.user_id, alice.device_id) == {"signed_curve25519": 2}


@pytest.mark.parametrize("harness", [{}, {"fsync": True}], indirect=True, ids=["no-fsync", "fsync"])
async def test_claim_hands_out_each_key_once_then_the_fallback(harness: Harness) -> None:
    """Parallel claims for one device never share a one-time key, also when each commit waits for a
    synced write (fsync: claims then overlap for longer)."""
    alice, bob = await harness.user("alice"), await harness.user("bob")
    dev = Device(alice)
    otks: dict[str, Any] = {}
    for n in range(20):
        otks.update(dev.otk(n))
    await upload(
        harness, dev, device_keys=dev.device_keys(), one_time_keys=otks, fallback_keys=dev.otk(99, fallback=True)
    )
    want = {"one_time_keys": {alice.user_id: {alice.device_id: "signed_curve25519"}}}
    results = await asyncio.gather(*(harness.request("POST", "keys/claim", bob, json=want) for _ in range(30)))
    claimed = []
    for status, body in results:
        assert status == 200
        (key_id,) = body["one_time_keys"][alice.user_id][alice.device_id]
        claimed.append(key_id)
    one_time = [k for k in claimed if k != "signed_curve25519:K99"]
    assert len(one_time) == 20 and len(set(one_time)) == 20  # every one-time key exactly once
    assert claimed.count("signed_curve25519:K99") == 10  # then the fallback key, which is not consumed
    ext = await harness.hs.e2ee.sync_extensions(alice.user_id, alice.device_id, None, 10**9)
    assert ext["device_one_time_keys_count"] == {"signed_curve25519": 0}  # zero, not absent
    assert ext["device_unused_fallback_key_types"] == []  # the fallback key has been used


async def test_cross_signing_and_signatures(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    dev = Device(alice)
    await upload(harness, dev, device_keys=dev.device_keys())
    master, ssk, usk = (nacl.signing.SigningKey.generate() for _ in range(3))

    def cs_key(key: nacl.signing.SigningKey, usage: str, signer: nacl.signing.SigningKey | None) -> dict[str, Any]:
        pub = b64(key.verify_key)
        obj: dict[str, Any] = {"user_id": alice.user_id, "usage": [usage], "keys": {f"ed25519:{pub}": pub}}
        if signer is not None:
            sign_json(obj, alice.user_id, f"ed25519:{b64(signer.verify_key)}", signer)
        return obj

    body = {
        "master_key": cs_key(master, "master", None),
        "self_signing_key": cs_key(ssk, "self_signing", master),
        "user_signing_key": cs_key(usk, "user_signing", master),
    }
    # the first upload needs no user-interactive auth (spec: POST /keys/device_signing/upload)
    status, _ = await harness.request("POST", "keys/device_signing/upload", alice, json=body)
    assert status == 200
    status, _ = await harness.request("POST", "keys/device_signing/upload", alice, json=body)
    assert status == 200  # the same keys again: idempotent, still no auth
    bad = {"self_signing_key": cs_key(ssk, "self_signing", usk)}  # not signed by the master key
    status, err = await harness.request(
        "POST",
        "/_matrix/client/unstable/keys/device_signing/upload",
        alice,
        json={**bad, "master_key": body["master_key"]},
    )
    # replacing a key needs user-interactive auth: the challenge comes first
    assert status == 401 and "flows" in err
    new_ssk = nacl.signing.SigningKey.generate()
    replace = {"self_signing_key": cs_key(new_ssk, "self_signing", master)}
    status, err = await harness.request("POST", "keys/device_signing/upload", alice, json=replace)
    assert status == 401
    auth = {
        "type": "m.login.password",
        "session": err["session"],
        "password": "wrong",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
    }
    status, err2 = await harness.request("POST", "keys/device_signing/upload", alice, json={**replace, "auth": auth})
    assert status == 401 and err2.get("errcode") == "M_FORBIDDEN"
    auth["password"] = "correct horse"
    status, _ = await harness.request("POST", "keys/device_signing/upload", alice, json={**replace, "auth": auth})
    assert status == 200
    assert harness.hs.db.cross_signing.get(alice.user_id, "self_signing") == replace["self_signing_key"]
    ssk = new_ssk

    # the self-signing key signs the device
    signed_device = dev.device_keys()
    ssk_id = f"ed25519:{b64(ssk.verify_key)}"
    sig = sign_json({k: v for k, v in signed_device.items() if k != "signatures"}, alice.user_id, ssk_id, ssk)
    signed_device["signatures"][alice.user_id][ssk_id] = sig["signatures"][alice.user_id][ssk_id]
    status, body2 = await harness.request(
        "POST", "keys/signatures/upload", alice, json={alice.user_id: {alice.device_id: signed_device}}
    )
    assert status == 200 and body2["failures"] == {}
    forged = dict(signed_device)
    forged["signatures"] = {alice.user_id: {ssk_id: "AAAA" * 22}}
    status, body2 = await harness.request(
        "POST", "keys/signatures/upload", alice, json={alice.user_id: {alice.device_id: forged}}
    )
    assert body2["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"

    status, q = await harness.request("POST", "keys/query", bob, json={"device_keys": {alice.user_id: []}})
    assert q["master_keys"][alice.user_id]["usage"] == ["master"]
    assert alice.user_id in q["self_signing_keys"]
    assert alice.user_id not in q["user_signing_keys"]  # only the owner sees the user-signing key
    assert ssk_id in q["device_keys"][alice.user_id][alice.device_id]["signatures"][alice.user_id]
    status, q = await harness.request("POST", "keys/query", alice, json={"device_keys": {alice.user_id: []}})
    assert alice.user_id in q["user_signing_keys"]


async def test_to_device_delivery_and_acknowledgement(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    bob2 = await harness.hs.accounts.new_session(bob.user_id)
    msg = {"messages": {bob.user_id: {"*": {"hello": 1}}}}
    status, _ = await harness.request("PUT", "sendToDevice/m.test/txn1", alice, json=msg)
    assert status == 200
    status, _ = await harness.request("PUT", "sendToDevice/m.test/txn1", alice, json=msg)  # retried: no duplicate
    e2ee = harness.hs.e2ee
    now = harness.hs.db.store.counter.visible
    first = await e2ee.sync_extensions(bob.user_id, bob.device_id, None, now)
    assert first["to_device"]["events"] == [{"sender": alice.user_id, "type": "m.test", "content": {"hello": 1}}]
    other = await e2ee.sync_extensions(bob.user_id, bob2.device_id, None, now)
    assert len(other["to_device"]["events"]) == 1  # "*" reached every device
    # a retry with no since gets the message again; a since past it acknowledges and deletes it
    again = await e2ee.sync_extensions(bob.user_id, bob.device_id, None, now)
    assert len(again["to_device"]["events"]) == 1
    acked = await e2ee.sync_extensions(bob.user_id, bob.device_id, now, harness.hs.db.store.counter.visible)
    assert acked["to_device"]["events"] == []


async def test_key_backup(harness: Harness) -> None:
    alice = await harness.user("alice")
    status, body = await harness.request("GET", "room_keys/version", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    auth = {"public_key": "abc", "signatures": {}}
    status, body = await harness.request(
        "POST",
        "room_keys/version",
        alice,
        json={"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": auth},
    )
    version = body["version"]

    def session(index: int, verified: bool, forwarded: int = 0) -> dict[str, Any]:
        return {
            "first_message_index": index,
            "forwarded_count": forwarded,
            "is_verified": verified,
            "session_data": {"ciphertext": f"c{index}{verified}{forwarded}"},
        }

    path = f"room_keys/keys/!r:hs.test/s1?version={version}"
    status, body = await harness.request("PUT", path, alice, json=session(5, False))
    assert status == 200 and body["count"] == 1
    etag1 = body["etag"]
    await harness.request("PUT", path, alice, json=session(7, False))  # worse index: kept the old one
    await harness.request("PUT", path, alice, json=session(9, True))  # verified wins over index
    status, got = await harness.request("GET", path, alice)
    assert got["first_message_index"] == 9 and got["is_verified"] is True
    await harness.request("PUT", path, alice, json=session(9, True, forwarded=3))  # more forwarded: kept
    status, got = await harness.request("GET", path, alice)
    assert got["forwarded_count"] == 0
    status, rooms = await harness.request("GET", f"room_keys/keys?version={version}", alice)
    assert list(rooms["rooms"]["!r:hs.test"]["sessions"]) == ["s1"]
    status, info = await harness.request("GET", "room_keys/version", alice)
    assert info["version"] == version and info["count"] == 1 and info["etag"] != etag1
    # writing to an old version is refused
    status, body = await harness.request(
        "POST",
        "room_keys/version",
        alice,
        json={"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": auth},
    )
    status, body = await harness.request("PUT", path, alice, json=session(1, True))
    assert status == 403 and body["errcode"] == "M_WRONG_ROOM_KEYS_VERSION"
    status, body = await harness.request("DELETE", f"room_keys/version/{version}", alice)
    assert status == 200
    status, body = await harness.request("GET", f"room_keys/version/{version}", alice)
    assert status == 404


async def test_device_list_changes_reach_room_members(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    room_id = await create_room(
        harness.hs.pipeline, RoomCreation(creator=alice.user_id, room_version="11", preset="public_chat")
    )
    await harness.hs.pipeline.send(room_id, bob.user_id, "m.room.member", {"membership": "join"}, bob.user_id)
    since = harness.hs.db.store.counter.visible
    woken: list[list[str]] = []
    harness.hs.e2ee.add_listener(lambda users: woken.append(sorted(users)))
    dev = Device(bob)
    await upload(harness, dev, device_keys=dev.device_keys())
    now = harness.hs.db.store.counter.visible
    ext = await harness.hs.e2ee.sync_extensions(alice.user_id, alice.device_id, since, now)
    assert ext["device_lists"]["changed"] == [bob.user_id]
    assert woken and alice.user_id in woken[-1]
    status, body = await harness.request("GET", f"keys/changes?from=s{since}&to=s{now}", alice)
    assert status == 200 and body["changed"] == [bob.user_id]
    # bob leaves: alice no longer shares a room with him
    since = now
    await harness.hs.pipeline.send(room_id, bob.user_id, "m.room.member", {"membership": "leave"}, bob.user_id)
    ext = await harness.hs.e2ee.sync_extensions(
        alice.user_id, alice.device_id, since, harness.hs.db.store.counter.visible
    )
    assert ext["device_lists"]["left"] == [bob.user_id]


async def test_deleting_a_device_forgets_its_keys(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    dev = Device(alice)
    await upload(harness, dev, device_keys=dev.device_keys(), one_time_keys=dev.otk(1))
    messages = {"messages": {alice.user_id: {alice.device_id: {"x": 1}}}}
    status, _ = await harness.request("PUT", "sendToDevice/m.test/t1", bob, json=messages)
    assert status == 200
    inbox = harness.hs.db.to_device
    assert len(inbox.pending(alice.user_id, alice.device_id, 2**62, 10)) == 1
    since = harness.hs.db.store.counter.visible
    status, err = await harness.request("DELETE", f"devices/{alice.device_id}", alice, json={})
    assert status == 401
    auth = {
        "type": "m.login.password",
        "session": err["session"],
        "password": "correct horse",
        "identifier": {"type": "m.id.user", "user": alice.user_id},
    }
    status, _ = await harness.request("DELETE", f"devices/{alice.device_id}", alice, json={"auth": auth})
    assert status == 200
    status, q = await harness.request("POST", "keys/query", bob, json={"device_keys": {alice.user_id: []}})
    assert q["device_keys"][alice.user_id] == {}
    assert harness.hs.db.one_time_keys.counts(alice.user_id, alice.device_id) == {}
    assert inbox.pending(alice.user_id, alice.device_id, 2**62, 10) == []  # its to-device messages went too
    assert alice.user_id in harness.hs.db.device_lists.changes(since, harness.hs.db.store.counter.visible)


def q(value: str) -> str:
    return quote(value, safe="")


async def _sync(harness: Harness, user: User, since: str | None = None, timeout: int = 0) -> dict[str, Any]:
    query = f"timeout={timeout}" + (f"&since={since}" if since else "")
    status, body = await harness.request("GET", f"sync?{query}", user)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


async def _password_login(harness: Harness, localpart: str) -> User:
    status, body = await harness.request(
        "POST",
        "login",
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": localpart},
            "password": "correct horse",
        },
    )
    assert status == 200, body
    return User(body["user_id"], body["device_id"], body["access_token"])


async def _delete_device(harness: Harness, user: User, device_id: str) -> None:
    status, err = await harness.request("DELETE", f"devices/{device_id}", user, json={})
    assert status == 401
    auth = {
        "type": "m.login.password",
        "session": err["session"],
        "password": "correct horse",
        "identifier": {"type": "m.id.user", "user": user.user_id},
    }
    status, body = await harness.request("DELETE", f"devices/{device_id}", user, json={"auth": auth})
    assert status == 200, body


async def test_device_list_changes_in_the_next_sync(harness: Harness) -> None:
    """spec: e2e "Tracking the device list for a user": a new device, a removed device, a user who
    joins or leaves an encrypted room reach the other members' next /sync (device_lists), and
    GET /keys/changes between the same tokens agrees."""
    alice, bob, carol, dave = [await harness.user(n) for n in ("alice", "bob", "carol", "dave")]
    encryption = {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}
    status, created = await harness.request(
        "POST", "createRoom", alice, json={"preset": "public_chat", "initial_state": [encryption]}
    )
    assert status == 200, created
    room_id = created["room_id"]
    status, _ = await harness.request("POST", f"join/{q(room_id)}", bob, json={})
    assert status == 200
    for user in (alice, bob):
        await upload(harness, Device(user), device_keys=Device(user).device_keys())
    first = await _sync(harness, alice)
    assert "device_lists" not in first or first["device_lists"] == {"changed": [], "left": []}
    since = first["next_batch"]

    # a new device: bob logs in on a second device, which uploads its keys
    bob2 = await _password_login(harness, "bob")
    dev2 = Device(bob2)
    await upload(harness, dev2, device_keys=dev2.device_keys())
    await upload(harness, Device(dave), device_keys=Device(dave).device_keys())  # shares no room with alice
    body = await _sync(harness, alice, since)
    assert body["device_lists"]["changed"] == [bob.user_id]
    status, query = await harness.request("POST", "keys/query", alice, json={"device_keys": {bob.user_id: []}})
    assert sorted(query["device_keys"][bob.user_id]) == sorted([bob.device_id, bob2.device_id])
    since = body["next_batch"]

    # a removed device
    await _delete_device(harness, bob, bob2.device_id)
    body = await _sync(harness, alice, since)
    assert body["device_lists"]["changed"] == [bob.user_id]
    status, query = await harness.request("POST", "keys/query", alice, json={"device_keys": {bob.user_id: []}})
    assert list(query["device_keys"][bob.user_id]) == [bob.device_id]
    since = body["next_batch"]

    # carol joins the encrypted room: the members learn of her, she learns of them
    carol_since = (await _sync(harness, carol))["next_batch"]
    status, _ = await harness.request("POST", f"join/{q(room_id)}", carol, json={})
    assert status == 200
    body = await _sync(harness, alice, since)
    assert carol.user_id in body["device_lists"]["changed"]
    assert body["device_lists"]["left"] == []
    carols = await _sync(harness, carol, carol_since)
    assert {alice.user_id, bob.user_id} <= set(carols["device_lists"]["changed"])
    since, joined_at = body["next_batch"], body["next_batch"]

    # carol leaves: she shares no room with alice any more
    status, _ = await harness.request("POST", f"rooms/{q(room_id)}/leave", carol, json={})
    assert status == 200
    body = await _sync(harness, alice, since)
    assert body["device_lists"]["left"] == [carol.user_id]
    assert carol.user_id not in body["device_lists"]["changed"]

    # GET /keys/changes with the sync tokens tells the same
    status, changes = await harness.request("GET", f"keys/changes?from={first['next_batch']}&to={joined_at}", alice)
    assert status == 200 and set(changes["changed"]) == {bob.user_id, carol.user_id}
    status, changes = await harness.request("GET", f"keys/changes?from={joined_at}&to={body['next_batch']}", alice)
    assert status == 200 and changes == {"changed": [], "left": [carol.user_id]}


async def test_a_device_list_change_wakes_a_waiting_sync(harness: Harness) -> None:
    alice, bob = await harness.user("alice"), await harness.user("bob")
    status, created = await harness.request("POST", "createRoom", alice, json={"preset": "public_chat"})
    assert status == 200, created
    status, _ = await harness.request("POST", f"join/{q(created['room_id'])}", bob, json={})
    assert status == 200
    since = (await _sync(harness, alice))["next_batch"]
    waiting = asyncio.create_task(_sync(harness, alice, since, timeout=10_000))
    await wait_until(lambda: harness.hs.notifier.waiting(alice.user_id) > 0)
    started = asyncio.get_running_loop().time()
    dev = Device(bob)
    await upload(harness, dev, device_keys=dev.device_keys())
    body = await asyncio.wait_for(waiting, 5)
    assert body["device_lists"]["changed"] == [bob.user_id]
    assert asyncio.get_running_loop().time() - started < 5


async def test_key_backup_room_and_bulk_forms(harness: Harness) -> None:
    """The room_keys endpoints at each level (all keys, a room, a session), as clients use them, with
    the spec's answers for missing and deleted backups."""
    alice = await harness.user("alice")
    room, other = "!r:hs.test", "!o:hs.test"

    def session(index: int) -> dict[str, Any]:
        return {
            "first_message_index": index,
            "forwarded_count": 0,
            "is_verified": False,
            "session_data": {"ephemeral": "e", "ciphertext": f"c{index}", "mac": "m"},
        }

    # no backup yet: writing keys is "backup not found"
    status, body = await harness.request("PUT", "room_keys/keys?version=1", alice, json={"rooms": {}})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    algorithm = "m.megolm_backup.v1.curve25519-aes-sha2"
    status, body = await harness.request(
        "POST", "room_keys/version", alice, json={"algorithm": algorithm, "auth_data": {"public_key": "k"}}
    )
    version = body["version"]

    # all rooms at once (what js-sdk's backup loop sends), then one room
    rooms = {room: {"sessions": {"s1": session(0), "s2": session(0)}}}
    status, body = await harness.request("PUT", f"room_keys/keys?version={version}", alice, json={"rooms": rooms})
    assert status == 200 and body["count"] == 2
    status, body = await harness.request(
        "PUT", f"room_keys/keys/{q(other)}?version={version}", alice, json={"sessions": {"s3": session(4)}}
    )
    assert status == 200 and body["count"] == 3
    status, body = await harness.request("GET", f"room_keys/keys/{q(room)}?version={version}", alice)
    assert status == 200 and sorted(body["sessions"]) == ["s1", "s2"]
    status, body = await harness.request("GET", f"room_keys/keys/{q('!none:hs.test')}?version={version}", alice)
    assert status == 200 and body == {"sessions": {}}
    status, body = await harness.request("GET", f"room_keys/keys/{q(room)}/nope?version={version}", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"

    # deletes at each level
    status, body = await harness.request("DELETE", f"room_keys/keys/{q(room)}/s1?version={version}", alice)
    assert status == 200 and body["count"] == 2
    status, body = await harness.request("DELETE", f"room_keys/keys/{q(other)}?version={version}", alice)
    assert status == 200 and body["count"] == 1
    status, body = await harness.request("DELETE", f"room_keys/keys?version={version}", alice)
    assert status == 200 and body["count"] == 0

    # the auth_data can be updated, the algorithm cannot
    status, body = await harness.request(
        "PUT", f"room_keys/version/{version}", alice, json={"algorithm": algorithm, "auth_data": {"public_key": "n"}}
    )
    assert status == 200
    status, body = await harness.request("GET", f"room_keys/version/{version}", alice)
    assert body["auth_data"] == {"public_key": "n"} and body["count"] == 0
    status, body = await harness.request(
        "PUT", f"room_keys/version/{version}", alice, json={"algorithm": "other", "auth_data": {}}
    )
    assert status == 400

    # a second version: the first can no longer be written, and deleting it twice succeeds twice
    status, body = await harness.request(
        "POST", "room_keys/version", alice, json={"algorithm": algorithm, "auth_data": {"public_key": "k2"}}
    )
    newer = body["version"]
    status, body = await harness.request("PUT", f"room_keys/keys?version={version}", alice, json={"rooms": rooms})
    assert status == 403 and body["errcode"] == "M_WRONG_ROOM_KEYS_VERSION" and body["current_version"] == newer
    for _ in range(2):
        status, body = await harness.request("DELETE", f"room_keys/version/{version}", alice)
        assert status == 200, body
    status, body = await harness.request("DELETE", "room_keys/version/999", alice)
    assert status == 404
    status, body = await harness.request("GET", "room_keys/version", alice)
    assert body["version"] == newer
