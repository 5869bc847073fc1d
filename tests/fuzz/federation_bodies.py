"""Request bodies shaped like the real thing, with one part fuzzed: for the federation fuzzer.

The spec describes a PDU as "any object" and an EDU as a type and "any object", so what schemathesis
generates for `/send`, `send_join`, `invite`... never looks like an event our server could accept: it is
refused at the first check. `Shaper` turns a generated body into a real one about the scene (a message,
reaction, redaction or membership event in the shared room, from the peer's user, with `prev_events`,
`auth_events` and `depth` that fit, hashed and signed by the peer; an `m.typing`, `m.receipt`,
`m.presence`, `m.device_list_update`, `m.signing_key_update` or `m.direct_to_device` EDU about real users
and rooms...), then replaces one part of it, anywhere in the tree, with a value taken from the generated
body or an awkward constant (`null`, 2**63, a float, "", a 300-character string, `[]`, `{}`), or deletes it.
Events are signed after that change most of the time (so the change reaches the code behind the
signature and hash checks), and before it now and then (so the checks themselves meet it).

Every choice is a hash of the generated value, so the same seed still shapes the same requests (up to
the ids the server hands out). Events that would take the peer's user out of the room (a leave, a ban)
are never built: the scene must last the whole run.
"""

from __future__ import annotations

import contextlib
import copy
import zlib
from typing import Any

from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.event_signing import add_hashes_and_signatures
from homeserver.protocol.room_versions import get_room_version

from .federation_scene import FakePeer, FederationScene, RoomShape

ODD_VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63,
    -(2**53) - 7,
    1.5,
    "",
    "\u0000",
    "x" * 300,  # longer than any id may be
    [],
    {},
    [None],
    {"": None},
    "@:",
    "!:",
    "$",
    ["$"],
]
DELETE = object()


def _hash(salt: str, generated: Any) -> int:
    return zlib.crc32(f"{salt}|{generated!r}".encode())


