"""Shared pieces of the authorization rules: rule numbering and small state readers.

Used by `auth_rules` (the entry point) and `auth_rules_membership` (the m.room.member rules).
spec: the auth rules of rooms/fragments/v1-auth-rules, v3-auth-rules, v8-auth-rules and
rooms/v6, v7, v10, v11, v12 — the same rules, renumbered as versions add and remove some.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from homeserver.protocol import identifiers
from homeserver.protocol.events import content_of
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion

StateKey = tuple[str, str]
AuthEventsMap = Mapping[StateKey, Mapping[str, Any]]

CREATE: StateKey = ("m.room.create", "")
POWER_LEVELS: StateKey = ("m.room.power_levels", "")
JOIN_RULES: StateKey = ("m.room.join_rules", "")


class RuleNumbers:
    """The spec's number for each rule, in one room version's list."""

    __slots__ = (
        "aliases",
        "auth_events",
        "auth_events_room_id",
        "ban",
        "federate",
        "invite",
        "join",
        "join_otherwise",
        "knock",
        "leave",
        "member",
        "pl_creators",
        "pl_map_current",
        "pl_map_new",
        "pl_map_types",
        "pl_named_change",
        "pl_named_types",
        "pl_users",
        "pl_users_current",
        "pl_users_new",
        "power_levels",
        "redaction",
        "required_level",
        "room_id",
        "sender_joined",
        "state_key",
        "third_party_invite",
        "unknown_membership",
    )

    room_id: Final[str]  # v12 rule 2 (unused before v12)
    auth_events: Final[str]
    # spec: rooms/v12 numbers its room-id rule "5" in the source, which renders as 3.4 (its 2.4 is gone).
    auth_events_room_id: Final[str]
    federate: Final[str]
    aliases: Final[str]  # rooms v1–v5 only
    member: Final[str]
    sender_joined: Final[str]
    third_party_invite: Final[str]
    required_level: Final[str]
    state_key: Final[str]
    power_levels: Final[str]
    redaction: Final[str]  # rooms v1–v2 only
    # Within the member rules: rooms v8+ insert the join_authorised_via_users_server rule as x.2.
    join: Final[str]
    invite: Final[str]
    leave: Final[str]
    ban: Final[str]
    knock: Final[str]
    unknown_membership: Final[str]
    join_otherwise: Final[str]
    # Within the power levels rules: rooms v10+ add two type rules first, v12 a creators rule.
    pl_named_types: Final[str]
    pl_map_types: Final[str]
    pl_users: Final[str]
    pl_creators: Final[str]
    pl_named_change: Final[str]
    pl_map_current: Final[str]
    pl_map_new: Final[str]
    pl_users_current: Final[str]
    pl_users_new: Final[str]

    def __init__(
        self,
        room_id: str,
        auth_events: str,
        auth_events_room_id: str,
        federate: str,
        aliases: str,
        member: str,
        sender_joined: str,
        third_party_invite: str,
        required_level: str,
        state_key: str,
        power_levels: str,
        redaction: str,
        join: str,
        invite: str,
        leave: str,
        ban: str,
        knock: str,
        unknown_membership: str,
        join_otherwise: str,
        pl_named_types: str,
        pl_map_types: str,
        pl_users: str,
        pl_creators: str,
        pl_named_change: str,
        pl_map_current: str,
        pl_map_new: str,
        pl_users_current: str,
        pl_users_new: str,
    ) -> None:
        self.room_id = room_id
        self.auth_events = auth_events
        self.auth_events_room_id = auth_events_room_id
        self.federate = federate
        self.aliases = aliases
        self.member = member
        self.sender_joined = sender_joined
        self.third_party_invite = third_party_invite
        self.required_level = required_level
        self.state_key = state_key
        self.power_levels = power_levels
        self.redaction = redaction
        self.join = join
        self.invite = invite
        self.leave = leave
        self.ban = ban
        self.knock = knock
        self.unknown_membership = unknown_membership
        self.join_otherwise = join_otherwise
        self.pl_named_types = pl_named_types
        self.pl_map_types = pl_map_types
        self.pl_users = pl_users
        self.pl_creators = pl_creators
        self.pl_named_change = pl_named_change
        self.pl_map_current = pl_map_current
        self.pl_map_new = pl_map_new
        self.pl_users_current = pl_users_current
        self.pl_users_new = pl_users_new


def _compute_rule_numbers(rv: RoomVersion) -> RuleNumbers:
    v12 = 1 if rv.room_id_from_create_event else 0  # spec: rooms/v12 inserts rule 2 (room id)
    aliases = 1 if rv.special_case_aliases_auth else 0  # spec: rooms/v6 removes rule 4 (aliases)
    member = 4 + v12 + aliases
    m = str(member)
    via = 1 if rv.restricted_join_rule else 0  # spec: rooms/v8 inserts member rule 2
    knock = 1 if rv.knock_join_rule else 0  # spec: rooms/v7 adds the knock membership
    join = f"{m}.{2 + via}"
    pl = str(member + 5)
    int_rules = 2 if rv.enforce_int_power_levels else 0  # spec: rooms/v10 adds 10.1 and 10.2
    creators = 1 if rv.privileged_creators else 0  # spec: rooms/v12 adds 10.4
    p = 3 + int_rules + creators  # number of the rule on the seven named levels ("added, changed or removed")
    return RuleNumbers(
        room_id="2",
        auth_events=str(2 + v12),
        auth_events_room_id="3.4" if v12 else "2.5",
        federate=str(3 + v12),
        aliases="4",
        member=m,
        sender_joined=str(member + 1),
        third_party_invite=str(member + 2),
        required_level=str(member + 3),
        state_key=str(member + 4),
        power_levels=pl,
        redaction=str(member + 6),
        join=join,
        invite=f"{m}.{3 + via}",
        leave=f"{m}.{4 + via}",
        ban=f"{m}.{5 + via}",
        knock=f"{m}.{6 + via}",
        unknown_membership=f"{m}.{6 + via + knock}",
        join_otherwise=f"{join}.{6 + via}",
        pl_named_types=f"{pl}.1",
        pl_map_types=f"{pl}.2",
        pl_users=f"{pl}.{1 + int_rules}",
        pl_creators=f"{pl}.4",
        pl_named_change=f"{pl}.{p}",
        pl_map_current=f"{pl}.{p + 1}",
        pl_map_new=f"{pl}.{p + 2}",
        pl_users_current=f"{pl}.{p + 3}",
        pl_users_new=f"{pl}.{p + 4}",
    )


# Constant tables (not state): one rule numbering per known room version, keyed by identifier.
_RULE_NUMBERS: Mapping[str, tuple[RoomVersion, RuleNumbers]] = {
    rv.identifier: (rv, _compute_rule_numbers(rv)) for rv in KNOWN_ROOM_VERSIONS.values()
}


def rule_numbers(rv: RoomVersion) -> RuleNumbers:
    """How the spec numbers each rule in this room version's list."""
    found = _RULE_NUMBERS.get(rv.identifier)
    if found is not None and found[0] is rv:
        return found[1]
    return _compute_rule_numbers(rv)


