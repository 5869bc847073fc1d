"""End-to-end encryption across servers: device lists, keys and to-device messages.

spec: server-server-api "Device Management", "End-to-End Encryption", "Send-to-device messaging".

- `LocalDeviceAnswers` answers other servers about our users: `GET /user/devices/{userId}`,
  `POST /user/keys/query`, `POST /user/keys/claim` (users of other servers are refused).
- `RemoteDeviceKeys` asks other servers about theirs for our clients' `/keys/query` and `/keys/claim`:
  one request per server, all in parallel, each within the client's timeout; a server that does not
  answer is named in `failures`. What a server answers is checked: only its own users, device keys
  signed by the device's own key, cross-signing keys that name their user (a self-signing key signed
  by the master key). Device lists of users who share a room with one of ours are cached (the
  server tells us of every change while the room is shared) and dropped by any update.
- `DeviceListRelay` sends `m.device_list_update` (one continuous `stream_id`/`prev_id` chain per user)
  and `m.signing_key_update` to every server sharing a room with the user, and `m.direct_to_device`
  for messages to other servers' users.
- `e2ee_edu_handlers` take the same EDUs from other servers: only about the origin's own users (an
  update about anyone else is dropped, nothing stored), only for users who share a room with one of
  ours. An update whose `prev_id` names a stream id we never saw means we missed some: the device
  list is fetched again with `/user/devices/{userId}`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import nacl.signing

from federation.client import FederationClient, FederationError, Unreachable, path_of
from federation.transactions import EduHandler
from homeserver.auth.accounts import Accounts
from homeserver.e2ee.keys import Keys
from homeserver.e2ee.to_device import ToDevice
from homeserver.errors import MatrixError
from homeserver.protocol import canonical_json, unpadded_base64
from homeserver.protocol.errors import Base64Error, CanonicalJSONError, SignatureError
from homeserver.protocol.signing import verify_json
from homeserver.rooms.pipeline import PersistedEvent
from homeserver.rooms.queries import RoomQueries
from storage.device_lists import DeviceListStore
from storage.engine import Batch, Store

log = logging.getLogger(__name__)

MAX_STREAM_ID = 2**63 - 1
SEEN_MESSAGE_IDS = 10_000  # m.direct_to_device message ids remembered for deduplication
MAX_RESYNCS = 8  # device-list resyncs in flight at once: a flood of gaps cannot make us fetch without bound
MAX_PARALLEL_SERVERS = 32  # servers asked at once for one /keys/query or /keys/claim (the rest wait their turn)
MAX_DELIVERIES_PER_EDU = 1000  # device inboxes one m.direct_to_device may fill; a larger one is dropped whole


def _server_of(user_id: object) -> str | None:
    if not isinstance(user_id, str) or not user_id.startswith("@") or ":" not in user_id:
        return None
    return user_id.partition(":")[2] or None


def _of(origin: str, user_id: object) -> bool:
    return _server_of(user_id) == origin


def _refuse_remote(server_name: str, user_id: object) -> None:
    if _server_of(user_id) != server_name:
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id} is not a user of this server")


# -- answering other servers ---------------------------------------------------------------------


class LocalDeviceAnswers:
    def __init__(self, server_name: str, keys: Keys, accounts: Accounts, stream: DeviceListStore) -> None:
        self.server_name = server_name
        self.keys = keys
        self.accounts = accounts
        self.stream = stream

    def devices(self, user_id: str) -> dict[str, Any]:
        """spec: GET /_matrix/federation/v1/user/devices/{userId} ("Must be a user local to the
        receiving homeserver": another server's user is a 400, as Synapse answers). The spec names
        no error for a local user who does not exist; Synapse answers with no devices, and a peer
        resyncing a list takes that as "none" rather than retrying: so do we."""
        _refuse_remote(self.server_name, user_id)
        if not self.accounts.exists(user_id):
            return {"user_id": user_id, "stream_id": self.stream.last_sent(user_id), "devices": []}
        answer = self.keys.query("", {user_id: []})
        devices = []
        for device_id, keys in answer["device_keys"].get(user_id, {}).items():
            entry: dict[str, Any] = {"device_id": device_id, "keys": {k: v for k, v in keys.items() if k != "unsigned"}}
            name = keys.get("unsigned", {}).get("device_display_name")
            if name:
                entry["device_display_name"] = name
            devices.append(entry)
        out: dict[str, Any] = {"user_id": user_id, "stream_id": self.stream.last_sent(user_id), "devices": devices}
        for field, name in (("master_keys", "master_key"), ("self_signing_keys", "self_signing_key")):
            if user_id in answer[field]:
                out[name] = answer[field][user_id]
        return out

    def query(self, device_keys: Any) -> dict[str, Any]:
        """spec: POST /_matrix/federation/v1/user/keys/query."""
        if not isinstance(device_keys, dict):
            raise MatrixError(400, "M_BAD_JSON", "device_keys must be an object")
        for user_id in device_keys:
            _refuse_remote(self.server_name, user_id)
        answer = self.keys.query("", device_keys)
        return {k: answer[k] for k in ("device_keys", "master_keys", "self_signing_keys")}

    async def claim(self, one_time_keys: Any) -> dict[str, Any]:
        """spec: POST /_matrix/federation/v1/user/keys/claim."""
        if not isinstance(one_time_keys, dict):
            raise MatrixError(400, "M_BAD_JSON", "one_time_keys must be an object")
        for user_id in one_time_keys:
            _refuse_remote(self.server_name, user_id)
        answer = await self.keys.claim(one_time_keys)
        return {"one_time_keys": answer["one_time_keys"]}


# -- checking what other servers send --------------------------------------------------------------


def _verify_key(b64: object) -> nacl.signing.VerifyKey | None:
    if not isinstance(b64, str):
        return None
    try:
        raw = unpadded_base64.decode(b64)
    except Base64Error:
        return None
    return nacl.signing.VerifyKey(raw) if len(raw) == 32 else None


# Signatures that verified, by a digest of (key, signed bytes, signature): a device's keys and a
# self-signing key come back unchanged at every /keys/query of a user sharing no room with ours (not
# cached then), and an ed25519 verification costs some 70 µs where the digest costs 2. Bounded: 8,192
# digests are about 1.3 MB.
_VERIFIED_MAX = 8192
_verified: OrderedDict[bytes, None] = OrderedDict()


def _signed_by(obj: Mapping[str, Any], user_id: str, key_id: str, key_b64: object) -> bool:
    signatures = obj.get("signatures")
    by_user = signatures.get(user_id) if isinstance(signatures, dict) else None
    sig_b64 = by_user.get(key_id) if isinstance(by_user, dict) else None
    if not isinstance(key_b64, str) or not isinstance(sig_b64, str):
        return False
    try:
        signed = canonical_json.encode({k: v for k, v in obj.items() if k not in ("signatures", "unsigned")})
    except CanonicalJSONError:
        return False
    digest = hashlib.blake2b(signed, digest_size=20, person=b"e2ee-sig")
    digest.update(key_b64.encode() + b"\0" + sig_b64.encode())
    seen = digest.digest()
    if seen in _verified:
        _verified.move_to_end(seen)
        return True
    key = _verify_key(key_b64)
    if key is None:
        return False
    try:
        verify_json(obj, user_id, key_id, key)
    except SignatureError:
        return False
    _verified[seen] = None
    if len(_verified) > _VERIFIED_MAX:
        _verified.popitem(last=False)
    return True


def valid_device_keys(user_id: str, device_id: str, keys: Any) -> bool:
    """Device keys that name their user and device and are signed by the device's own ed25519 key."""
    if not isinstance(keys, dict) or keys.get("user_id") != user_id or keys.get("device_id") != device_id:
        return False
    key_map = keys.get("keys")
    if not isinstance(key_map, dict):
        return False
    return _signed_by(keys, user_id, f"ed25519:{device_id}", key_map.get(f"ed25519:{device_id}"))


def _cross_signing_key(user_id: str, key: Any, usage: str) -> tuple[str, str] | None:
    """(key id, public key) of a cross-signing key of `user_id` for `usage`, None if it is not one."""
    if not isinstance(key, dict) or key.get("user_id") != user_id:
        return None
    usages, keys = key.get("usage"), key.get("keys")
    if not isinstance(usages, list) or usage not in usages or not isinstance(keys, dict) or len(keys) != 1:
        return None
    ((key_id, value),) = keys.items()
    if not isinstance(value, str) or key_id != f"ed25519:{value}":
        return None
    return key_id, value


def valid_cross_signing(user_id: str, master: Any, self_signing: Any) -> tuple[Any, Any]:
    """The master and self-signing keys that hold up (the self-signing key must be signed by the master)."""
    master_id = _cross_signing_key(user_id, master, "master") if master is not None else None
    if master_id is None:
        return None, None
    if self_signing is None or _cross_signing_key(user_id, self_signing, "self_signing") is None:
        return master, None
    if not _signed_by(self_signing, user_id, master_id[0], master_id[1]):
        return master, None
    return master, self_signing


def _checked_devices(user_id: str, devices: Any) -> dict[str, Any]:
    if not isinstance(devices, dict):
        return {}
    return {d: k for d, k in devices.items() if isinstance(d, str) and valid_device_keys(user_id, d, k)}


# -- asking other servers ----------------------------------------------------------------------------


class RemoteDeviceKeys:
    """`RemoteKeys` (homeserver/e2ee/keys.py) over federation, with the device-list cache."""

    def __init__(
        self,
        client: FederationClient,
        store: Store,
        stream: DeviceListStore,
        queries: RoomQueries,
    ) -> None:
        self.client = client
        self.store = store
        self.stream = stream
        self.queries = queries
        self._parallel = asyncio.Semaphore(MAX_PARALLEL_SERVERS)

    def tracked(self, user_id: str) -> bool:
        """Whether one of our users shares a room with this remote user (its server then tells us of
        every change to their devices, so a cached list stays right)."""
        return self.queries.shares_a_room_with_us(user_id)

    async def query(self, wanted: Mapping[str, list[str]], timeout_s: float) -> dict[str, Any]:
        result: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}, "failures": {}}
        by_server: dict[str, dict[str, list[str]]] = {}
        for user_id, devices in wanted.items():
            server = _server_of(user_id)
            if server is None:
                continue
            cached = self.stream.cached(user_id) if self.tracked(user_id) else None
            if cached is not None:
                self._answer_from(result, user_id, cached, devices)
            else:
                by_server.setdefault(server, {})[user_id] = devices
        # an update arriving while we ask makes the answer stale: it is then used but not cached
        positions = {u: self.stream.position(u) for users in by_server.values() for u in users}
        answers = await asyncio.gather(*(self._query_server(s, users, timeout_s) for s, users in by_server.items()))
        batch = self.store.batch()
        with batch:
            cached_any = False
            for (server, users), answer in zip(by_server.items(), answers, strict=True):
                if isinstance(answer, str):
                    result["failures"][server] = {"status": 503, "message": answer}
                    continue
                for user_id, devices in users.items():
                    entry = self._entry(user_id, answer)
                    self._answer_from(result, user_id, entry, devices)
                    if not devices and self.stream.position(user_id) == positions[user_id] and self.tracked(user_id):
                        self.stream.cache(user_id, entry, batch)
                        cached_any = True
            if cached_any:
                await batch.commit()
        return result

    @staticmethod
    def _entry(user_id: str, answer: Mapping[str, Any]) -> dict[str, Any]:
        """What a server said of one of its users, keeping only what holds up."""
        device_keys = answer.get("device_keys")
        devices = _checked_devices(user_id, device_keys.get(user_id) if isinstance(device_keys, dict) else None)
        master, ssk = (answer.get("master_keys") or {}), (answer.get("self_signing_keys") or {})
        master, ssk = valid_cross_signing(
            user_id,
            master.get(user_id) if isinstance(master, dict) else None,
            ssk.get(user_id) if isinstance(ssk, dict) else None,
        )
        entry: dict[str, Any] = {"devices": devices}
        if master is not None:
            entry["master_key"] = master
        if ssk is not None:
            entry["self_signing_key"] = ssk
        return entry

    @staticmethod
    def _answer_from(result: dict[str, Any], user_id: str, entry: Mapping[str, Any], devices: list[str]) -> None:
        known = entry.get("devices", {})
        result["device_keys"][user_id] = {d: k for d, k in known.items() if not devices or d in devices}
        if "master_key" in entry:
            result["master_keys"][user_id] = entry["master_key"]
        if "self_signing_key" in entry:
            result["self_signing_keys"][user_id] = entry["self_signing_key"]

    async def _query_server(self, server: str, users: dict[str, list[str]], timeout_s: float) -> dict[str, Any] | str:
        """The server's answer, or why there is none."""
        path = path_of("_matrix", "federation", "v1", "user", "keys", "query")
        return await self._ask(server, path, {"device_keys": users}, timeout_s)

    async def _ask(self, server: str, path: str, content: dict[str, Any], timeout_s: float) -> dict[str, Any] | str:
        async def ask() -> Any:
            async with self._parallel:  # waiting for a turn counts against the client's timeout
                return await self.client.request(server, "POST", path, content=content, timeout=timeout_s)

        try:
            answer = await asyncio.wait_for(ask(), timeout_s)
        except FederationError as e:
            return f"{server} answered {e.status} {e.errcode or ''}: {e.message}"
        except (Unreachable, TimeoutError) as e:
            return f"{server} could not be reached: {e or 'timed out'}"
        if not isinstance(answer, dict):
            return f"{server} answered without an object"
        return answer

    async def claim(self, wanted: Mapping[str, Mapping[str, str]], timeout_s: float) -> dict[str, Any]:
        result: dict[str, Any] = {"one_time_keys": {}, "failures": {}}
        by_server: dict[str, dict[str, dict[str, str]]] = {}
        for user_id, devices in wanted.items():
            server = _server_of(user_id)
            if server is not None:
                by_server.setdefault(server, {})[user_id] = dict(devices)
        path = path_of("_matrix", "federation", "v1", "user", "keys", "claim")
        answers = await asyncio.gather(
            *(self._ask(s, path, {"one_time_keys": users}, timeout_s) for s, users in by_server.items())
        )
        for (server, users), answer in zip(by_server.items(), answers, strict=True):
            if isinstance(answer, str):
                result["failures"][server] = {"status": 503, "message": answer}
                continue
            claimed = answer.get("one_time_keys")
            for user_id, devices in users.items():
                got = claimed.get(user_id) if isinstance(claimed, dict) else None
                if not isinstance(got, dict):
                    continue
                # only devices we asked for, one key each, of the algorithm asked
                for device_id, algorithm in devices.items():
                    keys = got.get(device_id)
                    if isinstance(keys, dict) and len(keys) == 1:
                        ((key_id, key),) = keys.items()
                        if isinstance(key_id, str) and key_id.startswith(algorithm + ":"):
                            result["one_time_keys"].setdefault(user_id, {})[device_id] = {key_id: key}
        return result

    async def resync(self, user_id: str) -> None:
        """Fetch a remote user's device list again (`/user/devices/{userId}`) and cache it."""
        server = _server_of(user_id)
        if server is None:
            return
        path = path_of("_matrix", "federation", "v1", "user", "devices", user_id)
        position = self.stream.position(user_id)
        try:
            answer = await self.client.request(server, "GET", path)
        except (FederationError, Unreachable, TimeoutError) as e:
            log.info("federation: device list resync of %s failed: %s", user_id, e)
            return
        if not isinstance(answer, dict) or answer.get("user_id") != user_id:
            return
        stream_id = _stream_id(answer.get("stream_id"))
        raw = answer.get("devices")
        devices = {}
        for d in raw if isinstance(raw, list) else ():
            device_id = d.get("device_id") if isinstance(d, dict) else None
            if isinstance(device_id, str) and valid_device_keys(user_id, device_id, d.get("keys")):
                devices[device_id] = dict(d["keys"])
                if isinstance(d.get("device_display_name"), str):
                    devices[device_id]["unsigned"] = {"device_display_name": d["device_display_name"]}
        master, ssk = valid_cross_signing(user_id, answer.get("master_key"), answer.get("self_signing_key"))
        entry: dict[str, Any] = {"devices": devices}
        if master is not None:
            entry["master_key"] = master
        if ssk is not None:
            entry["self_signing_key"] = ssk
        if self.stream.position(user_id) != position:
            return  # an update came in meanwhile: this answer may be older than it
        batch = self.store.batch()
        with batch:
            if self.tracked(user_id):
                self.stream.cache(user_id, entry, batch)
            if stream_id is not None:
                self.stream.set_remote_stream(user_id, stream_id, batch)
            await batch.commit()


