"""Room creation (spec: client-server-api POST /createRoom): the create event, the creator's join,
power levels, canonical alias, preset events, initial state, name and topic, invites — in the spec's
order, each authorised like any other event, all written in ONE batch so a room is created whole or
not at all."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from homeserver.errors import MatrixError
from homeserver.protocol import canonical_json
from homeserver.protocol.auth_rules import check_auth
from homeserver.protocol.errors import AuthError, ProtocolError, UnknownRoomVersion
from homeserver.protocol.event_ids import new_room_id, new_v1_event_id, room_id_from_create_event
from homeserver.protocol.room_versions import EventFormat, RoomVersion, get_room_version
from homeserver.rooms.pipeline import EventPipeline, RoomContext
from homeserver.rooms.signing import hash_and_sign

PRESETS: dict[str, dict[str, str]] = {
    # spec: createRoom preset table
    "private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "trusted_private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest_access": "can_join"},
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest_access": "forbidden"},
}


class RoomCreation:
    __slots__ = (
        "canonical_alias",
        "creation_content",
        "creator",
        "creator_profile",
        "initial_state",
        "invite",
        "invite_later",
        "invite_profiles",
        "is_direct",
        "name",
        "power_level_content_override",
        "preset",
        "room_version",
        "topic",
        "visibility",
    )

    creator: str
    room_version: str
    preset: str | None
    visibility: str
    creation_content: dict[str, Any]
    power_level_content_override: dict[str, Any] | None
    initial_state: list[dict[str, Any]]
    name: str | None
    topic: str | None
    invite: list[str]
    is_direct: bool
    canonical_alias: str | None
    creator_profile: dict[str, Any]  # displayname / avatar_url for the join
    invite_profiles: dict[str, dict[str, Any]]  # each local invitee's displayname / avatar_url
    invite_later: frozenset[str]  # invitees of other servers: invited over federation once the room exists

    def __init__(
        self,
        creator: str,
        room_version: str,
        preset: str | None = None,
        visibility: str = "private",
        creation_content: dict[str, Any] | None = None,
        power_level_content_override: dict[str, Any] | None = None,
        initial_state: list[dict[str, Any]] | None = None,
        name: str | None = None,
        topic: str | None = None,
        invite: list[str] | None = None,
        is_direct: bool = False,
        canonical_alias: str | None = None,
        creator_profile: dict[str, Any] | None = None,
        invite_profiles: dict[str, dict[str, Any]] | None = None,
        invite_later: frozenset[str] = frozenset(),
    ) -> None:
        self.creator = creator
        self.room_version = room_version
        self.preset = preset
        self.visibility = visibility
        self.creation_content = {} if creation_content is None else creation_content
        self.power_level_content_override = power_level_content_override
        self.initial_state = [] if initial_state is None else initial_state
        self.name = name
        self.topic = topic
        self.invite = [] if invite is None else invite
        self.is_direct = is_direct
        self.canonical_alias = canonical_alias
        self.creator_profile = {} if creator_profile is None else creator_profile
        self.invite_profiles = {} if invite_profiles is None else invite_profiles
        self.invite_later = invite_later


def default_power_levels(rv: RoomVersion, req: RoomCreation, preset: str) -> dict[str, Any]:
    users: dict[str, int] = {}
    if not rv.privileged_creators:
        users[req.creator] = 100
        if preset == "trusted_private_chat":
            for invitee in req.invite:
                users[invitee] = 100
    events = {
        "m.room.name": 50,
        "m.room.power_levels": 100,
        "m.room.history_visibility": 100,
        "m.room.canonical_alias": 50,
        "m.room.avatar": 50,
        # spec: createRoom — in v12 tombstones must need more than state_default
        "m.room.tombstone": 150 if rv.privileged_creators else 100,
        "m.room.server_acl": 100,
        "m.room.encryption": 100,
    }
    return {
        "users": users,
        "users_default": 0,
        "events": events,
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50 if preset == "public_chat" else 0,
        "notifications": {"room": 50},
        "historical": 100,
    }


def _merge_override(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict) and k in ("users", "events", "notifications"):
            out[k] = {**out[k], **v}
        else:
            out[k] = copy.deepcopy(v)
    return out


async def create_room(pipeline: EventPipeline, req: RoomCreation) -> str:
    """Create the room and return its id. Raises `MatrixError` for bad requests."""
    try:
        rv = get_room_version(req.room_version)
    except UnknownRoomVersion:
        message = f"room version {req.room_version!r} is not supported"
        raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", message) from None
    preset = req.preset or ("public_chat" if req.visibility == "public" else "private_chat")
    if preset not in PRESETS:
        raise MatrixError(400, "M_INVALID_PARAM", f"unknown preset {preset!r}")
    for state in req.initial_state:
        if not isinstance(state, Mapping) or not isinstance(state.get("type"), str):
            raise MatrixError(400, "M_INVALID_ROOM_STATE", "each initial_state entry needs a string type")
        if not isinstance(state.get("content"), Mapping):
            raise MatrixError(400, "M_INVALID_ROOM_STATE", "each initial_state entry needs a content object")
        if not isinstance(state.get("state_key", ""), str):
            raise MatrixError(400, "M_INVALID_ROOM_STATE", "state_key must be a string")
    try:
        canonical_json.check(req.creation_content)
        canonical_json.check(req.power_level_content_override or {})
        canonical_json.check(req.initial_state)
    except ProtocolError as e:
        raise MatrixError(400, "M_BAD_JSON", f"request is not valid canonical JSON: {e}") from None

    for check in pipeline.local_event_checks:  # e.g. a suspended account may not create rooms
        check(req.creator, "m.room.create", {}, "", None)
    db = pipeline.db
    batch = db.store.batch()
    with batch:
        ctx = _write_create_event(pipeline, batch, rv, req, preset)
        creator = req.creator

        def send(event_type: str, content: dict[str, Any], state_key: str | None = "") -> None:
            try:
                pipeline.build_local(ctx, batch, creator, event_type, content, state_key)
            except MatrixError as e:
                if e.errcode == "M_FORBIDDEN":
                    raise MatrixError(400, "M_INVALID_ROOM_STATE", f"cannot send {event_type}: {e.message}") from None
                raise

        # 2. the creator joins
        send("m.room.member", {"membership": "join", **req.creator_profile}, creator)
        # 3. power levels, with the creator able to send the rest until the end
        final_pl = default_power_levels(rv, req, preset)
        if req.power_level_content_override:
            final_pl = _merge_override(final_pl, req.power_level_content_override)
        first_pl = final_pl
        if not rv.privileged_creators and final_pl.get("users", {}).get(creator, 0) != 100:
            first_pl = {**final_pl, "users": {**final_pl.get("users", {}), creator: 100}}
        send("m.room.power_levels", first_pl)
        # 4. canonical alias
        if req.canonical_alias:
            send("m.room.canonical_alias", {"alias": req.canonical_alias})
        # 5. preset events, unless initial_state sets them
        overridden = {(s["type"], s.get("state_key", "")) for s in req.initial_state}
        p = PRESETS[preset]
        for event_type, key in (
            ("m.room.join_rules", "join_rule"),
            ("m.room.history_visibility", "history_visibility"),
            ("m.room.guest_access", "guest_access"),
        ):
            if (event_type, "") not in overridden:
                send(event_type, {key: p[key]})
        # 6. initial state
        for state in req.initial_state:
            send(state["type"], dict(state["content"]), state.get("state_key", ""))
        # 7. name and topic
        if req.name is not None:
            send("m.room.name", {"name": req.name})
        if req.topic is not None:
            send(
                "m.room.topic",
                {"topic": req.topic, "m.topic": [{"mimetype": "text/plain", "body": req.topic}]},
            )
        # 8. invites
        for invitee in (u for u in req.invite if u not in req.invite_later):
            # the invitee's profile, as the membership endpoints put it in (clients show the name)
            invite: dict[str, Any] = {"membership": "invite", **req.invite_profiles.get(invitee, {})}
            if req.is_direct:
                invite["is_direct"] = True
            send("m.room.member", invite, invitee)
        # an override that lowers the creator is applied last, once the creator has sent everything
        if first_pl is not final_pl:
            send("m.room.power_levels", final_pl)
        await batch.commit()
    pipeline.notify(ctx)
    return ctx.room_id


def _write_create_event(
    pipeline: EventPipeline, batch: Any, rv: RoomVersion, req: RoomCreation, preset: str
) -> RoomContext:
    identity = pipeline.identity
    content: dict[str, Any] = {k: v for k, v in req.creation_content.items() if k != "room_version"}
    content["room_version"] = rv.identifier
    if not rv.implicit_room_creator:
        content["creator"] = req.creator
    if rv.privileged_creators:
        extra = content.get("additional_creators", [])
        if not isinstance(extra, list) or not all(isinstance(u, str) for u in extra):
            raise MatrixError(400, "M_BAD_JSON", "additional_creators must be a list of user ids")
        if preset == "trusted_private_chat":
            # spec: createRoom — trusted_private_chat invitees SHOULD become additional creators
            extra = [*extra, *(u for u in req.invite if u not in extra)]
        if extra:
            content["additional_creators"] = extra
    event: dict[str, Any] = {
        "type": "m.room.create",
        "state_key": "",
        "sender": req.creator,
        "content": content,
        "origin_server_ts": int(pipeline.clock() * 1000),
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
    }
    if not rv.room_id_from_create_event:
        event["room_id"] = new_room_id(identity.server_name)
    if rv.event_format is EventFormat.V1:
        event["event_id"] = new_v1_event_id(identity.server_name)
    if not rv.implicit_room_creator:
        event["origin"] = identity.server_name
    try:
        check_auth(event, {}, rv)
    except AuthError as e:
        raise MatrixError(400, "M_BAD_JSON", f"invalid creation_content: {e.reason}") from None
    signed = hash_and_sign(event, rv, identity.server_name, identity.key_id, identity.signing_key)
    eid = signed.event_id
    room_id = room_id_from_create_event(event, rv) if rv.room_id_from_create_event else event["room_id"]
    db = pipeline.db
    room_short = db.ids.room_or_create(room_id, batch)
    ctx = RoomContext(
        rv=rv,
        room_id=room_id,
        room_short=room_short,
        extremities=[],
        state=0,
        info={"version": rv.identifier, "create_event_id": eid, "state": 0, "creator": req.creator},
    )
    pipeline.write_event(ctx, batch, event, eid, signed.encoded, [], 0)
    return ctx
