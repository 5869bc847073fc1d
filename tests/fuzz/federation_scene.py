"""A fake peer server and real things for the federation fuzzer to aim at.

`FakePeer` is another homeserver as far as ours can tell: a name `127.0.0.1:<port>`, its signing key
served at `/_matrix/key/v2/server` over TLS (a certificate from the test's `LoopbackCA`, which our
server trusts through `federation.ca_files`), and every request it sends signed with `X-Matrix` as the
spec's "Request Authentication" says (`XMatrixAuth`, applied to the request as it is about to leave, so
the signed `uri` and `content` are exactly what is sent). Anything else our server asks it (missing
events, device lists, media) is answered 404 `M_UNRECOGNIZED`: the peer is a plain `http.server` in a
thread, so a synchronous test can drive it without an event loop.

`FederationScene` holds ids on our server, set up the way a client and a joining server make them: a
public room with an alias that the peer's user joined through `make_join`/`send_join`, a message in it,
a local user with a device, keys and one-time keys, and an image.
"""

from __future__ import annotations

import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import orjson
import requests
from requests.auth import AuthBase

from federation.keys import OurKeys
from federation.request_auth import signed_request
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.event_signing import add_hashes_and_signatures
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS, get_room_version
from homeserver.protocol.signing import generate_signing_key, sign_json
from tests.accounts import User
from tests.interop.federation import LoopbackCA

from .scene import Client, SetupError

