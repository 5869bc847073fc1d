"""The end-to-end encryption stores (one per sub-domain) write the keys and values the single
E2EE store of earlier versions wrote: a store written before the split opens unchanged."""

from __future__ import annotations

from pathlib import Path

from storage.codec import u64
from storage.cross_signing import CrossSigningStore
from storage.device_keys import DeviceKeyStore
from storage.device_lists import DeviceListStore
from storage.engine import Store
from storage.key_backup import KeyBackupStore
from storage.one_time_keys import OneTimeKeyStore
from storage.to_device import ToDeviceStore

S = b"\xff"
USER, DEVICE = "@a:hs", "DEV"


def raw_rows(store: Store) -> dict[bytes, bytes]:
    return {k: v for k, v in store.db.iterator() if not k.startswith(b"meta" + S)}


def test_keys_and_values_are_those_of_the_schema(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        device_keys, otk, cross = DeviceKeyStore(store), OneTimeKeyStore(store), CrossSigningStore(store)
        lists, inboxes, backups = DeviceListStore(store), ToDeviceStore(store), KeyBackupStore(store)
        with store.batch() as b:
            device_keys.put(USER, DEVICE, {"b": 1, "a": 2}, b)
            otk.put(USER, DEVICE, "curve", 7, "K1", {"key": "x"}, b)
            otk.put_fallback_key(USER, DEVICE, "curve", {"key_id": "F", "used": False}, b)
            cross.put(USER, "master", {"k": 1}, b)
            cross.put_signature(USER, "ed25519:K", "@b:hs", "ed25519:S", "sig", b)
            first = lists.mark_changed(USER, b)
            message = inboxes.put(USER, DEVICE, {"type": "t"}, b)
            inboxes.set_last_delivered(USER, DEVICE, message, b)
            inboxes.mark_txn(USER, DEVICE, "txn", b)
            backups.put_version(USER, 1, {"etag": 0}, b)
            backups.put_key(USER, 1, "!r:hs", "sess", {"i": 0}, b)
            store.commit_now(b)
        assert raw_rows(store) == {
            b"e2e_device_keys" + S + b"@a:hs" + S + b"DEV": b'{"a":2,"b":1}',
            b"e2e_one_time_keys" + S + b"@a:hs" + S + b"DEV" + S + b"curve" + S + u64(7) + S + b"K1": b'{"key":"x"}',
            b"e2e_fallback_keys" + S + b"@a:hs" + S + b"DEV" + S + b"curve": b'{"key_id":"F","used":false}',
            b"e2e_cross_signing" + S + b"@a:hs" + S + b"master": b'{"k":1}',
            b"e2e_signatures" + S + b"@a:hs" + S + b"ed25519:K" + S + b"@b:hs" + S + b"ed25519:S": b"sig",
            b"e2e_device_list_stream" + S + u64(first) + S + b"@a:hs": b"",
            b"e2e_device_list_latest" + S + b"@a:hs": u64(first),
            b"to_device" + S + b"@a:hs" + S + b"DEV" + S + u64(message): b'{"type":"t"}',
            b"to_device_delivered" + S + b"@a:hs" + S + b"DEV": u64(message),
            b"to_device_txns" + S + b"@a:hs" + S + b"DEV" + S + b"txn": b"",
            b"key_backup_versions" + S + b"@a:hs" + S + u64(1): b'{"etag":0}',
            b"key_backup_keys" + S + b"@a:hs" + S + u64(1) + S + b"!r:hs" + S + b"sess": b'{"i":0}',
        }
        # and they read back through the same stores
        assert otk.counts(USER, DEVICE) == {"curve": 1}
        assert [k for _, k, _ in otk.oldest_first(USER, DEVICE, "curve")] == ["K1"]
        assert list(lists.changes(first - 1, first)) == [USER]
        assert [(r, s) for r, s, _ in backups.keys(USER, 1)] == [("!r:hs", "sess")]


def test_a_deleted_device_leaves_no_rows(tmp_path: Path) -> None:
    with Store(tmp_path / "db") as store:
        device_keys, otk, inboxes = DeviceKeyStore(store), OneTimeKeyStore(store), ToDeviceStore(store)
        with store.batch() as b:
            device_keys.put(USER, DEVICE, {}, b)
            otk.put(USER, DEVICE, "curve", 1, "K", "x", b)
            otk.put_fallback_key(USER, DEVICE, "curve", {}, b)
            inboxes.set_last_delivered(USER, DEVICE, inboxes.put(USER, DEVICE, {}, b), b)
            store.commit_now(b)
        with store.batch() as b:
            device_keys.delete(USER, DEVICE, b)
            otk.delete_device(USER, DEVICE, b)
            inboxes.delete_device(USER, DEVICE, b)
            store.commit_now(b)
        assert raw_rows(store) == {}