def _slots(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON tree (but the root): the paths of object members and array items."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((*path, key))
            out.extend(_slots(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out.append((*path, index))
            out.extend(_slots(item, (*path, index)))
    return out


def _values(value: Any) -> list[Any]:
    """The generated value and everything inside it: material for a replacement."""
    out = [value]
    if isinstance(value, dict):
        for item in value.values():
            out.extend(_values(item))
    elif isinstance(value, list):
        for item in value:
            out.extend(_values(item))
    return out


def mutate(template: Any, generated: Any, salt: str) -> Any:
    """A copy of `template` with one place replaced (or deleted) as the hash of `generated` decides; one
    time in five, the template unchanged."""
    h = _hash(salt, generated)
    if h % 5 == 0:
        return copy.deepcopy(template)
    out = copy.deepcopy(template)
    slots = _slots(out)
    if not slots:
        return out
    path = slots[(h // 5) % len(slots)]
    material = _values(generated) + ODD_VALUES + [DELETE]
    replacement = material[(h // 7) % len(material)]
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    if replacement is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = copy.deepcopy(replacement)
    return out


class Shaper:
    def __init__(self, scene: FederationScene, peer: FakePeer, room: RoomShape) -> None:
        self.scene = scene
        self.peer = peer
        self.room = room
        self.rv = get_room_version(room.room_version)
        self.joiner = peer.user("joiner")  # a second user of the peer's, for send_join/leave/knock
        self.clock = 1_700_000_000_000

    # -- events ------------------------------------------------------------------------------------

    def _event(self, sender: str, event_type: str, content: dict[str, Any], state_key: str | None) -> dict[str, Any]:
        room = self.room
        auth = [e for e in (room.create, room.power_levels) if e]
        if event_type == "m.room.member":
            if content.get("membership") in ("join", "invite", "knock"):
                auth.append(room.join_rules)
            if sender == self.scene.peer_user:
                auth.append(self.scene.join_event_id)
        else:
            auth.append(self.scene.join_event_id)
        self.clock += 1
        event: dict[str, Any] = {
            "room_id": self.scene.room_id,
            "sender": sender,
            "origin": self.peer.server_name,
            "origin_server_ts": self.clock,
            "type": event_type,
            "content": content,
            "prev_events": [self.scene.event_id],
            "auth_events": auth,
            "depth": room.depth + 1,
        }
        if state_key is not None:
            event["state_key"] = state_key
        return event

    def _templates(self) -> list[dict[str, Any]]:
        scene, peer_user = self.scene, self.scene.peer_user
        redacts: dict[str, Any] = {"redacts": scene.event_id}
        redaction = self._event(peer_user, "m.room.redaction", redacts if self.rv.redacts_in_content else {}, None)
        if not self.rv.redacts_in_content:
            redaction["redacts"] = scene.event_id
        return [
            self._event(peer_user, "m.room.message", {"msgtype": "m.text", "body": "fuzz"}, None),
            self._event(
                peer_user,
                "m.reaction",
                {"m.relates_to": {"rel_type": "m.annotation", "event_id": scene.event_id, "key": "+1"}},
                None,
            ),
            self._event(
                peer_user,
                "m.room.message",
                {
                    "msgtype": "m.text",
                    "body": "re",
                    "m.relates_to": {"rel_type": "m.thread", "event_id": scene.event_id},
                },
                None,
            ),
            redaction,
            self._event(peer_user, "m.room.member", {"membership": "join", "displayname": "remote"}, peer_user),
            # State the peer's user (power 100) may set. Not the power levels, server ACL, join rules or a
            # tombstone: a fuzzed one could lock the peer out or close the room for every request after it.
            self._event(peer_user, "m.room.topic", {"topic": "fuzz"}, ""),
            self._event(peer_user, "m.room.name", {"name": "fuzz"}, ""),
            self._event(peer_user, "m.room.avatar", {"url": f"mxc://{scene.server_name}/{scene.media_id}"}, ""),
            self._event(peer_user, "m.room.history_visibility", {"history_visibility": "shared"}, ""),
            self._event(peer_user, "m.room.guest_access", {"guest_access": "can_join"}, ""),
            self._event(peer_user, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}, ""),
            self._event(peer_user, "m.room.canonical_alias", {"alias": scene.room_alias, "alt_aliases": []}, ""),
            self._event(peer_user, "m.room.pinned_events", {"pinned": [scene.event_id]}, ""),
            self._event(peer_user, "m.space.child", {"via": [self.peer.server_name]}, f"!kid:{self.peer.server_name}"),
            self._event(
                peer_user,
                "m.room.member",
                {"membership": "invite", "displayname": "guest"},
                self.peer.user("guest"),
            ),
        ]

    def signed(self, event: Any, generated: Any, salt: str) -> Any:
        """`event` with one place fuzzed, hashed and signed by the peer (before the change, 1 in 6)."""
        if _hash("sign" + salt, generated) % 6 == 0:
            return mutate(self._sign(event), generated, salt)
        return self._sign(mutate(event, generated, salt))

    def _sign(self, event: Any) -> Any:
        if not isinstance(event, dict):
            return event
        # What cannot be hashed or signed (a float in strict canonical JSON...) goes as it is.
        with contextlib.suppress(Exception):
            add_hashes_and_signatures(event, self.rv, self.peer.server_name, self.peer.key_id, self.peer.key)
        return event

    def event_id(self, event: Any) -> str | None:
        try:
            return compute_event_id(event, self.rv)
        except Exception:
            return None

    def pdu(self, generated: Any, salt: str) -> Any:
        templates = self._templates()
        template = templates[_hash("pdu" + salt, generated) % len(templates)]
        return self.signed(template, generated, salt)

    def membership(self, membership: str, generated: Any) -> Any:
        """A `send_join`/`send_leave`/`send_knock` body: the joiner's membership event."""
        content = {"membership": membership, "displayname": "joiner"}
        return self.signed(self._event(self.joiner, "m.room.member", content, self.joiner), generated, membership)

    def invite(self, generated: Any) -> tuple[str, dict[str, Any]]:
        """A `v2/invite` body: the peer's user invites ours into a room of the peer's; (room id, body)."""
        room_id = f"!fuzz-invite:{self.peer.server_name}"
        self.clock += 1
        event = {
            "room_id": room_id,
            "sender": self.scene.peer_user,
            "origin": self.peer.server_name,
            "origin_server_ts": self.clock,
            "type": "m.room.member",
            "state_key": self.scene.me.user_id,
            "content": {"membership": "invite"},
            # Events of the peer's room that we do not have (ids of the right form: 43 base64 characters).
            "prev_events": ["$" + "P" * 43],
            "auth_events": ["$" + "C" * 43, "$" + "L" * 43, "$" + "M" * 43],
            "depth": 5,
        }
        stripped = [
            {"type": "m.room.create", "state_key": "", "sender": self.scene.peer_user, "content": {}},
            {"type": "m.room.name", "state_key": "", "sender": self.scene.peer_user, "content": {"name": "fuzz"}},
        ]
        body = {"room_version": self.room.room_version, "event": event, "invite_room_state": stripped}
        h = _hash("invite", generated)
        if h % 3 == 0:  # the body around the event fuzzed, the event signed as it should be
            body["event"] = self._sign(event)
            return room_id, mutate(body, generated, "invite-body")
        body["event"] = self.signed(event, generated, "invite")
        return room_id, body

    # -- EDUs --------------------------------------------------------------------------------------

    def edu(self, generated: Any, salt: str) -> Any:
        scene, peer_user = self.scene, self.scene.peer_user
        device = "PEERDEVICE"
        key = {"keys": {"ed25519:AAAA": "AAAA"}, "usage": ["master"], "user_id": peer_user}
        edus: list[dict[str, Any]] = [
            {"edu_type": "m.typing", "content": {"room_id": scene.room_id, "user_id": peer_user, "typing": True}},
            {
                "edu_type": "m.receipt",
                "content": {
                    scene.room_id: {
                        "m.read": {peer_user: {"event_ids": [scene.event_id], "data": {"ts": 1, "thread_id": "main"}}}
                    }
                },
            },
            {
                "edu_type": "m.presence",
                "content": {
                    "push": [
                        {
                            "user_id": peer_user,
                            "presence": "online",
                            "last_active_ago": 5,
                            "currently_active": True,
                            "status_msg": "fuzz",
                        }
                    ]
                },
            },
            {
                "edu_type": "m.device_list_update",
                "content": {
                    "user_id": peer_user,
                    "device_id": device,
                    "stream_id": 7,
                    "prev_id": [6],
                    "deleted": False,
                    "device_display_name": "fuzz",
                    "keys": {
                        "user_id": peer_user,
                        "device_id": device,
                        "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                        "keys": {f"ed25519:{device}": "AAAA", f"curve25519:{device}": "AAAA"},
                        "signatures": {peer_user: {f"ed25519:{device}": "AAAA"}},
                    },
                },
            },
            {
                "edu_type": "m.signing_key_update",
                "content": {
                    "user_id": peer_user,
                    "master_key": key,
                    "self_signing_key": {**key, "usage": ["self_signing"]},
                },
            },
            {
                "edu_type": "m.direct_to_device",
                "content": {
                    "sender": peer_user,
                    "type": "m.room_key_request",
                    "message_id": "fuzz-message",
                    "messages": {scene.me.user_id: {scene.me.device_id: {"action": "request"}, "*": {"a": 1}}},
                },
            },
        ]
        template = edus[_hash("edu" + salt, generated) % len(edus)]
        return mutate(template, generated, salt)

    # -- other bodies ------------------------------------------------------------------------------

    def other(self, label: str, generated: Any) -> Any:
        """Bodies of the operations that take plain JSON, shaped; None for the others."""
        template = self.other_templates().get(label)
        return None if template is None else mutate(template, generated, label)

    def other_templates(self) -> dict[str, Any]:
        scene = self.scene
        return {
            "POST /_matrix/federation/v1/get_missing_events/{roomId}": {
                "earliest_events": [scene.join_event_id],
                "latest_events": [scene.event_id],
                "limit": 10,
                "min_depth": 0,
            },
            "POST /_matrix/federation/v1/user/keys/query": {"device_keys": {scene.me.user_id: [scene.me.device_id]}},
            "POST /_matrix/federation/v1/user/keys/claim": {
                "one_time_keys": {scene.me.user_id: {scene.me.device_id: "signed_curve25519"}}
            },
            "POST /_matrix/federation/v1/publicRooms": {
                "limit": 5,
                "since": "0",
                "filter": {"generic_search_term": "fuzz", "room_types": [None, "m.space"]},
                "include_all_networks": False,
            },
            "POST /_matrix/key/v2/query": {
                "server_keys": {self.peer.server_name: {self.peer.key_id: {"minimum_valid_until_ts": 0}}}
            },
        }
