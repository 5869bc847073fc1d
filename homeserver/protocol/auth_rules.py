"""The authorization rules: may this event be accepted, given a set of state?

spec: server-server-api "Authorisation rules" and "Auth events selection"; the rules of each room
version: rooms/fragments/v1-auth-rules (v1–v2), rooms/fragments/v3-auth-rules (v3–v5), rooms/v6,
rooms/v7, rooms/fragments/v8-auth-rules (v8–v9), rooms/v10, rooms/v11, rooms/v12.

`check_auth` runs the rules against a state map keyed by `(type, state_key)`: the event's own auth
events, the state before it, or the room's current state (server-server-api "Checks performed on
receipt of a PDU", steps 4–6). It only reads the entries the auth events selection names, so extra
state is harmless. Rules 2.1–2.3 are about the event's `auth_events` *list* (duplicates, unselected
entries, rejected entries), which a map cannot show: `check_auth_events_field` checks them.

Rule numbers differ between room versions (the m.room.member rules are rule 5 in v1–v5 and v12 but rule 4
in v6–v11, ...). `AuthError.rule` carries the number as printed in the spec for the room version being
checked (`auth_rules_common.rule_numbers`). Where a rule only says "allow if ...", a refusal is reported
under the rule that finally rejects ("Otherwise, reject"). The m.room.member rules live in
`auth_rules_membership`, power levels as numbers in `power_levels`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from homeserver.protocol.auth_rules_common import (
    CREATE,
    JOIN_RULES,
    POWER_LEVELS,
    AuthEventsMap,
    RuleNumbers,
    StateKey,
    is_valid_user_id,
    membership_of,
    rule_numbers,
    server_of,
)
from homeserver.protocol.auth_rules_membership import check_member
from homeserver.protocol.errors import AuthError, ProtocolError
from homeserver.protocol.event_ids import event_id
from homeserver.protocol.events import content_of
from homeserver.protocol.power_levels import (
    NAMED_LEVEL_DEFAULTS,
    get_named_level,
    get_required_power_level_for_event,
    parse_power_level,
    room_creators,
    user_power_level,
)
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS, AuthRulesVariant, RoomVersion, get_room_version

__all__ = [
    "AuthEventsMap",
    "AuthMemo",
    "StateKey",
    "auth_events_map",
    "auth_types_for_event",
    "check_auth",
    "check_auth_events_field",
]


# --- auth events selection ----------------------------------------------------------------------


def auth_types_for_event(event: Mapping[str, Any], room_version: str | RoomVersion) -> list[StateKey]:
    """The `(type, state_key)` pairs an event's `auth_events` should hold, in a stable order.

    spec: server-server-api "Auth events selection". The create event is selected except where the
    room id is derived from it (rooms/v12: "m.room.create MUST NOT be selected").
    """
    rv = room_version if type(room_version) is RoomVersion else get_room_version(room_version)
    event_type = event.get("type")
    if event_type == "m.room.create":
        return []
    wanted = [POWER_LEVELS] if rv.room_id_from_create_event else [CREATE, POWER_LEVELS]
    sender = event.get("sender")
    if isinstance(sender, str):
        wanted.append(("m.room.member", sender))
    if event_type != "m.room.member":
        return wanted
    content = content_of(event)
    membership = content.get("membership")
    extra: list[StateKey] = []
    target = event.get("state_key")
    if isinstance(target, str):
        extra.append(("m.room.member", target))
    if membership in ("join", "invite", "knock"):
        extra.append(JOIN_RULES)
    if membership == "invite" and "third_party_invite" in content:
        tpi = content["third_party_invite"]
        signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
        token = signed.get("token") if isinstance(signed, Mapping) else None
        if isinstance(token, str):
            extra.append(("m.room.third_party_invite", token))
    if membership == "join" and rv.restricted_join_rule:
        via = content.get("join_authorised_via_users_server")
        if isinstance(via, str):
            extra.append(("m.room.member", via))
    for key in extra:  # each pair once, first occurrence first
        if key not in wanted:
            wanted.append(key)
    return wanted


def auth_events_map(auth_events: Iterable[Mapping[str, Any]]) -> dict[StateKey, Mapping[str, Any]]:
    """Key events by `(type, state_key)` for `check_auth`; events without a string state key are skipped."""
    out: dict[StateKey, Mapping[str, Any]] = {}
    for ev in auth_events:
        key = _state_key_of(ev)
        if key is not None:
            out[key] = ev
    return out


def _state_key_of(event: Mapping[str, Any]) -> StateKey | None:
    ev_type, state_key = event.get("type"), event.get("state_key")
    return (ev_type, state_key) if isinstance(ev_type, str) and isinstance(state_key, str) else None


def check_auth_events_field(
    event: Mapping[str, Any],
    auth_event_entries: Sequence[Mapping[str, Any]],
    room_version: str | RoomVersion,
    *,
    is_rejected: Callable[[Mapping[str, Any]], bool] | None = None,
) -> None:
    """Rules about the event's `auth_events` list itself, given the events it references, in order.

    spec: rooms auth rules 2.1–2.5 (3.1–3.4 in rooms/v12): no duplicate `(type, state_key)`, nothing the
    auth events selection would not pick, nothing rejected (`is_rejected` tells; the caller knows),
    the create event present (rooms v1–v11; absent in v12), and every entry in the event's room.
    Run it with `check_auth` on the same events when checking an event against its auth events.
    """
    rv = get_room_version(room_version)
    n = rule_numbers(rv)
    if event.get("type") == "m.room.create":
        return  # spec: auth rule 1 decides create events before rule 2 is reached
    a = n.auth_events
    keys = [_state_key_of(e) for e in auth_event_entries]
    valid_keys = [k for k in keys if k is not None]
    if len(set(valid_keys)) != len(valid_keys):
        raise AuthError(f"{a}.1", "auth_events holds two events for the same (type, state_key)")
    selected = set(auth_types_for_event(event, rv))
    for key in keys:
        if key is None or key not in selected:
            # spec: rooms/v12 rule 3.2 — the create event is not selected in this version either.
            raise AuthError(f"{a}.2", f"auth_events holds {key!r}, which the auth events selection does not pick")
    if is_rejected is not None and any(is_rejected(e) for e in auth_event_entries):
        raise AuthError(f"{a}.3", "auth_events holds a rejected event")
    if not rv.room_id_from_create_event and CREATE not in keys:
        raise AuthError(f"{a}.4", "auth_events holds no m.room.create event")
    room_id = event.get("room_id")
    for entry in auth_event_entries:
        if entry.get("room_id") != room_id:
            raise AuthError(n.auth_events_room_id, "an auth event belongs to another room")


# --- the rules ----------------------------------------------------------------------------------


class AuthMemo:
    """What `check_auth` parses out of state events, kept across many checks in one room version.

    State resolution checks thousands of events against the same few power levels and create events;
    with a memo each is parsed once. Entries are keyed by the event object's identity and keep the
    object alive, so an identity is never reused while the memo lives; the events must not be mutated
    meanwhile. One memo per room version and per task (it is not locked).
    """

    __slots__ = ("_creators", "_levels", "room_version")

    def __init__(self, room_version: RoomVersion) -> None:
        self.room_version = room_version
        self._creators: dict[int, tuple[Mapping[str, Any], frozenset[str]]] = {}
        self._levels: dict[int, tuple[Mapping[str, Any], _Levels]] = {}

    def creators(self, create: Mapping[str, Any]) -> frozenset[str]:
        hit = self._creators.get(id(create))
        if hit is None or hit[0] is not create:
            hit = self._creators[id(create)] = (create, room_creators(create, self.room_version))
        return hit[1]

    def levels(self, power_levels: Mapping[str, Any]) -> _Levels:
        hit = self._levels.get(id(power_levels))
        if hit is None or hit[0] is not power_levels:
            hit = self._levels[id(power_levels)] = (power_levels, _Levels(power_levels, self.room_version))
        return hit[1]


def check_auth(
    event: Mapping[str, Any],
    auth_events: Mapping[tuple[str, str], Mapping[str, Any]],
    room_version: str | RoomVersion,
    *,
    create_event_id: str | None = None,
    memo: AuthMemo | None = None,
) -> None:
    """Raise `AuthError` unless the authorization rules of `room_version` allow `event`.

    `auth_events` maps `(type, state_key)` to the state the event is checked against. In rooms v12 the
    create event is not among an event's auth events, but callers still put it here under
    `("m.room.create", "")`. Entries the auth events selection would not pick are ignored.

    `create_event_id` is the id of that create event when the caller knows it (state resolution
    does); otherwise it is computed from the event (its reference hash, or `event_id` in rooms v1–v2).
    It is needed for rooms/v12 rule 2 and for the creator's first join.

    `memo` (an `AuthMemo` for the same room version) lets many checks share what they parse.
    """
    rv = room_version if type(room_version) is RoomVersion else get_room_version(room_version)
    if memo is not None and memo.room_version is not rv:
        raise ValueError("the AuthMemo belongs to another room version")
    n = rule_numbers(rv)
    if event.get("type") == "m.room.create":
        _check_create(event, rv)
        return

    create = auth_events.get(CREATE)
    room_id = event.get("room_id")
    if rv.room_id_from_create_event:
        # spec: rooms/v12 auth rule 2 — the room id is the create event's id with `!` for `$`.
        if create is None or not _is_room_create_event(room_id, create, create_event_id, rv):
            raise AuthError(n.room_id, "room_id is not the id of the room's m.room.create event")
    elif create is None:  # spec: rooms/v1–v11 auth rule 2.4
        raise AuthError(f"{n.auth_events}.4", "no m.room.create event among the auth events")
    # spec: auth rule 2.5 (3.4 in rooms/v12), on the entries the rules read: those the selection picks
    # (worked out only when some entry is from elsewhere; the v12 create event has no room_id at all).
    selected: list[StateKey] | None = None
    for key, entry in auth_events.items():
        if entry.get("room_id") != room_id and not (key == CREATE and rv.room_id_from_create_event):
            if selected is None:
                selected = auth_types_for_event(event, rv)
            if key in selected:
                raise AuthError(n.auth_events_room_id, f"auth event {key!r} belongs to another room")

    sender = event.get("sender")
    # spec: auth rule 3 (4 in rooms/v12) — m.federate false keeps other servers out.
    if content_of(create).get("m.federate") is False and server_of(sender) != server_of(create.get("sender")):
        raise AuthError(n.federate, "the room is not federated and the sender is on another server")

    event_type = event.get("type")
    if rv.special_case_aliases_auth and event_type == "m.room.aliases":
        # spec: rooms/fragments/v3-auth-rules 4 (v1–v5; removed in rooms/v6) — a server's own aliases.
        if "state_key" not in event:
            raise AuthError("4.1", "m.room.aliases has no state_key")
        if server_of(sender) != event.get("state_key"):
            raise AuthError("4.2", "m.room.aliases state_key is not the sender's server")
        return

    creators = memo.creators(create) if memo is not None else room_creators(create, rv)
    if event_type == "m.room.member":  # spec: auth rule 5 (4 in rooms v6–v11)
        check_member(event, auth_events, create, create_event_id, rv, n, creators)
        return

    # spec: auth rule 6 (5 in rooms v6–v11)
    if membership_of(auth_events, sender) != "join":
        raise AuthError(n.sender_joined, "the sender is not joined to the room")

    power_levels = auth_events.get(POWER_LEVELS)
    sender_level = user_power_level(sender, power_levels, creators, rv) if isinstance(sender, str) else 0

    if event_type == "m.room.third_party_invite":  # spec: auth rule 7.1 (6.1 in rooms v6–v11)
        if sender_level >= get_named_level(power_levels, "invite", rv):
            return
        raise AuthError(f"{n.third_party_invite}.1", "the sender's power level is below the invite level")

    # spec: auth rule 8 (7 in rooms v6–v11) — the event type's required power level.
    if get_required_power_level_for_event(power_levels, event, rv) > sender_level:
        raise AuthError(n.required_level, f"the sender's power level is too low to send {event_type}")

    state_key = event.get("state_key")  # spec: auth rule 9 (8 in rooms v6–v11)
    if isinstance(state_key, str) and state_key.startswith("@") and state_key != sender:
        raise AuthError(n.state_key, "a state_key starting with @ must be the sender's user id")

    if event_type == "m.room.power_levels":  # spec: auth rule 10 (9 in rooms v6–v11)
        _check_power_levels(event, power_levels, creators, sender_level, rv, n, memo)
        return

    # spec: rooms/fragments/v1-auth-rules 11; rooms/v3 moved redaction checks out of the auth rules.
    # No RoomVersion flag names this change yet, so the auth-rules variant decides.
    if rv.auth_rules is AuthRulesVariant.V1 and event_type == "m.room.redaction":
        _check_v1_redaction(event, power_levels, sender_level, rv, n)


def _check_create(event: Mapping[str, Any], rv: RoomVersion) -> None:
    """spec: auth rule 1 (m.room.create)."""
    if event.get("prev_events"):  # spec: auth rule 1.1
        raise AuthError("1.1", "m.room.create has prev_events")
    if rv.room_id_from_create_event:
        if "room_id" in event:  # spec: rooms/v12 rule 1.2
            raise AuthError("1.2", "m.room.create carries a room_id")
    elif not server_of(event.get("room_id")) or server_of(event.get("room_id")) != server_of(event.get("sender")):
        # spec: rooms v1–v11 auth rule 1.2
        raise AuthError("1.2", "the room id's server is not the sender's server")
    content = content_of(event)
    version = content.get("room_version")
    # spec: auth rule 1.3
    if "room_version" in content and not (isinstance(version, str) and version in KNOWN_ROOM_VERSIONS):
        raise AuthError("1.3", f"unknown room_version {content['room_version']!r}")
    if not rv.implicit_room_creator and "creator" not in content:
        raise AuthError("1.4", "m.room.create content has no creator")  # spec: rooms v1–v10 rule 1.4
    if rv.privileged_creators and "additional_creators" in content:
        extra = content["additional_creators"]
        if not isinstance(extra, list) or not all(is_valid_user_id(u) for u in extra):
            raise AuthError("1.4", "additional_creators is not a list of user ids")  # spec: rooms/v12 1.4


def _is_room_create_event(
    room_id: object, create: Mapping[str, Any], create_event_id: str | None, rv: RoomVersion
) -> bool:
    if not isinstance(room_id, str) or not room_id.startswith("!") or create.get("type") != "m.room.create":
        return False
    if create_event_id is None:
        try:
            create_event_id = event_id(create, rv)
        except ProtocolError:
            return False
    return create_event_id == "$" + room_id[1:]


def _level_map(value: object, rv: RoomVersion) -> dict[str, int]:
    """The entries of `events`/`notifications`/`users` that are levels in this room version."""
    if not (type(value) is dict or isinstance(value, Mapping)):
        return {}
    out: dict[str, int] = {}
    for key, raw in value.items():
        # Plain ints (the common case, and the only one in rooms v10+) need no parsing.
        level = raw if type(raw) is int else parse_power_level(raw, rv)
        if isinstance(key, str) and level is not None:
            out[key] = level
    return out


class _Levels:
    """One m.room.power_levels event's content as rule 10 compares it, parsed once (see `AuthMemo`).

    `named` holds each named level the content has (`None` where its value is no level); `maps` the
    levels in `events`, `notifications` and `users`; `shape` the (rule, message) of the first rule on
    the content's shape it breaks as the new event of a change (spec: rule 10.1; rooms/v10 rules
    10.1–10.3), or `None`.
    """

    __slots__ = ("maps", "named", "shape", "users_keys")

    def __init__(self, event: Mapping[str, Any], rv: RoomVersion) -> None:
        content = content_of(event)
        self.named: dict[str, int | None] = {
            name: parse_power_level(content[name], rv) for name in NAMED_LEVEL_DEFAULTS if name in content
        }
        self.maps = {name: _level_map(content.get(name), rv) for name in ("events", "notifications", "users")}
        users = content.get("users", {})
        self.users_keys: frozenset[str] = frozenset(users) if isinstance(users, Mapping) else frozenset()
        self.shape = _shape_error(content, users, rv)


def _shape_error(content: Mapping[str, Any], users: object, rv: RoomVersion) -> tuple[str, str] | None:
    """The (rule, message) of the first shape rule the new power levels content breaks, if any."""
    n = rule_numbers(rv)
    if rv.enforce_int_power_levels:
        # spec: rooms/v10 rules 10.1 and 10.2 — no strings, no fractions.
        for name in NAMED_LEVEL_DEFAULTS:
            if name in content and parse_power_level(content[name], rv) is None:
                return n.pl_named_types, f"{name} is not an integer"
        for name in ("events", "notifications"):
            if name in content:
                value = content[name]
                if not isinstance(value, Mapping) or any(parse_power_level(v, rv) is None for v in value.values()):
                    return n.pl_map_types, f"{name} is not an object of integers"
    # spec: rule 10.1 (10.3 in v10+). A missing `users` is taken as an empty one.
    if not isinstance(users, Mapping):
        return n.pl_users, "users is not an object"
    for user_id, raw in users.items():
        if not is_valid_user_id(user_id):
            return n.pl_users, f"users has a key that is not a user id: {user_id!r}"
        # parse_power_level takes exactly what the version allows: integers, v1–v9 strings, v1–v5 floats.
        if type(raw) is not int and parse_power_level(raw, rv) is None:
            return n.pl_users, f"the level of {user_id} is not an integer"
    return None


def _check_power_levels(
    event: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    creators: frozenset[str],
    sender_level: int | float,
    rv: RoomVersion,
    n: RuleNumbers,
    memo: AuthMemo | None,
) -> None:
    """spec: auth rule 10 (rule 9 in rooms v6–v11): m.room.power_levels."""
    new = memo.levels(event) if memo is not None else _Levels(event, rv)
    if new.shape is not None:
        raise AuthError(*new.shape)
    if rv.privileged_creators:
        # spec: rooms/v12 rule 10.4 — creators' power is not written down, so it cannot be taken away.
        listed = sorted(creators & new.users_keys)
        if listed:
            raise AuthError(n.pl_creators, f"users may not list room creators: {listed}")

    if old is None:
        return  # spec: "If there is no previous m.room.power_levels event in the room, allow."
    current = memo.levels(old) if memo is not None else _Levels(old, rv)

    for name in NAMED_LEVEL_DEFAULTS:
        before, after = current.named.get(name), new.named.get(name)
        if before == after:
            continue
        if before is not None and before > sender_level:
            raise AuthError(f"{n.pl_named_change}.1", f"{name} is currently above the sender's level")
        if after is not None and after > sender_level:
            raise AuthError(f"{n.pl_named_change}.2", f"new {name} is above the sender's level")

    # spec: rooms/v6 — `notifications` is checked like `events`.
    map_names = ("events", "notifications") if rv.limit_notifications_power_levels else ("events",)
    for name in map_names:
        before_map, after_map = current.maps[name], new.maps[name]
        for key, level in before_map.items():
            if after_map.get(key) != level and level > sender_level:
                raise AuthError(n.pl_map_current, f"{name}[{key!r}] is currently above the sender's level")
    for name in map_names:
        before_map, after_map = current.maps[name], new.maps[name]
        for key, level in after_map.items():
            if before_map.get(key) != level and level > sender_level:
                raise AuthError(n.pl_map_new, f"new {name}[{key!r}] is above the sender's level")

    old_users, new_users = current.maps["users"], new.maps["users"]
    sender = event.get("sender")
    for user_id, level in old_users.items():
        if user_id != sender and new_users.get(user_id) != level and level >= sender_level:
            raise AuthError(n.pl_users_current, f"{user_id} has a level at or above the sender's")
    for user_id, level in new_users.items():
        if old_users.get(user_id) != level and level > sender_level:
            raise AuthError(n.pl_users_new, f"{user_id} would get a level above the sender's")


def _check_v1_redaction(
    event: Mapping[str, Any],
    power_levels: Mapping[str, Any] | None,
    sender_level: int | float,
    rv: RoomVersion,
    n: RuleNumbers,
) -> None:
    """spec: rooms/fragments/v1-auth-rules rule 11 (rooms v1–v2; later versions check on redaction)."""
    if sender_level >= get_named_level(power_levels, "redact", rv):
        return
    redacts = content_of(event).get("redacts") if rv.redacts_in_content else event.get("redacts")
    own_domain = server_of(event.get("event_id"))
    if own_domain is not None and server_of(redacts) == own_domain:
        return
    raise AuthError(f"{n.redaction}.3", "redacting another server's event needs the redact level")
