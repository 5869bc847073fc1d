"""Real things for the fuzzer to aim at: users, a shared room, an event, a device with keys, a filter, media.

A path parameter the fuzzer fills with random text mostly meets "not found" at the door; filled with a
real room, event or device id it reaches the code behind that door. `Scene` holds such ids, all set up
over HTTP (the way a client makes them), and says which values fit which path parameter of the spec.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import itertools
from dataclasses import dataclass
from typing import Any

import nacl.signing
import requests
from PIL import Image

from homeserver.protocol import unpadded_base64
from homeserver.protocol.signing import sign_json
from tests.accounts import User

PASSWORD = "fuzz correct horse"
CLIENT = "/_matrix/client/v3"
REQUEST_TIMEOUT_S = 30.0


class SetupError(RuntimeError):
    pass


@dataclass
class Scene:
    """One fuzzing identity (`me`) and the things it owns or shares with `other`."""

    server_name: str
    me: User
    other: User
    room_id: str  # both `me` and `other` joined; `me` created it (and so holds power level 100)
    room_alias: str
    event_id: str  # a message from `me` in `room_id`
    filter_id: str
    media_id: str  # a PNG `me` uploaded
    backup_version: str  # `me`'s key backup

    def path_values(self) -> dict[str, list[str]]:
        """Real values per path parameter name of the spec (`{roomId}`, `{userId}`, ...)."""
        values = {
            "roomId": [self.room_id],
            "roomIdOrAlias": [self.room_id, self.room_alias],
            # The real alias, and a free one in our namespace (for `PUT /directory/room/{roomAlias}`).
            "roomAlias": [self.room_alias, f"#fuzz-free:{self.server_name}"],
            # Most per-user endpoints (filters, account data, tags, typing, presence) are for oneself.
            "userId": [self.me.user_id, self.me.user_id, self.other.user_id],
            "eventId": [self.event_id],
            "deviceId": [self.me.device_id],
            "serverName": [self.server_name],
            "filterId": [self.filter_id],
            "mediaId": [self.media_id],
            "version": [self.backup_version],
            "sessionId": ["fuzz-session"],
            # Harmless real names only: a fuzzed body under m.room.power_levels or m.room.member would
            # strip `me` of its power or membership in the shared room and blunt every test after it.
            "eventType": ["m.room.message", "m.room.topic", "m.reaction"],
            "type": ["org.example.fuzz", "m.direct", "m.ignored_user_list"],  # account data
            "stateKey": ["", self.me.user_id],
            "receiptType": ["m.read", "m.read.private", "m.fully_read"],
            "relType": ["m.annotation", "m.reference", "m.thread"],
            "kind": ["override", "content", "room", "sender", "underride"],
            "ruleId": [".m.rule.master", ".m.rule.contains_user_name", "fuzz"],
            "tag": ["m.favourite", "u.fuzz"],
            "keyName": ["displayname", "avatar_url", "m.tz"],
        }
        return values


class Client:
    """Just enough of a Matrix client to set a scene up; any answer but 200 stops the test."""

    def __init__(self, base_url: str, session: requests.Session, shared_secret: str) -> None:
        self.base_url = base_url
        self.session = session
        self.shared_secret = shared_secret
        self._names = itertools.count()

    def call(
        self,
        method: str,
        path: str,
        account: User | None = None,
        body: Any = None,
        *,
        data: bytes | None = None,
        content_type: str | None = None,
    ) -> Any:
        headers = dict(account.headers) if account else {}
        if content_type:
            headers["Content-Type"] = content_type
        url = self.base_url + (path if path.startswith("/_") else CLIENT + path)
        resp = self.session.request(method, url, json=body, data=data, headers=headers, timeout=REQUEST_TIMEOUT_S)
        if resp.status_code != 200:
            raise SetupError(f"{method} {path} -> {resp.status_code} {resp.text[:500]}")
        return resp.json()

    def register(self, prefix: str, *, admin: bool = False) -> User:
        """A new user: open registration with `m.login.dummy` in one request (as nio does), or an admin
        through the shared-secret admin API (nonce, then an HMAC-SHA1 over nonce, user, password, role)."""
        localpart = f"{prefix}{next(self._names)}"  # one server per Client: a counter is unique enough
        if admin:
            nonce = self.call("GET", "/_synapse/admin/v1/register")["nonce"]
            signed = "\x00".join([nonce, localpart, PASSWORD, "admin"]).encode()
            mac = hmac.new(self.shared_secret.encode(), signed, hashlib.sha1).hexdigest()
            body = {"nonce": nonce, "username": localpart, "password": PASSWORD, "admin": True, "mac": mac}
            answer = self.call("POST", "/_synapse/admin/v1/register", body=body)
        else:
            body = {"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
            answer = self.call("POST", "/register", body=body)
        return User(answer["user_id"], answer["device_id"], answer["access_token"])

    def shared_room(self, me: User, other: User) -> tuple[str, str, str]:
        """A public room `me` creates with an alias, `other` joins, and one message; (room, alias, event)."""
        alias_local = f"fuzz-room{next(self._names)}"
        room_id = self.call(
            "POST", "/createRoom", me, {"preset": "public_chat", "room_alias_name": alias_local, "name": "fuzz"}
        )["room_id"]
        self.call("POST", f"/join/{room_id}", other, {})
        event_id = self.call(
            "PUT", f"/rooms/{room_id}/send/m.room.message/fuzz-txn", me, {"msgtype": "m.text", "body": "hello fuzz"}
        )["event_id"]
        server_name = me.user_id.split(":", 1)[1]
        return room_id, f"#{alias_local}:{server_name}", event_id

    def upload_device_keys(self, account: User) -> None:
        """Device keys signed as a real client signs them, and one-time keys to claim."""
        signing = nacl.signing.SigningKey.generate()
        key_id = f"ed25519:{account.device_id}"
        ed25519 = unpadded_base64.encode(bytes(signing.verify_key))
        device_keys: dict[str, Any] = {
            "user_id": account.user_id,
            "device_id": account.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {key_id: ed25519, f"curve25519:{account.device_id}": "Y3VydmUyNTUxOQ"},
        }
        one_time = {
            f"signed_curve25519:K{n}": dict(sign_json({"key": f"otk{n:04d}"}, account.user_id, key_id, signing))
            for n in range(5)
        }
        signed = dict(sign_json(device_keys, account.user_id, key_id, signing))
        self.call("POST", "/keys/upload", account, {"device_keys": signed, "one_time_keys": one_time})

    def upload_png(self, account: User) -> str:
        """A small real image, so that thumbnails have something to scale; its media id."""
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 30, 90)).save(buf, format="PNG")
        answer = self.call(
            "POST", "/_matrix/media/v3/upload?filename=fuzz.png", account, data=buf.getvalue(), content_type="image/png"
        )
        return str(answer["content_uri"]).rsplit("/", 1)[1]

    def scene(self, *, admin: bool = False) -> Scene:
        """Two new users (`me` an admin if asked) with a shared room, device keys, a filter, media and a
        key backup of `me`'s. About 20 ms here, cheap enough for a throwaway scene per request."""
        me = self.register("fuzz", admin=admin)
        other = self.register("peer")
        room_id, alias, event_id = self.shared_room(me, other)
        self.upload_device_keys(me)
        self.upload_device_keys(other)
        filter_body = {"room": {"timeline": {"limit": 5}}}
        filter_id = self.call("POST", f"/user/{me.user_id}/filter", me, filter_body)["filter_id"]
        media_id = self.upload_png(me)
        backup = {"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": {"public_key": "Zm9v"}}
        version = self.call("POST", "/room_keys/version", me, backup)["version"]
        server_name = me.user_id.split(":", 1)[1]
        return Scene(server_name, me, other, room_id, alias, event_id, filter_id, media_id, version)
