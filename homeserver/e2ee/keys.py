"""Device keys, one-time and fallback keys, cross-signing keys and signatures.

spec: client-server-api modules/end_to_end_encryption.md "Key Distribution", "Cross-signing",
and the key management API (POST /keys/upload, /keys/query, /keys/claim, GET /keys/changes,
POST /keys/device_signing/upload, /keys/signatures/upload).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import nacl.signing

from homeserver.errors import MatrixError
from homeserver.protocol import unpadded_base64
from homeserver.protocol.errors import Base64Error, SignatureError
from homeserver.protocol.signing import verify_json
from homeserver.rooms.queries import RoomQueries
from storage.cross_signing import CrossSigningStore
from storage.device_keys import DeviceKeyStore
from storage.device_lists import DeviceListStore
from storage.engine import Batch, Store
from storage.one_time_keys import OneTimeKeyStore

if TYPE_CHECKING:
    from homeserver.auth.accounts import Accounts

MAX_KEYS_PER_UPLOAD = 1000
CROSS_SIGNING_USAGES = ("master", "self_signing", "user_signing")


def _bad(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


def _ed25519_key(b64: str) -> nacl.signing.VerifyKey:
    try:
        raw = unpadded_base64.decode(b64)
    except Base64Error:
        raise _bad("an ed25519 key is not unpadded base64") from None
    if len(raw) != 32:
        raise _bad("an ed25519 key must be 32 bytes")
    return nacl.signing.VerifyKey(raw)


def _check_signed_by(obj: Mapping[str, Any], user_id: str, key_id: str, key_b64: str, what: str) -> None:
    try:
        verify_json(obj, user_id, key_id, _ed25519_key(key_b64))
    except SignatureError as e:
        raise MatrixError(400, "M_INVALID_SIGNATURE", f"{what}: {e}") from None


def _only_key(obj: Mapping[str, Any], what: str) -> tuple[str, str]:
    """The (key id, public key) of a cross-signing key, which holds exactly one ed25519 key."""
    keys = obj.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise _bad(f"{what} must hold exactly one key")
    ((key_id, value),) = keys.items()
    if not isinstance(key_id, str) or not key_id.startswith("ed25519:") or not isinstance(value, str):
        raise _bad(f"{what} must hold one ed25519 key")
    if key_id != "ed25519:" + value:
        raise _bad(f"{what}: the key id must be ed25519:<the public key>")
    return key_id, value


class RemoteKeys(Protocol):
    """Keys of other servers' users, asked over federation (federation/e2ee.py)."""

    async def query(self, wanted: Mapping[str, list[str]], timeout_s: float) -> dict[str, Any]:
        """`device_keys`, `master_keys`, `self_signing_keys` and `failures` (by server) for remote users."""
        ...

    async def claim(self, wanted: Mapping[str, Mapping[str, str]], timeout_s: float) -> dict[str, Any]:
        """`one_time_keys` and `failures` (by server) for remote users' devices."""
        ...


# In the batch of a change: (user, device ids, deleted) for a device's keys; (user) for cross-signing keys.
DeviceChangeListener = Callable[[str, list[str], bool, Batch], None]
SigningKeyListener = Callable[[str, Batch], None]