FED = "/_matrix/federation"
REQUEST_TIMEOUT_S = 30.0


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Our server may hang up before an answer is written (a request it gave up on): not a failure."""


class FakePeer:
    """A signed peer: its keys over TLS on loopback, X-Matrix on every request it sends."""

    def __init__(self, ca: LoopbackCA) -> None:
        self.key_id, self.key = generate_signing_key("fuzz")
        self.requests_seen: list[str] = []  # method and path of what our server asked it
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def do_PUT(self) -> None:
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                peer.requests_seen.append(f"{self.command} {self.path}")
                if self.path.split("?", 1)[0] == "/_matrix/key/v2/server":
                    status, body = 200, peer.keys.response()
                else:
                    status, body = 404, {"errcode": "M_UNRECOGNIZED", "error": "not served by the fake peer"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        context = ca.server_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.server_name = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.keys = OurKeys(self.server_name, self.key_id, self.key)
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-peer", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def user(self, localpart: str) -> str:
        return f"@{localpart}:{self.server_name}"


class XMatrixAuth(AuthBase):
    """Signs a prepared request as `peer` for `destination`: method, the path and query as sent, the
    body as JSON content when it is JSON (a body that is not cannot be signed: it goes with a signature
    over the request without content, and our server must refuse it with a 4xx all the same)."""

    def __init__(self, peer: FakePeer, destination: str) -> None:
        self.peer = peer
        self.destination = destination

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        content: Any = None
        body = r.body
        if body:
            try:  # parsed as our server parses it (orjson: integers beyond 64 bits become floats)
                content = orjson.loads(body)
            except orjson.JSONDecodeError:
                content = None
        method = str(r.method)
        try:
            header = self.header(method, r.path_url, content)
        except Exception:  # content no canonical JSON encoder takes (nested too deep...): signed without it
            header = self.header(method, r.path_url, None)
        r.headers["Authorization"] = header
        return r

    def header(self, method: str, uri: str, content: Any) -> str:
        """As `authorization_header`, but signed the lenient way (floats, big numbers: as our server
        checks a request's signature), so that odd values in a body still pass authentication."""
        origin, key_id = self.peer.server_name, self.peer.key_id
        signed = sign_json(
            signed_request(method, uri, origin, self.destination, content), origin, key_id, self.peer.key, strict=False
        )
        sig = signed["signatures"][origin][key_id]
        return f'X-Matrix origin="{origin}",destination="{self.destination}",key="{key_id}",sig="{sig}"'


@dataclass
class FederationScene:
    server_name: str  # ours
    peer_name: str
    me: User  # a local user with a device, device keys and one-time keys
    peer_user: str  # the peer's user, joined to `room_id`, with power 100 there
    room_id: str  # public, created by `me`, joined by `peer_user` over federation
    room_alias: str
    room_version: str
    event_id: str  # a message from `me` in `room_id`
    join_event_id: str  # the peer user's join
    media_id: str  # an image `me` uploaded

    def path_values(self) -> dict[str, list[str]]:
        """Real values per path (and query) parameter name of the spec."""
        return {
            "roomId": [self.room_id],
            "eventId": [self.event_id, self.join_event_id],
            # A local user (devices, make_join/leave/knock for ours are refused), the peer's (joined).
            "userId": [self.me.user_id, self.peer_user],
            "mediaId": [self.media_id],
            "serverName": [self.server_name, self.peer_name],
            "queryType": ["profile", "directory"],
            # query parameters
            "user_id": [self.me.user_id],
            "room_alias": [self.room_alias],
            "event_id": [self.event_id, self.join_event_id],
            "ver": [self.room_version],
        }


def signed_session(session: requests.Session, peer: FakePeer, destination: str, ca_path: str) -> requests.Session:
    session.auth = XMatrixAuth(peer, destination)
    session.verify = ca_path
    session.trust_env = False  # REQUESTS_CA_BUNDLE would win over `verify`; no proxies for loopback
    return session


def federation_call(session: requests.Session, base_url: str, method: str, path: str, body: Any = None) -> Any:
    resp = session.request(method, base_url + path, json=body, timeout=REQUEST_TIMEOUT_S)
    if resp.status_code != 200:
        raise SetupError(f"{method} {path} -> {resp.status_code} {resp.text[:500]}")
    return resp.json()


def remote_join(session: requests.Session, federation_url: str, peer: FakePeer, room_id: str, user_id: str) -> str:
    """`make_join` then `send_join` (v2), as a joining server does; the join event's id."""
    room = quote(room_id, safe="")
    query = "&".join(f"ver={v}" for v in sorted(KNOWN_ROOM_VERSIONS))
    answer = federation_call(
        session, federation_url, "GET", f"{FED}/v1/make_join/{room}/{quote(user_id, safe='')}?{query}"
    )
    rv = get_room_version(answer.get("room_version", "1"))
    event = answer["event"]
    event["origin"] = peer.server_name
    add_hashes_and_signatures(event, rv, peer.server_name, peer.key_id, peer.key)
    eid = compute_event_id(event, rv)
    federation_call(session, federation_url, "PUT", f"{FED}/v2/send_join/{room}/{quote(eid, safe='')}", event)
    return eid


def room_shape(client: Client, session: requests.Session, federation_url: str, scene: FederationScene) -> RoomShape:
    """The auth events and depth an event of the peer's in the scene's room builds on."""
    room = quote(scene.room_id, safe="")
    state = {
        (e["type"], e.get("state_key")): e["event_id"] for e in client.call("GET", f"/rooms/{room}/state", scene.me)
    }
    event = federation_call(session, federation_url, "GET", f"{FED}/v1/event/{quote(scene.event_id, safe='')}")
    create = state[("m.room.create", "")]
    return RoomShape(
        room_version=scene.room_version,
        create=None if get_room_version(scene.room_version).room_id_from_create_event else create,
        power_levels=state[("m.room.power_levels", "")],
        join_rules=state[("m.room.join_rules", "")],
        depth=int(event["pdus"][0]["depth"]),
    )


@dataclass
class RoomShape:
    """What an event of the peer's in the shared room builds on."""

    room_version: str
    create: str | None  # None in rooms v12 (the create event is implied by the room id)
    power_levels: str
    join_rules: str
    depth: int  # of `FederationScene.event_id`


def build_scene(client: Client, session: requests.Session, federation_url: str, peer: FakePeer) -> FederationScene:
    me = client.register("fedfuzz")
    alias_local = "fedfuzz-room"
    server_name = me.user_id.split(":", 1)[1]
    created = client.call(
        "POST", "/createRoom", me, {"preset": "public_chat", "room_alias_name": alias_local, "name": "fed fuzz"}
    )
    room_id = created["room_id"]
    version = client.call("GET", f"/rooms/{quote(room_id, safe='')}/state/m.room.create/", me).get("room_version", "1")
    peer_user = peer.user("remote")
    join_event_id = remote_join(session, federation_url, peer, room_id, peer_user)
    # The peer's user gets power 100, so that its (shaped, signed) state events pass the auth rules and
    # reach the code that reads them.
    levels_path = f"/rooms/{quote(room_id, safe='')}/state/m.room.power_levels/"
    levels = client.call("GET", levels_path, me)
    levels["users"] = {**levels.get("users", {}), peer_user: 100}
    client.call("PUT", levels_path, me, levels)
    event_id = client.call(
        "PUT",
        f"/rooms/{quote(room_id, safe='')}/send/m.room.message/fedfuzz-txn",
        me,
        {"msgtype": "m.text", "body": "hello over federation"},
    )["event_id"]
    client.upload_device_keys(me)
    media_id = client.upload_png(me)
    return FederationScene(
        server_name,
        peer.server_name,
        me,
        peer_user,
        room_id,
        f"#{alias_local}:{server_name}",
        str(version),
        event_id,
        join_event_id,
        media_id,
    )
