"""Format checks for a PDU received over federation, per room version.

spec: server-server-api.md "Checks performed on receipt of a PDU", step 1: an event that does
not comply with the event format of its room version is dropped. The formats are the PDU
schemas of rooms/v1, v3, v4, v6, v11 and v12 ("Event format"), the size limits of
client-server-api "Size limits" and, for rooms v6+, strict canonical JSON.

Only the envelope is checked here; content schemas, signatures, hashes and auth rules are
later steps. Objects must be `dict` and arrays `list`, as a JSON decoder gives them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.protocol import canonical_json
from homeserver.protocol.errors import CanonicalJSONError, EventFormatError, InvalidIdentifier
from homeserver.protocol.identifiers import UserID, parse_event_id, parse_room_id
from homeserver.protocol.room_versions import EventFormat, RoomVersion, get_room_version

# spec: client-server-api "Size limits" — the whole event, as canonical JSON with signatures
MAX_PDU_BYTES = 65536
# spec: client-server-api "Size limits" — state_key and type
MAX_KEY_BYTES = 255
# spec: PDU schemas (rooms/v1 …/v12 "Event format") — auth_events ≤ 10, prev_events ≤ 20
MAX_AUTH_EVENTS = 10
MAX_PREV_EVENTS = 20
# spec: pdu_v1/pdu_v3/pdu_v4 `depth` — at most 2^63 - 1; rooms/v6 lowers it to 2^53 - 1
MAX_DEPTH_V1 = 2**63 - 1
MAX_DEPTH_V6 = 2**53 - 1
# spec: pdu_base `origin_server_ts` — integer, format int64
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

CREATE_EVENT_TYPE = "m.room.create"
REDACTION_EVENT_TYPE = "m.room.redaction"


def check_pdu_format(
    pdu: Mapping[str, Any],
    room_version: str | RoomVersion,
    *,
    enforce_reference_limits: bool = True,
) -> None:
    """Raise `EventFormatError` naming the field unless `pdu` has its room version's event format.

    `enforce_reference_limits=False` skips the prev_events/auth_events count limits, which the
    spec forbids applying to `/backfill` responses (server-server-api.md GET /backfill).
    """
    version = get_room_version(room_version)
    if not isinstance(pdu, Mapping):
        raise EventFormatError(f"PDU must be a JSON object, not {type(pdu).__name__}")
    if version.strict_canonical_json:
        _check_canonical(pdu)
    _check_base(pdu, version)
    _check_room_id(pdu, version)
    _check_references(pdu, version, enforce_reference_limits)
    _check_redacts(pdu, version)
    if version.event_id_in_event:
        _check_event_id_field(pdu, version)
    size = pdu_size(pdu, version)
    if size > MAX_PDU_BYTES:
        # spec: client-server-api "Size limits" — at most 65536 bytes of canonical JSON
        raise EventFormatError(f"PDU is {size} bytes of canonical JSON, above the {MAX_PDU_BYTES} limit")


def pdu_size(pdu: Mapping[str, Any], room_version: str | RoomVersion) -> int:
    """Bytes of the PDU as canonical JSON, signatures included (spec: client-server-api "Size limits").

    Rooms v1–v5 tolerate floats and out-of-range integers, so they are sized leniently.
    """
    version = get_room_version(room_version)
    try:
        return len(canonical_json.encode_for_room(dict(pdu), version.strict_canonical_json))
    except CanonicalJSONError as e:
        raise EventFormatError(f"PDU cannot be encoded as canonical JSON: {e}") from None


def _check_canonical(pdu: Mapping[str, Any]) -> None:
    # spec: rooms/fragments/v6-canonical-json — servers MUST strictly enforce canonical JSON,
    # discarding offending events over federation. One field at a time so the error names it.
    for key, value in pdu.items():
        if type(key) is not str:
            raise EventFormatError(f"PDU has a non-string key {key!r}")
        try:
            canonical_json.check(value)
        except CanonicalJSONError as e:
            raise EventFormatError(f"'{key}' is not canonical JSON: {e}") from None


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8", "surrogatepass"))


def _require(pdu: Mapping[str, Any], key: str) -> Any:
    if key not in pdu:
        raise EventFormatError(f"PDU is missing required key '{key}'")
    return pdu[key]


def _require_str(pdu: Mapping[str, Any], key: str) -> str:
    value = _require(pdu, key)
    if not isinstance(value, str):
        raise EventFormatError(f"'{key}' must be a string, not {_json_type(value)}")
    return value


def _require_int(pdu: Mapping[str, Any], key: str) -> int:
    value = _require(pdu, key)
    # bool is an int subclass in Python but not a JSON number
    if type(value) is not int:
        raise EventFormatError(f"'{key}' must be an integer, not {_json_type(value)}")
    return value


def _require_object(pdu: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = _require(pdu, key)
    if not isinstance(value, dict):
        raise EventFormatError(f"'{key}' must be an object, not {_json_type(value)}")
    return value


def _require_array(pdu: Mapping[str, Any], key: str) -> list[Any]:
    value = _require(pdu, key)
    if not isinstance(value, list):
        raise EventFormatError(f"'{key}' must be an array, not {_json_type(value)}")
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_base(pdu: Mapping[str, Any], version: RoomVersion) -> None:
    """The fields every version shares (spec: PDU schema `pdu_base` and per-version `depth`)."""
    _require_object(pdu, "content")

    event_type = _require_str(pdu, "type")
    if _utf8_len(event_type) > MAX_KEY_BYTES:
        # spec: client-server-api "Size limits"
        raise EventFormatError(f"'type' is longer than {MAX_KEY_BYTES} bytes")

    if "state_key" in pdu:
        state_key = pdu["state_key"]
        if not isinstance(state_key, str):
            raise EventFormatError(f"'state_key' must be a string, not {_json_type(state_key)}")
        if _utf8_len(state_key) > MAX_KEY_BYTES:
            # spec: client-server-api "Size limits"
            raise EventFormatError(f"'state_key' is longer than {MAX_KEY_BYTES} bytes")

    sender = _require_str(pdu, "sender")
    try:
        # spec: appendices.md "Historical User IDs" — federation MUST accept legacy localparts;
        # the 255-byte limit (CS "Size limits") is part of the user id grammar.
        UserID.parse(sender, historical=True)
    except InvalidIdentifier as e:
        raise EventFormatError(f"'sender' is not a valid user ID: {e}") from None

    ts = _require_int(pdu, "origin_server_ts")
    if not _INT64_MIN <= ts <= _INT64_MAX:
        raise EventFormatError("'origin_server_ts' is outside the int64 range")

    depth = _require_int(pdu, "depth")
    # spec: PDU schemas `depth` — "the maximum depth of the prev_events, plus one", so never
    # negative, and at most 2^63 - 1 (rooms v1–v5) or 2^53 - 1 (rooms v6+, depth_v6)
    max_depth = MAX_DEPTH_V6 if version.strict_canonical_json else MAX_DEPTH_V1
    if not 0 <= depth <= max_depth:
        raise EventFormatError(f"'depth' {depth} is outside [0, {max_depth}]")

    hashes = _require_object(pdu, "hashes")
    # spec: PDU schema `event_hash` — `sha256` is required and a string
    if "sha256" not in hashes:
        raise EventFormatError("'hashes' has no 'sha256'")
    if not isinstance(hashes["sha256"], str):
        raise EventFormatError(f"'hashes.sha256' must be a string, not {_json_type(hashes['sha256'])}")

    # spec: PDU schema `pdu_base` `signatures` — server name → key id → signature string
    signatures = _require_object(pdu, "signatures")
    for server, keys in signatures.items():
        if not isinstance(keys, dict):
            raise EventFormatError(f"'signatures.{server}' must be an object, not {_json_type(keys)}")
        for key_id, signature in keys.items():
            if not isinstance(signature, str):
                where = f"signatures.{server}.{key_id}"
                raise EventFormatError(f"'{where}' must be a string, not {_json_type(signature)}")

    if "unsigned" in pdu and not isinstance(pdu["unsigned"], dict):
        raise EventFormatError(f"'unsigned' must be an object, not {_json_type(pdu['unsigned'])}")


def _check_room_id(pdu: Mapping[str, Any], version: RoomVersion) -> None:
    if version.room_id_from_create_event and pdu.get("type") == CREATE_EVENT_TYPE:
        # spec: PDU schema `room_id_v12` — "Omitted from m.room.create events"; its room id is
        # its own event id (rooms/v12 auth rule 1.2 would reject one anyway)
        if "room_id" in pdu:
            raise EventFormatError(f"'room_id' must be absent from m.room.create in room version {version.identifier}")
        return
    room_id = _require_str(pdu, "room_id")
    try:
        # spec: appendices.md "Room IDs" — `!opaque:domain` before v12, the create event hash in v12
        parse_room_id(room_id, version)
    except InvalidIdentifier as e:
        raise EventFormatError(f"'room_id' is not a valid room ID for room version {version.identifier}: {e}") from None


def _check_references(pdu: Mapping[str, Any], version: RoomVersion, enforce_limits: bool) -> None:
    for key, limit in (("prev_events", MAX_PREV_EVENTS), ("auth_events", MAX_AUTH_EVENTS)):
        refs = _require_array(pdu, key)
        if enforce_limits and len(refs) > limit:
            raise EventFormatError(f"'{key}' has {len(refs)} entries, more than the limit of {limit}")
        for i, ref in enumerate(refs):
            if version.event_format is EventFormat.V1:
                # spec: PDU schema `pdu_v1` — each entry is a 2-element [event_id, event_hash]
                if not isinstance(ref, list) or len(ref) != 2:
                    raise EventFormatError(f"'{key}[{i}]' must be an [event_id, hashes] pair")
                event_id, hashes = ref
                if not isinstance(hashes, dict):
                    raise EventFormatError(f"'{key}[{i}][1]' must be an object of hashes")
                # Leniency: the `sha256` inside may be absent (some servers send `{}`), but
                # where present it is a string.
                if "sha256" in hashes and not isinstance(hashes["sha256"], str):
                    raise EventFormatError(f"'{key}[{i}][1].sha256' must be a string")
                where = f"{key}[{i}][0]"
            else:
                # spec: PDU schemas `pdu_v3`, `auth_events_prev_events_v4` — plain event ids
                event_id, where = ref, f"{key}[{i}]"
            if not isinstance(event_id, str):
                raise EventFormatError(f"'{where}' must be an event ID string, not {_json_type(event_id)}")
            try:
                parse_event_id(event_id, version)
            except InvalidIdentifier as e:
                raise EventFormatError(f"'{where}' is not a valid event ID: {e}") from None


def _check_redacts(pdu: Mapping[str, Any], version: RoomVersion) -> None:
    if version.redacts_in_content:
        # spec: rooms/v11 "Moving the redacts property" and the m.room.redaction schema —
        # `content.redacts` is required from room version 11 and survives redaction.
        if pdu.get("type") == REDACTION_EVENT_TYPE:
            content = pdu["content"]
            if "redacts" not in content:
                raise EventFormatError("m.room.redaction event has no 'content.redacts'")
            _check_redacts_value(content["redacts"], "content.redacts")
        return
    # spec: PDU schemas `pdu_v1`, `pdu_v3`, `pdu_v4`, `pdu_v6` — optional top-level string.
    # Not required: the v1 redaction algorithm strips it, so redacted redactions lack it.
    if "redacts" in pdu:
        _check_redacts_value(pdu["redacts"], "redacts")


def _check_redacts_value(value: object, where: str) -> None:
    # spec: m.room.redaction schema — `redacts` is a string matching "^\$". The exact id
    # shape is left to redaction handling: a wrong id simply matches no event.
    if not isinstance(value, str):
        raise EventFormatError(f"'{where}' must be an event ID string, not {_json_type(value)}")
    if not value.startswith("$"):
        raise EventFormatError(f"'{where}' must be an event ID starting with '$'")


def _check_event_id_field(pdu: Mapping[str, Any], version: RoomVersion) -> None:
    # spec: PDU schema `pdu_v1` — rooms v1–v2 carry `event_id`, `$opaque_id:domain`, ≤ 255 bytes
    event_id = _require_str(pdu, "event_id")
    try:
        parse_event_id(event_id, version)
    except InvalidIdentifier as e:
        raise EventFormatError(f"'event_id' is not a valid event ID: {e}") from None
