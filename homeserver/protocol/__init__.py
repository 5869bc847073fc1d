"""The pure rules of Matrix: identifiers, canonical JSON, room versions, event format, hashes,
signatures, redaction and authorization. No I/O, no globals; everything else trusts this package."""

from __future__ import annotations

from homeserver.protocol.event_ids import event_id, room_id_from_create_event
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion, get_room_version

__all__ = ["KNOWN_ROOM_VERSIONS", "RoomVersion", "event_id", "get_room_version", "room_id_from_create_event"]
