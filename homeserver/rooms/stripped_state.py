"""What an invite or a knock shows of a room: its stripped state.

spec: client-server-api "Stripped state" — a potential joiner sees a simplified copy (only `type`,
`state_key`, `sender` and `content`) of "some or all of" m.room.create, m.room.name, m.room.avatar,
m.room.topic, m.room.join_rules, m.room.canonical_alias and m.room.encryption; since v1.16 (MSC4311)
m.room.create is required in `invite_state`/`knock_state` on /sync and in the member event's
`unsigned.invite_room_state`/`knock_room_state`. "The server might include events not described
here as well": for an invite this server adds the inviter's own m.room.member event (MSC4319, as
Synapse does), which clients name a DM invite after (Element shows "Empty room" without it).
The invitee's (or knocker's) own member event comes last.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

MEMBER = "m.room.member"

# spec: client-server-api "Stripped state", the recommended events
STRIPPED_STATE_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.join_rules",
    "m.room.canonical_alias",
    "m.room.encryption",
)

# (event type, state key) -> the current state event, or None
StateLookup = Callable[[str, str], dict[str, Any] | None]


def stripped_state(event: dict[str, Any]) -> dict[str, Any]:
    """spec: "Stripped state events can only have the sender, type, state_key and content properties"."""
    return {k: event[k] for k in ("content", "sender", "state_key", "type") if k in event}


def room_stripped_state(state: StateLookup, member_event: dict[str, Any]) -> list[dict[str, Any]]:
    """The stripped state shown with `member_event` (an invite or a knock), from the room's `state`."""
    events = [stripped_state(found) for t in STRIPPED_STATE_TYPES if (found := state(t, "")) is not None]
    inviter = inviter_member(state, member_event)
    if inviter is not None:
        events.append(stripped_state(inviter))
    events.append(stripped_state(member_event))
    return events


def inviter_member(state: StateLookup, member_event: dict[str, Any]) -> dict[str, Any] | None:
    """The member event of whoever sent an invite to someone else; None for knocks and self-invites."""
    sender = member_event.get("sender")
    if not isinstance(sender, str) or sender == member_event.get("state_key"):
        return None
    content = member_event.get("content")
    if not isinstance(content, dict) or content.get("membership") != "invite":
        return None
    return state(MEMBER, sender)


def without_member(events: list[dict[str, Any]], user_id: str) -> list[dict[str, Any]]:
    """The stripped state minus `user_id`'s own member event: the room as `unsigned.invite_room_state`
    shows it on that member event."""
    return [e for e in events if not (e.get("type") == MEMBER and e.get("state_key") == user_id)]