# -- sending ---------------------------------------------------------------------------------------


class DeviceListRelay:
    """Our users' device and cross-signing key changes, and their to-device messages to other
    servers' users, as EDUs to the servers concerned."""

    def __init__(
        self,
        server_name: str,
        keys: Keys,
        accounts: Accounts,
        stream: DeviceListStore,
        queries: RoomQueries,
        send: Callable[[Iterable[str], str, dict[str, Any]], None],
    ) -> None:
        self.server_name = server_name
        self.keys = keys
        self.accounts = accounts
        self.stream = stream
        self.queries = queries
        self.send = send

    def servers_sharing(self, user_id: str) -> list[str]:
        servers: set[str] = set()
        for room in self.queries.joined_rooms(user_id):
            servers.update(self.queries.servers_in_room(room))
        servers.discard(self.server_name)
        return sorted(servers)

    def devices_changed(self, user_id: str, device_ids: list[str], deleted: bool, batch: Batch) -> None:
        """A keys listener, in the batch of the change: one update per device, chained by stream id."""
        if not self.queries.is_local(user_id):
            return
        chain = [(device_id, *self.stream.next_sent(user_id, batch)) for device_id in device_ids]

        def send() -> None:  # once written: the keys are read as they now are
            servers = self.servers_sharing(user_id)
            for device_id, stream_id, prev in chain if servers else ():
                content: dict[str, Any] = {
                    "user_id": user_id,
                    "device_id": device_id,
                    "stream_id": stream_id,
                    "prev_id": [prev] if prev is not None else [],
                }
                if deleted:
                    content["deleted"] = True
                else:
                    # as /user/devices gives them: with the signatures uploaded for them (self-signing)
                    keys = self.keys.query("", {user_id: [device_id]})["device_keys"].get(user_id, {}).get(device_id)
                    if keys is not None:
                        content["keys"] = {k: v for k, v in keys.items() if k != "unsigned"}
                    device = self.accounts.device(user_id, device_id)
                    if device is not None and device.get("display_name"):
                        content["device_display_name"] = device["display_name"]
                self.send(servers, "m.device_list_update", content)

        batch.on_commit.append(send)

    def signing_keys_changed(self, user_id: str, batch: Batch) -> None:
        if not self.queries.is_local(user_id):
            return

        def send() -> None:
            servers = self.servers_sharing(user_id)
            if not servers:
                return
            content: dict[str, Any] = {"user_id": user_id}
            for usage in ("master", "self_signing"):
                key = self.keys.cross_signing.get(user_id, usage)
                if key is not None:
                    content[f"{usage}_key"] = key
            self.send(servers, "m.signing_key_update", content)

        batch.on_commit.append(send)

    def to_device(self, sender: str, event_type: str, messages: dict[str, dict[str, Any]]) -> None:
        """spec: "Send-to-device messaging" — one `m.direct_to_device` EDU per destination server."""
        by_server: dict[str, dict[str, Any]] = {}
        for user_id, by_device in messages.items():
            server = _server_of(user_id)
            if server is not None and server != self.server_name:
                by_server.setdefault(server, {})[user_id] = by_device
        for server, part in by_server.items():
            content = {"sender": sender, "type": event_type, "message_id": secrets.token_urlsafe(16), "messages": part}
            self.send([server], "m.direct_to_device", content)


