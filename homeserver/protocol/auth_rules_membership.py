"""The authorization rules for m.room.member events.

spec: auth rule 5 of rooms/fragments/v1-auth-rules and v3-auth-rules (rooms v1–v5), rule 4 of rooms/v6,
rooms/v7 (knock), rooms/fragments/v8-auth-rules (restricted joins), rooms/v10 (knock_restricted),
rooms/v11 (creator is the create sender), and rule 5 of rooms/v12.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from homeserver.protocol.auth_rules_common import (
    POWER_LEVELS,
    AuthEventsMap,
    RuleNumbers,
    is_valid_user_id,
    join_rule_of,
    membership_of,
    server_of,
)
from homeserver.protocol.errors import AuthError, ProtocolError
from homeserver.protocol.event_ids import event_id
from homeserver.protocol.events import content_of
from homeserver.protocol.power_levels import get_named_level, user_power_level
from homeserver.protocol.room_versions import RoomVersion
from homeserver.protocol.signing import verify_signed_by_key


def _only_prev_event_is(event: Mapping[str, Any], wanted_id: Callable[[], str | None]) -> bool:
    prev = event.get("prev_events")
    if not isinstance(prev, list) or len(prev) != 1:
        return False
    ref = prev[0]
    # Rooms v1–v2 reference events as [event_id, hashes]; later versions by id alone.
    prev_id = ref[0] if isinstance(ref, list) and ref else ref
    return isinstance(prev_id, str) and prev_id == wanted_id()


def _create_event_id(
    event: Mapping[str, Any], create: Mapping[str, Any], given: str | None, rv: RoomVersion
) -> str | None:
    if given is not None:
        return given
    if rv.room_id_from_create_event:
        room_id = event.get("room_id")  # rule 2 already tied it to the create event
        return "$" + room_id[1:] if isinstance(room_id, str) else None
    try:
        return event_id(create, rv)
    except ProtocolError:
        return None


def check_member(
    event: Mapping[str, Any],
    auth_events: AuthEventsMap,
    create: Mapping[str, Any],
    create_event_id: str | None,
    rv: RoomVersion,
    n: RuleNumbers,
    creators: frozenset[str],
) -> None:
    """spec: auth rule 5 (rule 4 in rooms v6–v11): m.room.member.

    `create_event_id` is the create event's id if the caller knows it (else computed when needed);
    `creators` the room's creators (`power_levels.room_creators` of `create`).
    """
    m = n.member
    content = content_of(event)
    target = event.get("state_key")
    if not isinstance(target, str) or "membership" not in content:  # spec: member rule x.1
        raise AuthError(f"{m}.1", "m.room.member needs a state_key and content.membership")
    # spec: rooms/v8 rule 4.2.1. The signature itself is verified with the event's other signatures
    # (event_signing.required_signers names this server); here it must at least be present.
    if (
        rv.restricted_join_rule
        and "join_authorised_via_users_server" in content
        and not _has_signature_from_user_server(event, content["join_authorised_via_users_server"])
    ):
        raise AuthError(f"{m}.2.1", "not signed by the server of join_authorised_via_users_server")

    membership = content["membership"]
    sender = event.get("sender")
    sender_membership = membership_of(auth_events, sender)
    target_membership = membership_of(auth_events, target)
    power_levels = auth_events.get(POWER_LEVELS)

    def level(user_id: object) -> int | float:
        return user_power_level(user_id, power_levels, creators, rv) if isinstance(user_id, str) else 0

    if membership == "join":
        _check_join(event, auth_events, create, create_event_id, rv, n, sender_membership, level)
        return

    if membership == "invite":  # spec: member rule 3 (4 from rooms/v8)
        i = n.invite
        if "third_party_invite" in content:
            _check_third_party_invite(event, auth_events, target_membership, rv, f"{i}.1")
            return
        if sender_membership != "join":
            raise AuthError(f"{i}.2", "the inviter is not joined to the room")
        if target_membership in ("join", "ban"):
            raise AuthError(f"{i}.3", f"the invitee's membership is {target_membership}")
        if level(sender) >= get_named_level(power_levels, "invite", rv):
            return
        raise AuthError(f"{i}.5", "the inviter's power level is below the invite level")

    if membership == "leave":  # spec: member rule 4 (5 from rooms/v8)
        lv = n.leave
        if sender == target:
            # spec: rooms/v7 — a knock may be withdrawn too.
            leavable = ("invite", "join", "knock") if rv.knock_join_rule else ("invite", "join")
            if sender_membership in leavable:
                return
            raise AuthError(f"{lv}.1", f"cannot leave from membership {sender_membership}")
        if sender_membership != "join":
            raise AuthError(f"{lv}.2", "the sender is not joined to the room")
        sender_level = level(sender)
        if target_membership == "ban" and sender_level < get_named_level(power_levels, "ban", rv):
            raise AuthError(f"{lv}.3", "unbanning needs the ban level")
        if sender_level >= get_named_level(power_levels, "kick", rv) and level(target) < sender_level:
            return
        raise AuthError(f"{lv}.5", "the sender may not kick this user")

    if membership == "ban":  # spec: member rule 5 (6 from rooms/v8)
        b = n.ban
        if sender_membership != "join":
            raise AuthError(f"{b}.1", "the sender is not joined to the room")
        sender_level = level(sender)
        if sender_level >= get_named_level(power_levels, "ban", rv) and level(target) < sender_level:
            return
        raise AuthError(f"{b}.3", "the sender may not ban this user")

    if membership == "knock" and rv.knock_join_rule:  # spec: rooms/v7 member rule 6 (7 from rooms/v8)
        k = n.knock
        knockable = ("knock", "knock_restricted") if rv.knock_restricted_join_rule else ("knock",)
        if join_rule_of(auth_events) not in knockable:
            raise AuthError(f"{k}.1", "the room does not allow knocking")
        if sender != target:
            raise AuthError(f"{k}.2", "a knock must be sent by the knocking user")
        if sender_membership not in ("ban", "invite", "join"):
            return
        raise AuthError(f"{k}.4", f"cannot knock from membership {sender_membership}")

    raise AuthError(n.unknown_membership, f"unknown membership {membership!r}")


def _has_signature_from_user_server(event: Mapping[str, Any], user_id: object) -> bool:
    if not is_valid_user_id(user_id):
        return False
    signatures = event.get("signatures")
    server_sigs = signatures.get(server_of(user_id)) if isinstance(signatures, Mapping) else None
    return isinstance(server_sigs, Mapping) and bool(server_sigs)


def _check_join(
    event: Mapping[str, Any],
    auth_events: AuthEventsMap,
    create: Mapping[str, Any],
    create_event_id: str | None,
    rv: RoomVersion,
    n: RuleNumbers,
    sender_membership: str | None,
    level: Callable[[object], int | float],
) -> None:
    """spec: member rule "If membership is join" (5.2 in v1–v5, 4.2 in v6–v7, 4.3 in v8–v11, 5.3 in v12)."""
    j = n.join
    target = event.get("state_key")
    # spec: rooms/v11 — the creator is the create event's sender; before, content.creator.
    first_member = create.get("sender") if rv.implicit_room_creator else content_of(create).get("creator")
    # spec: join rule 1 — the creator's join straight after the create event.
    if target == first_member and _only_prev_event_is(
        event, lambda: _create_event_id(event, create, create_event_id, rv)
    ):
        return
    if event.get("sender") != target:
        raise AuthError(f"{j}.2", "a join must be sent by the joining user")
    if sender_membership == "ban":
        raise AuthError(f"{j}.3", "the user is banned")
    join_rule = join_rule_of(auth_events)
    restricted = (rv.restricted_join_rule and join_rule == "restricted") or (
        rv.knock_restricted_join_rule and join_rule == "knock_restricted"
    )
    # spec: join rule 4 (knock from rooms/v7)
    if join_rule == "invite" or (rv.knock_join_rule and join_rule == "knock"):
        if sender_membership in ("invite", "join"):
            return
    elif restricted:  # spec: rooms/v8 join rule 5 (knock_restricted from rooms/v10)
        if sender_membership in ("join", "invite"):
            return
        via = content_of(event).get("join_authorised_via_users_server")
        power_levels = auth_events.get(POWER_LEVELS)
        if (
            not isinstance(via, str)
            or membership_of(auth_events, via) != "join"
            or level(via) < get_named_level(power_levels, "invite", rv)
        ):
            raise AuthError(f"{j}.5.2", "join_authorised_via_users_server is not a joined user who may invite")
        return
    elif join_rule == "public":  # spec: join rule 5 (6 from rooms/v8)
        return
    raise AuthError(n.join_otherwise, f"join rule {join_rule!r} does not let this user join")


def _check_third_party_invite(
    event: Mapping[str, Any],
    auth_events: AuthEventsMap,
    target_membership: str | None,
    rv: RoomVersion,
    r: str,
) -> None:
    """spec: member rule "If content has a third_party_invite property" (x.3.1 / x.4.1)."""
    if target_membership == "ban":
        raise AuthError(f"{r}.1", "the invitee is banned")
    tpi = content_of(event)["third_party_invite"]
    signed = tpi.get("signed") if isinstance(tpi, Mapping) else None
    if not isinstance(signed, Mapping):
        raise AuthError(f"{r}.2", "third_party_invite has no signed object")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError(f"{r}.3", "third_party_invite.signed needs mxid and token")
    if mxid != event.get("state_key"):
        raise AuthError(f"{r}.4", "third_party_invite.signed.mxid is not the invitee")
    invite = auth_events.get(("m.room.third_party_invite", token))
    if invite is None:
        raise AuthError(f"{r}.5", "no m.room.third_party_invite with this token")
    if invite.get("sender") != event.get("sender"):
        raise AuthError(f"{r}.6", "the sender did not send the m.room.third_party_invite")
    for public_key in _third_party_public_keys(invite):
        if verify_signed_by_key(signed, public_key, strict=rv.strict_canonical_json):
            return
    raise AuthError(f"{r}.8", "no signature in signed matches a key of the m.room.third_party_invite")


def _third_party_public_keys(invite: Mapping[str, Any]) -> list[str]:
    """spec: rule x.1.7 — `public_key`, then each `public_keys[].public_key`."""
    content = content_of(invite)
    keys: list[str] = []
    if isinstance(content.get("public_key"), str):
        keys.append(content["public_key"])
    listed = content.get("public_keys")
    if isinstance(listed, list):
        for entry in listed:
            key = entry.get("public_key") if isinstance(entry, Mapping) else None
            if isinstance(key, str):
                keys.append(key)
    return keys
