"""Power levels as the authorization rules read them: values, defaults, room creators.

spec: client-server-api "Permissions" and `m.room.power_levels`; server-server-api "Definitions"
(required power level, invite/kick/ban/redact levels); rooms/fragments/v1-stringy-power-levels
(rooms v1–v9 accept integer strings), v1-floaty-power-levels (rooms v1–v5 accept floats, truncated);
rooms/v10 (integers only); rooms/v11 (the creator is the create event's sender); rooms/v12 (creators
are the create sender plus `additional_creators`, with infinite power).

Every function takes the `m.room.power_levels` event (or `None` when the room has none), the
`m.room.create` event (canonical dicts or `Event` views) and the room version, so callers outside
the auth rules — state resolution sorts by sender power level — read levels exactly as the auth
rules do. Levels are ints, except that room creators in rooms with privileged creators (v12) have
`CREATOR_POWER_LEVEL`, positive infinity, which compares above every integer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from homeserver.protocol.events import Event, content_of
from homeserver.protocol.room_versions import RoomVersion, get_room_version

# the power levels and create events: canonical dicts, or `Event` views over them
AnEvent = Mapping[str, Any] | Event

# spec: rooms/v12 — "The power level of room creators is infinitely high."
CREATOR_POWER_LEVEL = math.inf

# spec: server-server-api "Definitions" and m.room.power_levels — the level of each named property
# when the power levels event leaves it out (state_default is 50 even with no power levels event).
NAMED_LEVEL_DEFAULTS: Mapping[str, int] = {
    "ban": 50,
    "kick": 50,
    "redact": 50,
    "invite": 0,
    "events_default": 0,
    "state_default": 50,
    "users_default": 0,
}
# spec: m.room.power_levels `notifications.room` defaults to 50.
NOTIFICATION_LEVEL_DEFAULTS: Mapping[str, int] = {"room": 50}
# spec: m.room.power_levels — with no power levels event the room creator has 100, everyone else 0.
CREATOR_DEFAULT_LEVEL = 100

# spec: v1-stringy-power-levels — optional ASCII whitespace, one optional sign, base-10 digits.
# Written out rather than using int(), which would also take "1_000" and non-ASCII digits.
_INT_STRING = re.compile(r"[ \t\n\r\f\v]*[+-]?[0-9]+[ \t\n\r\f\v]*", re.ASCII)


def parse_power_level(value: object, room_version: str | RoomVersion) -> int | None:
    """The integer a power-level value stands for in this room version, or `None` if it is not one.

    spec: rooms/v10 — only integers (a JSON number without fraction; `true` is not one).
    spec: v1-stringy-power-levels — rooms v1–v9 also take strings such as `" +050 "`.
    spec: v1-floaty-power-levels — rooms v1–v5 (no canonical JSON enforcement) also take floats,
    truncated towards zero; infinities and NaN are never levels.
    """
    if type(value) is int:  # the common case, and the only one in rooms v10+
        return value
    rv = room_version if type(room_version) is RoomVersion else get_room_version(room_version)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        # A parser reads `5e1` as a float; canonical JSON calls it the integer 50 in every version.
        if value.is_integer() or not rv.strict_canonical_json:
            return math.trunc(value)
        return None
    if isinstance(value, str) and not rv.enforce_int_power_levels and _INT_STRING.fullmatch(value):
        return int(value.strip(" \t\n\r\f\v"))
    return None


def room_creators(create_event: AnEvent | None, room_version: str | RoomVersion) -> frozenset[str]:
    """The users the room version treats as the room's creators.

    spec: rooms/v1–v10 — `content.creator` of the create event; rooms/v11 — the create event's `sender`;
    rooms/v12 — the `sender` plus every string in `content.additional_creators`.
    """
    rv = room_version if type(room_version) is RoomVersion else get_room_version(room_version)
    if create_event is None:
        return frozenset()
    if not rv.implicit_room_creator:
        creator = content_of(create_event).get("creator")
        return frozenset({creator}) if isinstance(creator, str) else frozenset()
    found: set[str] = set()
    sender = create_event.get("sender")
    if isinstance(sender, str):
        found.add(sender)
    if rv.privileged_creators:
        extra = content_of(create_event).get("additional_creators")
        if isinstance(extra, list):
            found.update(u for u in extra if isinstance(u, str))
    return frozenset(found)


def get_user_power_level(
    user_id: str,
    power_levels_event: AnEvent | None,
    create_event: AnEvent | None,
    room_version: str | RoomVersion,
) -> int | float:
    """The power level of `user_id`: an int, or `CREATOR_POWER_LEVEL` (infinity) for a v12 creator.

    spec: rooms/v12 — creators have infinite power whatever the power levels event says.
    spec: m.room.power_levels — `users[user_id]`, else `users_default` (default 0); with no power
    levels event, the creator has 100 and everyone else 0.
    """
    rv = room_version if type(room_version) is RoomVersion else get_room_version(room_version)
    return user_power_level(user_id, power_levels_event, room_creators(create_event, rv), rv)


def user_power_level(
    user_id: str,
    power_levels_event: AnEvent | None,
    creators: frozenset[str],
    room_version: str | RoomVersion,
) -> int | float:
    """`get_user_power_level` with the room's creators already known (`room_creators`)."""
    rv = room_version if type(room_version) is RoomVersion else get_room_version(room_version)
    if rv.privileged_creators and user_id in creators:
        return CREATOR_POWER_LEVEL
    if power_levels_event is None:
        return CREATOR_DEFAULT_LEVEL if user_id in creators else 0
    content = content_of(power_levels_event)
    users = content.get("users")
    if (type(users) is dict or isinstance(users, Mapping)) and user_id in users:
        level = parse_power_level(users[user_id], rv)
        if level is not None:
            return level
    level = parse_power_level(content.get("users_default"), rv)
    return NAMED_LEVEL_DEFAULTS["users_default"] if level is None else level


