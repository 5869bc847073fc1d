"""Who lets a user into a restricted room: the allow conditions and the member who authorises.

spec: client-server-api "Restricted rooms" — a user who is not invited (or joined) may join a room
whose join rule is `restricted` (rooms v8+) or `knock_restricted` (v10+) only when they meet one of
the `allow` conditions; the only condition is `m.room_membership`: joined to the named room. Rules
that make the join valid (rooms/v8 auth rules, join rule 5 and member rule 2.1): the join names, in
`join_authorised_via_users_server`, a joined member who may invite, and carries a signature of that
member's server. This server can only name its own users and only sign for them.

spec: server-server-api "Restricted rooms" — for a user of another server (make_join, send_join):
- meets a condition we can check (a room we are in where the user is joined): allowed;
- none met, and some allowed room is one we are not in (we cannot know): 400
  `M_UNABLE_TO_AUTHORISE_JOIN`, the joining server tries another resident;
- none met and we are in every allowed room (or there are no valid conditions): 403 `M_FORBIDDEN`;
- allowed, but none of our joined users may invite: 400 `M_UNABLE_TO_GRANT_JOIN`.
A local user is in an allowed room only if this server is too, so the first is not theirs; the
last means that another server of the room may let them in (homeserver/rooms/membership.py).
"""

from __future__ import annotations

from homeserver.errors import MatrixError, forbidden
from homeserver.protocol.events import content_of
from homeserver.protocol.power_levels import get_named_level, get_user_power_level
from homeserver.rooms.queries import RoomQueries

UNABLE_TO_AUTHORISE_JOIN = "M_UNABLE_TO_AUTHORISE_JOIN"
UNABLE_TO_GRANT_JOIN = "M_UNABLE_TO_GRANT_JOIN"


def is_restricted(queries: RoomQueries, room: int) -> bool:
    """Whether the room's join rule is a restricted one its version knows."""
    rule = content_of(queries.current_state_event(room, "m.room.join_rules")).get("join_rule")
    rv = queries.room_version(room)
    return (rule == "restricted" and rv.restricted_join_rule) or (
        rule == "knock_restricted" and rv.knock_restricted_join_rule
    )


def join_authoriser(queries: RoomQueries, room: int, user_id: str) -> str | None:
    """The local member to name in `join_authorised_via_users_server` for `user_id` joining `room`
    now; None when none is needed (the room is not restricted, or the user is invited or joined
    already). Raises `MatrixError` as the module docstring says when the user may not join."""
    membership = queries.current_membership(user_id, room)
    if not is_restricted(queries, room) or membership in ("join", "invite"):
        return None
    if membership == "ban":  # spec: rooms/v8 join rule 3 — no condition lets a banned user in
        raise forbidden("You are banned from this room")
    allow = content_of(queries.current_state_event(room, "m.room.join_rules")).get("allow")
    unknowable = False  # an allowed room this server is not in: the user may be joined there
    for condition in allow if isinstance(allow, list) else []:
        if not isinstance(condition, dict) or condition.get("type") != "m.room_membership":
            continue  # spec: conditions that do not match the schema are failed
        other_id = condition.get("room_id")
        if not isinstance(other_id, str):
            continue
        other = queries.known_room(other_id)
        if other is None or queries.server_name not in queries.servers_in_room(other):
            unknowable = True
            continue
        if queries.is_joined(user_id, other):
            return _inviter(queries, room)
    if unknowable and not queries.is_local(user_id):
        raise MatrixError(
            400, UNABLE_TO_AUTHORISE_JOIN, "this server cannot check the room's join conditions: try another server"
        )
    raise forbidden("You are not invited to this room and meet none of its join conditions")


def _inviter(queries: RoomQueries, room: int) -> str:
    """Our joined member with the most power who may invite (ties: the smallest id)."""
    rv = queries.room_version(room)
    power_levels = queries.current_state_event(room, "m.room.power_levels")
    create = queries.current_state_event(room, "m.room.create")
    needed = get_named_level(power_levels, "invite", rv)
    members = queries.local_joined_members(room)
    ranked = sorted(
        ((get_user_power_level(m, power_levels, create, rv), m) for m in members), key=lambda p: (-p[0], p[1])
    )
    if ranked and ranked[0][0] >= needed:
        return ranked[0][1]
    raise MatrixError(400, UNABLE_TO_GRANT_JOIN, "no member of this server may invite to this room: try another server")
