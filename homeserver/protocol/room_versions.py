"""The room-version registry: what each stable room version (1–12) changes.

spec: rooms/_index.md (room version grammar, feature matrix) and each rooms/vN.md page.
Code asks a `RoomVersion` for a feature, never compares version strings.
"""

from __future__ import annotations

import enum
import re
from typing import ClassVar, Final

from homeserver.protocol.errors import UnknownRoomVersion


class EventFormat(enum.Enum):
    """How event ids look and how references are written."""

    V1 = 1  # rooms v1–v2: `$local:server` ids carried in the event, references as [id, {hashes}]
    V2 = 2  # room v3: reference hash ids, standard unpadded base64, references as ids
    V3 = 3  # rooms v4+: reference hash ids, URL-safe unpadded base64


class StateResAlgorithm(enum.Enum):
    V1 = 1  # spec: rooms/v1 state resolution
    V2 = 2  # spec: rooms/fragments/v2-state-res
    V2_1 = 3  # spec: rooms/v12 state resolution (MSC4297)


class RedactionRules(enum.Enum):
    V1 = 1  # spec: rooms/fragments/v1-redactions (rooms v1–v5)
    V6 = 6  # spec: rooms/fragments/v6-redactions (rooms v6–v7): m.room.aliases loses its keys
    V8 = 8  # spec: rooms/v8 redactions: join_rules keeps `allow`
    V9 = 9  # spec: rooms/fragments/v9-redactions (v9–v10): member keeps join_authorised_via_users_server
    V11 = 11  # spec: rooms/fragments/v11-redactions (rooms v11–v12)


class AuthRulesVariant(enum.Enum):
    V1 = 1  # spec: rooms/fragments/v1-auth-rules (rooms v1–v2)
    V3 = 3  # spec: rooms/fragments/v3-auth-rules (rooms v3–v5)
    V6 = 6  # spec: rooms/v6 (no m.room.aliases rule, notifications power level)
    V7 = 7  # spec: rooms/v7 (knocking)
    V8 = 8  # spec: rooms/fragments/v8-auth-rules (rooms v8–v9, restricted)
    V10 = 10  # spec: rooms/v10 (knock_restricted, integer power levels)
    V11 = 11  # spec: rooms/v11 (no `creator`)
    V12 = 12  # spec: rooms/v12 (creators, room id from the create event)


class RoomVersion:
    """One room version's features; the registry's instances are the only ones (compared by identity)."""

    __slots__ = (
        "auth_rules",
        "enforce_int_power_levels",
        "enforce_key_validity",
        "event_format",
        "identifier",
        "implicit_room_creator",
        "knock_join_rule",
        "knock_restricted_join_rule",
        "limit_notifications_power_levels",
        "privileged_creators",
        "redaction",
        "redacts_in_content",
        "restricted_join_rule",
        "room_id_from_create_event",
        "special_case_aliases_auth",
        "state_res",
        "strict_canonical_json",
    )

    identifier: Final[str]
    event_format: Final[EventFormat]
    state_res: Final[StateResAlgorithm]
    redaction: Final[RedactionRules]
    auth_rules: Final[AuthRulesVariant]
    # spec: rooms/v5 — signing keys must be valid at the event's origin_server_ts.
    enforce_key_validity: Final[bool]
    # spec: rooms/v6 — canonical JSON rejects floats and integers outside [-(2**53)+1, 2**53-1].
    strict_canonical_json: Final[bool]
    # spec: rooms/v6 — m.room.aliases events have no special auth rule.
    special_case_aliases_auth: Final[bool]
    # spec: rooms/v6 — `notifications` is checked when power levels change.
    limit_notifications_power_levels: Final[bool]
    # spec: rooms/v7 — the `knock` membership and join rule.
    knock_join_rule: Final[bool]
    # spec: rooms/v8 — the `restricted` join rule.
    restricted_join_rule: Final[bool]
    # spec: rooms/v10 — the `knock_restricted` join rule.
    knock_restricted_join_rule: Final[bool]
    # spec: rooms/v10 — power level values must be integers, not strings.
    enforce_int_power_levels: Final[bool]
    # spec: rooms/v11 — the room creator is the create event's sender; `creator` is gone.
    implicit_room_creator: Final[bool]
    # spec: rooms/v11 — `redacts` moves from the top level into `content`.
    redacts_in_content: Final[bool]
    # spec: rooms/v12 — room ids are the reference hash of the create event, which has no room_id.
    room_id_from_create_event: Final[bool]
    # spec: rooms/v12 — creators (sender + additional_creators) have infinite power.
    privileged_creators: Final[bool]

    # The fields in the order above, for `as_dict` (`python -m homeserver room-versions` lists them so).
    FIELDS: ClassVar[tuple[str, ...]] = (
        "identifier",
        "event_format",
        "state_res",
        "redaction",
        "auth_rules",
        "enforce_key_validity",
        "strict_canonical_json",
        "special_case_aliases_auth",
        "limit_notifications_power_levels",
        "knock_join_rule",
        "restricted_join_rule",
        "knock_restricted_join_rule",
        "enforce_int_power_levels",
        "implicit_room_creator",
        "redacts_in_content",
        "room_id_from_create_event",
        "privileged_creators",
    )

    def __init__(
        self,
        identifier: str,
        event_format: EventFormat,
        state_res: StateResAlgorithm,
        redaction: RedactionRules,
        auth_rules: AuthRulesVariant,
        enforce_key_validity: bool,
        strict_canonical_json: bool,
        special_case_aliases_auth: bool,
        limit_notifications_power_levels: bool,
        knock_join_rule: bool,
        restricted_join_rule: bool,
        knock_restricted_join_rule: bool,
        enforce_int_power_levels: bool,
        implicit_room_creator: bool,
        redacts_in_content: bool,
        room_id_from_create_event: bool,
        privileged_creators: bool,
    ) -> None:
        self.identifier = identifier
        self.event_format = event_format
        self.state_res = state_res
        self.redaction = redaction
        self.auth_rules = auth_rules
        self.enforce_key_validity = enforce_key_validity
        self.strict_canonical_json = strict_canonical_json
        self.special_case_aliases_auth = special_case_aliases_auth
        self.limit_notifications_power_levels = limit_notifications_power_levels
        self.knock_join_rule = knock_join_rule
        self.restricted_join_rule = restricted_join_rule
        self.knock_restricted_join_rule = knock_restricted_join_rule
        self.enforce_int_power_levels = enforce_int_power_levels
        self.implicit_room_creator = implicit_room_creator
        self.redacts_in_content = redacts_in_content
        self.room_id_from_create_event = room_id_from_create_event
        self.privileged_creators = privileged_creators

    def __repr__(self) -> str:
        return f"<RoomVersion {self.identifier}>"

    def as_dict(self) -> dict[str, object]:
        """Every field by name, in declaration order."""
        return {name: getattr(self, name) for name in self.FIELDS}

    @property
    def event_id_in_event(self) -> bool:
        """Rooms v1–v2 carry `event_id` in the PDU; later versions derive it from the reference hash."""
        return self.event_format is EventFormat.V1

    @property
    def uses_reference_hash_ids(self) -> bool:
        return self.event_format is not EventFormat.V1

    @property
    def urlsafe_event_ids(self) -> bool:
        return self.event_format is EventFormat.V3