def get_named_level(power_levels_event: AnEvent | None, name: str, room_version: str | RoomVersion) -> int:
    """A top-level level of the power levels event (`ban`, `kick`, `redact`, `invite`,
    `events_default`, `state_default`, `users_default`), or its spec default when absent.

    A value that is not a level in this room version counts as absent (only possible in rooms v1–v9,
    where the auth rules do not validate these properties).
    """
    if name not in NAMED_LEVEL_DEFAULTS:
        raise ValueError(f"{name!r} is not a named power level")
    level = parse_power_level(content_of(power_levels_event).get(name), room_version)
    return NAMED_LEVEL_DEFAULTS[name] if level is None else level


def get_required_power_level(
    power_levels_event: AnEvent | None,
    event_type: str,
    is_state_event: bool,
    room_version: str | RoomVersion,
) -> int:
    """The *required power level* to send an event of `event_type`.

    spec: server-server-api "Definitions" — `events[event_type]` if listed, else `state_default` for
    state events and `events_default` for others.
    """
    events = content_of(power_levels_event).get("events")
    if (type(events) is dict or isinstance(events, Mapping)) and event_type in events:
        level = parse_power_level(events[event_type], room_version)
        if level is not None:
            return level
    return get_named_level(power_levels_event, "state_default" if is_state_event else "events_default", room_version)


def get_required_power_level_for_event(
    power_levels_event: AnEvent | None, event: Mapping[str, Any], room_version: str | RoomVersion
) -> int:
    """`get_required_power_level` for an event: its `type`, and state-ness from having a `state_key`."""
    event_type = event.get("type")
    return get_required_power_level(
        power_levels_event, event_type if isinstance(event_type, str) else "", "state_key" in event, room_version
    )


def get_notification_level(power_levels_event: AnEvent | None, key: str, room_version: str | RoomVersion) -> int:
    """The level needed to trigger notification `key` (e.g. `room` for @room; default 50)."""
    notifications = content_of(power_levels_event).get("notifications")
    if isinstance(notifications, Mapping) and key in notifications:
        level = parse_power_level(notifications[key], room_version)
        if level is not None:
            return level
    return NOTIFICATION_LEVEL_DEFAULTS.get(key, 50)