# --- small readers -------------------------------------------------------------------------------


def server_of(identifier: object) -> str | None:
    """The server part of a user, room (v1–v11) or event (v1–v2) id."""
    if not isinstance(identifier, str) or ":" not in identifier:
        return None
    return identifier.split(":", 1)[1]


# spec: appendices "User Identifiers" — the everyday shape, decided by one regex: a printable-ASCII
# localpart without ':', a DNS hostname holding a letter or '-' (so never an IPv4 literal, whose octets
# need checking), an optional port of at most four digits (never above 65535). Within 255 characters
# (ASCII, so 255 bytes) every such string is valid; anything else goes to the full parser.
_PLAIN_USER_ID = re.compile(r"@[\x21-\x39\x3b-\x7e]*:(?=[0-9.]*[A-Za-z-])[0-9A-Za-z.-]+(?::[0-9]{1,4})?")


def is_valid_user_id(value: object) -> bool:
    """spec: appendices "User Identifiers", with the historical localparts federation must accept."""
    if not isinstance(value, str):
        return False
    if len(value) <= identifiers.MAX_IDENTIFIER_BYTES and _PLAIN_USER_ID.fullmatch(value):
        return True
    return identifiers.is_valid_user_id(value, historical=True)


def membership_of(auth_events: AuthEventsMap, user_id: object) -> str | None:
    if not isinstance(user_id, str):
        return None
    membership = content_of(auth_events.get(("m.room.member", user_id))).get("membership")
    return membership if isinstance(membership, str) else None


def join_rule_of(auth_events: AuthEventsMap) -> str:
    # No join rules event at all: behave as an invite-only room (the spec gives no default).
    if JOIN_RULES not in auth_events:
        return "invite"
    join_rule = content_of(auth_events[JOIN_RULES]).get("join_rule")
    return join_rule if isinstance(join_rule, str) else ""