class Keys:
    def __init__(
        self,
        store: Store,
        device_keys: DeviceKeyStore,
        one_time_keys: OneTimeKeyStore,
        cross_signing: CrossSigningStore,
        device_lists: DeviceListStore,
        queries: RoomQueries,
        accounts: Accounts,
        *,
        notify_users: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self.store = store
        self.device_keys = device_keys
        self.one_time_keys = one_time_keys
        self.cross_signing = cross_signing
        self.device_lists = device_lists
        self.queries = queries
        self.accounts = accounts
        self.notify_users = notify_users or (lambda users: None)
        self._claim_lock = asyncio.Lock()
        self.remote: RemoteKeys | None = None  # set when federation is on
        self._device_listeners: list[DeviceChangeListener] = []
        self._signing_key_listeners: list[SigningKeyListener] = []

    def add_device_change_listener(self, listener: DeviceChangeListener) -> None:
        self._device_listeners.append(listener)

    def add_signing_key_listener(self, listener: SigningKeyListener) -> None:
        self._signing_key_listeners.append(listener)

    def _devices_changed(self, user_id: str, device_ids: list[str], deleted: bool, batch: Batch) -> None:
        for listener in self._device_listeners:
            listener(user_id, device_ids, deleted, batch)

    # -- upload ------------------------------------------------------------------------------------

    async def upload(self, user_id: str, device_id: str, body: Mapping[str, Any]) -> dict[str, int]:
        device_keys = body.get("device_keys")
        one_time = body.get("one_time_keys") or {}
        fallback = body.get("fallback_keys") or body.get("org.matrix.msc2732.fallback_keys") or {}
        if not isinstance(one_time, dict) or not isinstance(fallback, dict):
            raise _bad("one_time_keys and fallback_keys must be objects")
        if len(one_time) + len(fallback) > MAX_KEYS_PER_UPLOAD:
            raise MatrixError(400, "M_TOO_LARGE", f"at most {MAX_KEYS_PER_UPLOAD} keys per upload")
        stored = self.device_keys.get(user_id, device_id)
        changed = False
        if device_keys is not None:
            self._check_device_keys(user_id, device_id, device_keys)
            new = {k: v for k, v in device_keys.items() if k != "unsigned"}
            if stored is None or {k: v for k, v in stored.items() if k != "signatures"} != {
                k: v for k, v in new.items() if k != "signatures"
            }:
                changed = True
            elif stored.get("signatures") != new.get("signatures"):
                new["signatures"] = {**stored.get("signatures", {}), **new.get("signatures", {})}
            stored = new
        signing_key = None
        if stored is not None:
            signing_key = stored.get("keys", {}).get(f"ed25519:{device_id}")
        batch = self.store.batch()
        with batch:
            if device_keys is not None and stored is not None:
                self.device_keys.put(user_id, device_id, stored, batch)
            seq = batch.next_count() if one_time else 0
            for full_id, key in one_time.items():
                algorithm, key_id = self._split_key_id(full_id)
                self._check_key(user_id, device_id, full_id, key, signing_key)
                existing = self.one_time_keys.find(user_id, device_id, algorithm, key_id)
                if existing is not None:
                    if existing != key:
                        raise _bad(f"one-time key {full_id} already exists with a different value")
                    continue
                self.one_time_keys.put(user_id, device_id, algorithm, seq, key_id, key, batch)
            for full_id, key in fallback.items():
                algorithm, key_id = self._split_key_id(full_id)
                self._check_key(user_id, device_id, full_id, key, signing_key)
                current = self.one_time_keys.fallback_key(user_id, device_id, algorithm)
                if current is not None and current.get("key_id") == key_id and current.get("key") == key:
                    continue  # the same key again: keep its used flag
                self.one_time_keys.put_fallback_key(
                    user_id, device_id, algorithm, {"key_id": key_id, "key": key, "used": False}, batch
                )
            if changed:
                self.device_lists.mark_changed(user_id, batch)
                self._devices_changed(user_id, [device_id], False, batch)
            await batch.commit()
        if changed:
            self.notify_users(self.queries.users_sharing_a_room(user_id) | {user_id})
        return self.one_time_key_counts(user_id, device_id)

    @staticmethod
    def _split_key_id(full_id: object) -> tuple[str, str]:
        if not isinstance(full_id, str) or ":" not in full_id:
            raise _bad(f"key id {full_id!r} must be <algorithm>:<key id>")
        algorithm, _, key_id = full_id.partition(":")
        if not algorithm or not key_id or "\xff" in full_id:
            raise _bad(f"key id {full_id!r} must be <algorithm>:<key id>")
        return algorithm, key_id

    def _check_device_keys(self, user_id: str, device_id: str, keys: Any) -> None:
        if not isinstance(keys, dict):
            raise _bad("device_keys must be an object")
        if keys.get("user_id") != user_id or keys.get("device_id") != device_id:
            raise _bad("device_keys must name the uploading user and device")
        algorithms = keys.get("algorithms")
        if not isinstance(algorithms, list) or not all(isinstance(a, str) for a in algorithms):
            raise _bad("device_keys.algorithms must be a list of strings")
        key_map = keys.get("keys")
        if not isinstance(key_map, dict) or not all(isinstance(v, str) for v in key_map.values()):
            raise _bad("device_keys.keys must map key ids to strings")
        ed = key_map.get(f"ed25519:{device_id}")
        if not isinstance(ed, str):
            raise _bad(f"device_keys.keys must hold ed25519:{device_id}")
        # spec: "Uploading keys" — the device keys must be signed by the device's ed25519 key
        _check_signed_by(keys, user_id, f"ed25519:{device_id}", ed, "device_keys")

    def _check_key(self, user_id: str, device_id: str, full_id: str, key: Any, signing_key: str | None) -> None:
        if isinstance(key, str):
            return  # unsigned key formats (e.g. plain curve25519) are accepted as they are
        if not isinstance(key, dict) or not isinstance(key.get("key"), str):
            raise _bad(f"key {full_id} must be a string or an object with a key")
        if "signatures" in key:
            if signing_key is None:
                raise _bad("upload the device keys before signed one-time keys")
            _check_signed_by(key, user_id, f"ed25519:{device_id}", signing_key, f"key {full_id}")

    # -- query -------------------------------------------------------------------------------------

    async def query_everywhere(
        self, requester: str, device_keys: Mapping[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        """`/keys/query`: our users' keys from here, other servers' users' over federation (in parallel,
        each server within `timeout_s`; a server that does not answer is listed in `failures`)."""
        remote: dict[str, list[str]] = {}
        result = self.query(requester, device_keys, remote if self.remote is not None else None)
        if remote and self.remote is not None:
            answer = await self.remote.query(remote, timeout_s)
            for field in ("device_keys", "master_keys", "self_signing_keys", "failures"):
                result[field].update(answer.get(field, {}))
        return result

    async def claim_everywhere(self, wanted: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        """`/keys/claim`: one-time keys of our users from here, of other servers' users over federation."""
        remote: dict[str, dict[str, str]] = {}
        result = await self.claim(wanted, remote if self.remote is not None else None)
        if remote and self.remote is not None:
            answer = await self.remote.claim(remote, timeout_s)
            result["one_time_keys"].update(answer.get("one_time_keys", {}))
            result["failures"].update(answer.get("failures", {}))
        return result

    def query(
        self, requester: str, device_keys: Mapping[str, Any], remote: dict[str, list[str]] | None = None
    ) -> dict[str, Any]:
        """Keys of our users; those of other servers' users go into `remote` (when given) to be asked for."""
        result: dict[str, Any] = {
            "device_keys": {},
            "failures": {},
            "master_keys": {},
            "self_signing_keys": {},
            "user_signing_keys": {},
        }
        for user_id, wanted in device_keys.items():
            if not isinstance(wanted, list) or not all(isinstance(d, str) for d in wanted):
                raise _bad(f"device_keys.{user_id} must be a list of device ids")
            if not isinstance(user_id, str) or ":" not in user_id:
                raise MatrixError(400, "M_INVALID_PARAM", f"{user_id!r} is not a user id")
            if not self.queries.is_local(user_id) and remote is not None:
                remote[user_id] = list(wanted)
                continue
            if not self.queries.is_local(user_id):
                server = user_id.split(":", 1)[1]
                # Remote users' keys come over federation (its own work); say so instead of guessing.
                result["failures"][server] = {"status": 503, "message": "federation is not available"}
                continue
            devices: dict[str, Any] = {}
            names = {d: info.get("display_name") for d, info in self.accounts.devices(user_id)}
            for device_id, keys in self.device_keys.of_user(user_id):
                if (wanted and device_id not in wanted) or device_id not in names:
                    continue
                keys = self._with_signatures(keys, user_id, f"ed25519:{device_id}", requester)
                unsigned = {"device_display_name": names[device_id]} if names[device_id] else {}
                devices[device_id] = {**keys, "unsigned": unsigned}
            result["device_keys"][user_id] = devices
            for usage, field in (("master", "master_keys"), ("self_signing", "self_signing_keys")):
                key = self.cross_signing.get(user_id, usage)
                if key is not None:
                    key_id, _ = _only_key(key, usage)
                    result[field][user_id] = self._with_signatures(key, user_id, key_id, requester)
            if user_id == requester:
                key = self.cross_signing.get(user_id, "user_signing")
                if key is not None:
                    result["user_signing_keys"][user_id] = key
        return result

    def _with_signatures(self, obj: dict[str, Any], owner: str, key_id: str, requester: str) -> dict[str, Any]:
        """Merge uploaded signatures a requester may see: the owner's own, and the requester's."""
        extra = [
            (signer, sk, sig)
            for signer, sk, sig in self.cross_signing.signatures_on(owner, key_id)
            if signer in (owner, requester)
        ]
        if not extra:
            return obj
        signatures = {u: dict(s) for u, s in obj.get("signatures", {}).items()}
        for signer, sk, sig in extra:
            signatures.setdefault(signer, {})[sk] = sig
        return {**obj, "signatures": signatures}

    # -- claim -------------------------------------------------------------------------------------

    async def claim(self, wanted: Mapping[str, Any], remote: dict[str, dict[str, str]] | None = None) -> dict[str, Any]:
        """Hand out one-time keys (oldest first), then fallback keys; each one-time key at most once."""
        result: dict[str, Any] = {"one_time_keys": {}, "failures": {}}
        async with self._claim_lock:  # no other claim reads between our read and our delete
            batch = self.store.batch()
            taken: set[bytes] = set()
            with batch:
                for user_id, devices in wanted.items():
                    if not isinstance(devices, dict):
                        raise _bad(f"one_time_keys.{user_id} must map device ids to algorithms")
                    if remote is not None and isinstance(user_id, str) and not self.queries.is_local(user_id):
                        if not all(isinstance(a, str) for a in devices.values()):
                            raise _bad("algorithms must be strings")
                        remote[user_id] = dict(devices)
                        continue
                    if not isinstance(user_id, str) or not self.queries.is_local(user_id):
                        server = user_id.split(":", 1)[-1] if isinstance(user_id, str) else "?"
                        result["failures"][server] = {"status": 503, "message": "federation is not available"}
                        continue
                    for device_id, algorithm in devices.items():
                        if not isinstance(algorithm, str):
                            raise _bad("algorithms must be strings")
                        claimed = self._claim_one(user_id, device_id, algorithm, batch, taken)
                        if claimed is not None:
                            result["one_time_keys"].setdefault(user_id, {})[device_id] = claimed
                await batch.commit()
        return result

    def _claim_one(
        self, user_id: str, device_id: str, algorithm: str, batch: Batch, taken: set[bytes]
    ) -> dict[str, Any] | None:
        for table_key, key_id, key in self.one_time_keys.oldest_first(user_id, device_id, algorithm):
            if table_key in taken:
                continue  # claimed earlier in this same request
            taken.add(table_key)
            self.one_time_keys.delete(table_key, batch)
            return {f"{algorithm}:{key_id}": key}
        fallback = self.one_time_keys.fallback_key(user_id, device_id, algorithm)
        if fallback is None:
            return None
        if not fallback.get("used"):
            self.one_time_keys.put_fallback_key(user_id, device_id, algorithm, {**fallback, "used": True}, batch)
        return {f"{algorithm}:{fallback['key_id']}": fallback["key"]}

    # -- cross-signing -----------------------------------------------------------------------------

    def cross_signing_needs_auth(self, user_id: str, body: Mapping[str, Any]) -> bool:
        """spec: POST /keys/device_signing/upload — no UIA for the first upload, or for re-sending the
        keys already stored; UIA for anything that replaces a key."""
        if self.cross_signing.get(user_id, "master") is None:
            return False
        for usage in CROSS_SIGNING_USAGES:
            given = body.get(f"{usage}_key")
            if given is not None and given != self.cross_signing.get(user_id, usage):
                return True
        return False

    async def upload_cross_signing(self, user_id: str, body: Mapping[str, Any]) -> None:
        new: dict[str, dict[str, Any]] = {}
        for usage in CROSS_SIGNING_USAGES:
            key = body.get(f"{usage}_key")
            if key is None:
                continue
            if not isinstance(key, dict):
                raise _bad(f"{usage}_key must be an object")
            if key.get("user_id") != user_id:
                raise _bad(f"{usage}_key must belong to the uploading user")
            usages = key.get("usage")
            if not isinstance(usages, list) or usage not in usages:
                raise _bad(f"{usage}_key.usage must include {usage!r}")
            _only_key(key, f"{usage}_key")
            new[usage] = key
        if not new:
            raise MatrixError(400, "M_MISSING_PARAM", "no cross-signing keys given")
        master = new.get("master") or self.cross_signing.get(user_id, "master")
        for usage in ("self_signing", "user_signing"):
            if usage in new:
                if master is None:
                    raise _bad(f"{usage}_key needs a master key")
                master_id, master_pub = _only_key(master, "master_key")
                _check_signed_by(new[usage], user_id, master_id, master_pub, f"{usage}_key")
        device_ids = {d for d, _ in self.accounts.devices(user_id)}
        for usage, key in new.items():
            _, pub = _only_key(key, usage)
            if pub in device_ids:
                # spec: "Cross-signing" — device ids must not collide with cross-signing public keys
                raise MatrixError(400, "M_INVALID_PARAM", f"{usage}_key collides with a device id")
        batch = self.store.batch()
        with batch:
            for usage, key in new.items():
                self.cross_signing.put(user_id, usage, key, batch)
            self.device_lists.mark_changed(user_id, batch)
            if "master" in new or "self_signing" in new:  # the user-signing key is not shared
                for listener in self._signing_key_listeners:
                    listener(user_id, batch)
            await batch.commit()
        self.notify_users(self.queries.users_sharing_a_room(user_id) | {user_id})

    async def upload_signatures(self, requester: str, body: Mapping[str, Any]) -> dict[str, Any]:
        failures: dict[str, dict[str, Any]] = {}
        changed: set[str] = set()
        signed_devices: list[str] = []

        def fail(user: str, key_id: str, errcode: str, message: str) -> None:
            failures.setdefault(user, {})[key_id] = {"errcode": errcode, "error": message}

        batch = self.store.batch()
        with batch:
            for target_user, objects in body.items():
                if not isinstance(objects, dict):
                    raise _bad(f"{target_user} must map key ids to signed objects")
                for key_id, signed in objects.items():
                    if not isinstance(signed, dict) or not isinstance(signed.get("signatures"), dict):
                        fail(target_user, key_id, "M_BAD_JSON", "a signed object with signatures is needed")
                        continue
                    try:
                        stored_key_id, stored = self._signature_target(requester, target_user, key_id)
                        strip = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
                        if strip != {k: v for k, v in stored.items() if k not in ("signatures", "unsigned")}:
                            raise MatrixError(400, "M_INVALID_SIGNATURE", "the signed object does not match the key")
                        for signer_key_id, signer_pub in self._allowed_signers(requester, target_user, key_id):
                            sig = signed["signatures"].get(requester, {}).get(signer_key_id)
                            if not isinstance(sig, str):
                                continue
                            _check_signed_by(
                                {**stored, "signatures": {requester: {signer_key_id: sig}}},
                                requester,
                                signer_key_id,
                                signer_pub,
                                "signature",
                            )
                            self.cross_signing.put_signature(
                                target_user, stored_key_id, requester, signer_key_id, sig, batch
                            )
                            changed.add(target_user)
                            if target_user == requester and stored_key_id == f"ed25519:{key_id}":
                                signed_devices.append(key_id)
                            break
                        else:
                            raise MatrixError(400, "M_INVALID_SIGNATURE", "no signature by a key allowed to sign this")
                    except MatrixError as e:
                        fail(target_user, key_id, e.errcode, e.message)
            for user in changed:
                self.device_lists.mark_changed(user, batch)
            if signed_devices:
                self._devices_changed(requester, signed_devices, False, batch)
            elif requester in changed:
                for listener in self._signing_key_listeners:
                    listener(requester, batch)
            await batch.commit()
        if changed:
            users: set[str] = {requester}
            for user in changed:
                users |= self.queries.users_sharing_a_room(user) | {user}
            self.notify_users(users)
        return {"failures": failures}

    def _signature_target(self, requester: str, target_user: str, key_id: str) -> tuple[str, dict[str, Any]]:
        """The stored key a signature is for: a device (by device id) or a master key (by public key)."""
        if target_user == requester:
            device = self.device_keys.get(target_user, key_id)
            if device is not None:
                return f"ed25519:{key_id}", device
        master = self.cross_signing.get(target_user, "master")
        if master is not None:
            master_id, master_pub = _only_key(master, "master_key")
            if key_id in (master_pub, master_id):
                return master_id, master
        raise MatrixError(404, "M_NOT_FOUND", f"no key {key_id} for {target_user}")

    def _allowed_signers(self, requester: str, target_user: str, key_id: str) -> list[tuple[str, str]]:
        """(key id, public key) of the requester's keys that may sign this target."""
        out: list[tuple[str, str]] = []
        if target_user == requester:
            if self.device_keys.get(target_user, key_id) is not None:
                ssk = self.cross_signing.get(requester, "self_signing")
                if ssk is not None:
                    out.append(_only_key(ssk, "self_signing_key"))
            else:  # the own master key, signed by one of the own devices
                for device_id, keys in self.device_keys.of_user(requester):
                    pub = keys.get("keys", {}).get(f"ed25519:{device_id}")
                    if isinstance(pub, str):
                        out.append((f"ed25519:{device_id}", pub))
        else:
            usk = self.cross_signing.get(requester, "user_signing")
            if usk is not None:
                out.append(_only_key(usk, "user_signing_key"))
        return out

    # -- counts for /sync ------------------------------------------------------------------------

    def one_time_key_counts(self, user_id: str, device_id: str) -> dict[str, int]:
        """Unclaimed one-time keys per algorithm, with `signed_curve25519` always present. The spec lets an
        absent algorithm mean zero, but matrix-sdk-crypto reads an absent count as "unchanged" unless the
        client special-cases sync v2 (js-sdk 43 does): such a client would never replenish its keys."""
        counts = self.one_time_keys.counts(user_id, device_id)
        counts.setdefault("signed_curve25519", 0)
        return counts

    def unused_fallback_key_types(self, user_id: str, device_id: str) -> list[str]:
        fallback = self.one_time_keys.fallback_keys(user_id, device_id)
        return sorted(algorithm for algorithm, entry in fallback if not entry.get("used"))

    # -- renamed devices ---------------------------------------------------------------------------

    def device_renamed(self, user_id: str, device_id: str, batch: Batch) -> None:
        """An accounts listener, in the batch that renames a device: its name goes with its keys."""
        if self.device_keys.get(user_id, device_id) is None:
            return
        self.device_lists.mark_changed(user_id, batch)
        self._devices_changed(user_id, [device_id], False, batch)
        batch.on_commit.append(lambda: self.notify_users(self.queries.users_sharing_a_room(user_id) | {user_id}))

    # -- deleted devices ---------------------------------------------------------------------------

    def devices_deleted(self, user_id: str, device_ids: list[str], batch: Batch) -> None:
        """In the batch that deletes devices: forget their keys, and tell those who track the user's
        devices once the batch is written."""
        for device_id in device_ids:
            self.device_keys.delete(user_id, device_id, batch)
            self.one_time_keys.delete_device(user_id, device_id, batch)
        self.device_lists.mark_changed(user_id, batch)
        self._devices_changed(user_id, list(device_ids), True, batch)
        batch.on_commit.append(lambda: self.notify_users(self.queries.users_sharing_a_room(user_id) | {user_id}))
