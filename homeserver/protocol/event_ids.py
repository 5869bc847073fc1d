"""Event ids and v12 room ids.

spec: rooms/fragments/v1-event-ids (v1–v2: `$opaque:server`, chosen by the sender),
rooms/v3 "Event IDs" (standard unpadded base64 of the reference hash),
rooms/fragments/v4-event-ids (URL-safe unpadded base64), rooms/v12 "Room IDs" (`!` + the create
event's reference hash).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from homeserver.protocol import unpadded_base64
from homeserver.protocol.errors import EventFormatError
from homeserver.protocol.hashes import reference_hash
from homeserver.protocol.room_versions import EventFormat, RoomVersion, get_room_version


def event_id(event: Mapping[str, Any], room_version: str | RoomVersion) -> str:
    """The id of a PDU.

    For rooms v3+ it is computed from the reference hash. For v1–v2 the id is carried in the event
    itself and returned as is (`EventFormatError` if it is missing).
    """
    rv = get_room_version(room_version)
    if rv.event_format is EventFormat.V1:
        eid = event.get("event_id")
        if not isinstance(eid, str):
            raise EventFormatError("room versions 1 and 2 carry event_id in the event")
        return eid
    digest = reference_hash(event, rv)
    if rv.event_format is EventFormat.V2:
        return "$" + unpadded_base64.encode(digest)
    return "$" + unpadded_base64.encode_urlsafe(digest)


def new_v1_event_id(server_name: str) -> str:
    """A fresh `$opaque:server` id for an event we create in a v1–v2 room."""
    return f"${secrets.token_urlsafe(18)}:{server_name}"


def room_id_from_create_event(create_event: Mapping[str, Any], room_version: str | RoomVersion) -> str:
    """The v12 room id: `!` + URL-safe unpadded base64 of the create event's reference hash."""
    rv = get_room_version(room_version)
    if not rv.room_id_from_create_event:
        raise EventFormatError(f"room version {rv.identifier} does not derive room ids from the create event")
    return "!" + event_id(create_event, rv)[1:]


def new_room_id(server_name: str) -> str:
    """A fresh `!opaque:server` room id for rooms v1–v11."""
    return f"!{secrets.token_urlsafe(18)}:{server_name}"