# -- receiving -------------------------------------------------------------------------------------


def _stream_id(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_STREAM_ID else None


class DeviceUpdates:
    """Updates from other servers about their users' devices and keys, and their to-device messages."""

    def __init__(
        self,
        store: Store,
        stream: DeviceListStore,
        remote: RemoteDeviceKeys,
        to_device: ToDevice,
        notify_users: Callable[[Iterable[str]], None],
    ) -> None:
        self.store = store
        self.stream = stream
        self.remote = remote
        self.to_device = to_device
        self.notify_users = notify_users
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._resyncs: dict[str, asyncio.Task[None]] = {}

    def _locals_sharing(self, user_id: str) -> set[str]:
        queries = self.remote.queries
        return {u for u in queries.users_sharing_a_room(user_id) if queries.is_local(u)}

    async def device_list_update(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict) or not _of(origin, content.get("user_id")):
            return
        user_id: str = content["user_id"]
        stream_id = _stream_id(content.get("stream_id"))
        prev_raw = content.get("prev_id", [])
        if stream_id is None or not isinstance(prev_raw, list):
            return
        prev = [p for p in (_stream_id(x) for x in prev_raw) if p is not None]
        watchers = self._locals_sharing(user_id)
        if not watchers:
            return  # nobody here shares a room with them: nothing to track
        last = self.stream.remote_stream(user_id)
        if last is not None and stream_id <= last:
            return  # seen already
        gap = bool(prev) and (last is None or last not in prev)
        batch = self.store.batch()
        with batch:
            self.stream.drop_cache(user_id, batch)
            self.stream.set_remote_stream(user_id, stream_id, batch)
            self.stream.mark_changed(user_id, batch)
            await batch.commit()
        self.notify_users(watchers)
        if gap:
            self._resync(user_id)

    async def signing_key_update(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict) or not _of(origin, content.get("user_id")):
            return
        user_id: str = content["user_id"]
        master, _ = valid_cross_signing(user_id, content.get("master_key"), content.get("self_signing_key"))
        if content.get("master_key") is not None and master is None:
            return  # not a master key of this user: refused
        watchers = self._locals_sharing(user_id)
        if not watchers:
            return
        batch = self.store.batch()
        with batch:
            self.stream.drop_cache(user_id, batch)
            self.stream.mark_changed(user_id, batch)
            await batch.commit()
        self.notify_users(watchers)

    async def direct_to_device(self, origin: str, content: Any) -> None:
        if not isinstance(content, dict) or not _of(origin, content.get("sender")):
            return
        event_type, message_id, messages = content.get("type"), content.get("message_id"), content.get("messages")
        if not isinstance(event_type, str) or not isinstance(message_id, str) or not isinstance(messages, dict):
            return
        deliveries = sum(len(d) if isinstance(d, dict) else 0 for d in messages.values())
        if deliveries > MAX_DELIVERIES_PER_EDU:
            log.info("federation: %s sent a to-device EDU for %d devices: dropped", origin, deliveries)
            return
        key = (origin, message_id)
        if key in self._seen:
            return  # spec: message_id — delivered once even when the EDU comes again
        self._seen[key] = None
        while len(self._seen) > SEEN_MESSAGE_IDS:
            self._seen.popitem(last=False)
        await self.to_device.deliver_remote(content["sender"], event_type, messages)

    def on_persisted(self, persisted: PersistedEvent) -> None:
        """A join starts (again) the tracking of remote users' device lists: what was cached before
        may have missed updates sent while no room was shared, so it goes. A remote user who joins:
        their entry; a local user who joins: the entries of the room's remote members."""
        event = persisted.event
        if event.get("type") != "m.room.member" or persisted.rejected is not None or persisted.soft_failed:
            return
        content, user_id = event.get("content"), event.get("state_key")
        if not isinstance(content, dict) or content.get("membership") != "join" or not isinstance(user_id, str):
            return
        queries = self.remote.queries
        if not queries.is_local(user_id):
            users = [user_id]
        else:
            room = queries.room(persisted.room_id)
            users = [u for u in queries.joined_members(room) if not queries.is_local(u)] if room is not None else []
        stale = [u for u in users if self.stream.cached(u) is not None]
        if stale:
            batch = self.store.batch()
            with batch:
                for u in stale:
                    self.stream.drop_cache(u, batch)
                self.store.commit_now(batch)

    def _resync(self, user_id: str) -> None:
        if user_id in self._resyncs or len(self._resyncs) >= MAX_RESYNCS:
            return
        task = asyncio.get_running_loop().create_task(self.remote.resync(user_id), name=f"device-resync:{user_id}")
        self._resyncs[user_id] = task
        task.add_done_callback(lambda _: self._resyncs.pop(user_id, None))

    def handlers(self) -> dict[str, EduHandler]:
        return {
            "m.device_list_update": self.device_list_update,
            "m.signing_key_update": self.signing_key_update,
            "m.direct_to_device": self.direct_to_device,
        }