def _version(
    identifier: str,
    event_format: EventFormat,
    state_res: StateResAlgorithm,
    redaction: RedactionRules,
    auth_rules: AuthRulesVariant,
) -> RoomVersion:
    n = int(identifier)
    return RoomVersion(
        identifier=identifier,
        event_format=event_format,
        state_res=state_res,
        redaction=redaction,
        auth_rules=auth_rules,
        enforce_key_validity=n >= 5,
        strict_canonical_json=n >= 6,
        special_case_aliases_auth=n <= 5,
        limit_notifications_power_levels=n >= 6,
        knock_join_rule=n >= 7,
        restricted_join_rule=n >= 8,
        knock_restricted_join_rule=n >= 10,
        enforce_int_power_levels=n >= 10,
        implicit_room_creator=n >= 11,
        redacts_in_content=n >= 11,
        room_id_from_create_event=n >= 12,
        privileged_creators=n >= 12,
    )


_E, _S, _R, _A = EventFormat, StateResAlgorithm, RedactionRules, AuthRulesVariant

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {
    v.identifier: v
    for v in (
        _version("1", _E.V1, _S.V1, _R.V1, _A.V1),
        _version("2", _E.V1, _S.V2, _R.V1, _A.V1),
        _version("3", _E.V2, _S.V2, _R.V1, _A.V3),
        _version("4", _E.V3, _S.V2, _R.V1, _A.V3),
        _version("5", _E.V3, _S.V2, _R.V1, _A.V3),
        _version("6", _E.V3, _S.V2, _R.V6, _A.V6),
        _version("7", _E.V3, _S.V2, _R.V6, _A.V7),
        _version("8", _E.V3, _S.V2, _R.V8, _A.V8),
        _version("9", _E.V3, _S.V2, _R.V9, _A.V8),
        _version("10", _E.V3, _S.V2, _R.V9, _A.V10),
        _version("11", _E.V3, _S.V2, _R.V11, _A.V11),
        _version("12", _E.V3, _S.V2_1, _R.V11, _A.V12),
    )
}

# spec: rooms/_index.md says 12 is the default; the v1.16 changelog advises staying on 11 for a while,
# so the server's default is a config value and this is only the spec's recommendation.
SPEC_DEFAULT_ROOM_VERSION = "12"

# spec: rooms/_index.md "Room version grammar": 1–32 code points of [a-z0-9.-].
_ROOM_VERSION_GRAMMAR = re.compile(r"[a-z0-9.\-]{1,32}")


def is_valid_room_version_id(identifier: str) -> bool:
    return bool(_ROOM_VERSION_GRAMMAR.fullmatch(identifier))


def get_room_version(identifier: object) -> RoomVersion:
    """The registry entry for a room version, or `UnknownRoomVersion`."""
    if isinstance(identifier, RoomVersion):
        return identifier
    if not isinstance(identifier, str):
        raise UnknownRoomVersion(f"room version must be a string, not {type(identifier).__name__}")
    try:
        return KNOWN_ROOM_VERSIONS[identifier]
    except KeyError:
        raise UnknownRoomVersion(f"unsupported room version {identifier!r}") from None
