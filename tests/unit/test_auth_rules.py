"""Authorization rules: create, auth events, federation, aliases, the generic rules, v1 redactions, and
the auth events selection. Member rules are in test_auth_rules_membership.py, power levels in
test_auth_rules_power_levels.py; both use the `Room` builder defined here.

Expected rule numbers are written out per room-version family, as the spec prints them.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import pytest

from homeserver.protocol.auth_rules import (
    AuthMemo,
    auth_events_map,
    auth_types_for_event,
    check_auth,
    check_auth_events_field,
)
from homeserver.protocol.errors import AuthError
from homeserver.protocol.event_ids import event_id, room_id_from_create_event
from homeserver.protocol.room_versions import get_room_version

ALICE = "@alice:a.example"  # creates every room
BOB = "@bob:b.example"
CAROL = "@carol:c.example"
DAVE = "@dave:d.example"
ALL = [str(n) for n in range(1, 13)]


def versions(lo: int, hi: int) -> list[str]:
    return [str(n) for n in range(lo, hi + 1)]


def expect(**ranges: str) -> list[Any]:
    """`expect(v1_5="5.1", v6_11="4.1", v12="5.1")` -> pytest params `(version, rule)` for each version."""
    params = []
    for key, rule in ranges.items():
        lo, _, hi = key[1:].partition("_")
        for v in range(int(lo), int(hi or lo) + 1):
            params.append(pytest.param(str(v), rule, id=f"v{v}"))
    return params


def server(user_id: str) -> str:
    return user_id.split(":", 1)[1]


class Room:
    """A room's state for one room version, and events built against it."""

    def __init__(self, version: str, *, create_content: Mapping[str, Any] | None = None) -> None:
        self.version = version
        self.rv = get_room_version(version)
        self._serial = 0
        content: dict[str, Any] = {} if self.rv.implicit_room_creator else {"creator": ALICE}
        content.update(create_content or {})
        create: dict[str, Any] = {
            "type": "m.room.create",
            "state_key": "",
            "sender": ALICE,
            "content": content,
            "prev_events": [],
            "auth_events": [],
            "depth": 1,
            "origin_server_ts": 0,
            "hashes": {"sha256": "aGFzaA"},
            "signatures": {"a.example": {"ed25519:1": "c2ln"}},
        }
        if self.rv.event_id_in_event:
            create["event_id"] = "$create:a.example"
        if self.rv.room_id_from_create_event:
            self.room_id = room_id_from_create_event(create, version)
        else:
            self.room_id = "!room:a.example"
            create["room_id"] = self.room_id
        self.create = create
        self.create_id = event_id(create, version)
        self.state: dict[tuple[str, str], dict[str, Any]] = {("m.room.create", ""): create}

    def ref(self, eid: str) -> Any:
        """A prev_events entry: `[id, hashes]` in rooms v1–v2, the bare id later."""
        return [eid, {"sha256": "aGFzaA"}] if self.rv.event_id_in_event else eid

    def event(
        self, event_type: str, sender: str, content: dict[str, Any], state_key: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        self._serial += 1
        ev: dict[str, Any] = {
            "type": event_type,
            "sender": sender,
            "content": content,
            "room_id": self.room_id,
            "prev_events": [self.ref(f"$prev{self._serial}:a.example")],
            "auth_events": [],
            "depth": self._serial + 1,
            "origin_server_ts": self._serial,
            "hashes": {"sha256": "aGFzaA"},
            "signatures": {server(sender): {"ed25519:1": "c2ln"}},
        }
        if state_key is not None:
            ev["state_key"] = state_key
        if self.rv.event_id_in_event:
            ev["event_id"] = f"$e{self._serial}:{server(sender)}"
        ev.update(extra)
        return ev

    def set(self, ev: dict[str, Any]) -> dict[str, Any]:
        self.state[(ev["type"], ev["state_key"])] = ev
        return ev

    def member(self, user: str, membership: str, sender: str | None = None, **content: Any) -> dict[str, Any]:
        return self.set(self.event("m.room.member", sender or user, {"membership": membership, **content}, user))

    def power_levels(self, content: dict[str, Any]) -> dict[str, Any]:
        return self.set(self.event("m.room.power_levels", ALICE, content, ""))

    def join_rule(self, rule: str, **content: Any) -> dict[str, Any]:
        return self.set(self.event("m.room.join_rules", ALICE, {"join_rule": rule, **content}, ""))

    def check(self, ev: Mapping[str, Any]) -> None:
        check_auth(ev, self.state, self.version)
        assert self._memo_outcomes(ev) == [None, None]

    def rule(self, ev: Mapping[str, Any]) -> str:
        """The rule that rejects `ev` (fails the test if it is allowed)."""
        with pytest.raises(AuthError) as info:
            check_auth(ev, self.state, self.version)
        assert self._memo_outcomes(ev) == [info.value.rule, info.value.rule]
        return info.value.rule

    def _memo_outcomes(self, ev: Mapping[str, Any]) -> list[str | None]:
        """Every check again with an `AuthMemo`, twice (the second reads what the first parsed): the
        memo must never change an outcome. A fresh memo each time, since tests edit state in place."""
        memo = AuthMemo(self.rv)
        outcomes: list[str | None] = []
        for _ in range(2):
            try:
                check_auth(ev, self.state, self.version, memo=memo)
                outcomes.append(None)
            except AuthError as e:
                outcomes.append(e.rule)
        return outcomes


def standard_room(version: str, join_rule: str = "invite", users: Mapping[str, Any] | None = None) -> Room:
    """Alice created and joined; she has 100 (infinite in v12, where she may not be listed)."""
    room = Room(version)
    room.member(ALICE, "join")
    listed: dict[str, Any] = {} if room.rv.privileged_creators else {ALICE: 100}
    listed.update(users or {})
    room.power_levels({"users": listed})
    room.join_rule(join_rule)
    return room


def message(room: Room, sender: str, **extra: Any) -> dict[str, Any]:
    return room.event("m.room.message", sender, {"msgtype": "m.text", "body": "hi"}, **extra)


# --- rule 1: m.room.create ------------------------------------------------------------------------


def create_event(version: str, **changes: Any) -> dict[str, Any]:
    ev = copy.deepcopy(Room(version).create)
    ev.update(changes)
    return ev


@pytest.mark.parametrize("version", ALL)
def test_create_allowed(version: str) -> None:
    check_auth(create_event(version), {}, version)


@pytest.mark.parametrize("version", ALL)
def test_create_with_prev_events_is_rejected_1_1(version: str) -> None:
    with pytest.raises(AuthError) as info:
        check_auth(create_event(version, prev_events=["$x"]), {}, version)
    assert info.value.rule == "1.1"


@pytest.mark.parametrize("version", versions(1, 11))
def test_create_room_id_domain_must_match_sender_1_2(version: str) -> None:
    with pytest.raises(AuthError) as info:
        check_auth(create_event(version, room_id="!room:elsewhere.example"), {}, version)
    assert info.value.rule == "1.2"
    check_auth(create_event(version, room_id="!other:a.example"), {}, version)


def test_v12_create_must_not_have_room_id_1_2() -> None:
    with pytest.raises(AuthError) as info:
        check_auth(create_event("12", room_id="!room:a.example"), {}, "12")
    assert info.value.rule == "1.2"


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("bad", ["13", "foo", 11, None])
def test_create_unknown_room_version_1_3(version: str, bad: object) -> None:
    ev = create_event(version)
    ev["content"]["room_version"] = bad
    with pytest.raises(AuthError) as info:
        check_auth(ev, {}, version)
    assert info.value.rule == "1.3"
    ev["content"]["room_version"] = version
    check_auth(ev, {}, version)


@pytest.mark.parametrize("version", versions(1, 10))
def test_create_needs_creator_until_v10_1_4(version: str) -> None:
    ev = create_event(version)
    del ev["content"]["creator"]
    with pytest.raises(AuthError) as info:
        check_auth(ev, {}, version)
    assert info.value.rule == "1.4"


@pytest.mark.parametrize("version", ["11", "12"])
def test_create_without_creator_from_v11(version: str) -> None:
    ev = create_event(version)
    assert "creator" not in ev["content"]
    check_auth(ev, {}, version)


@pytest.mark.parametrize("bad", ["@bob:b.example", [1], ["bob"], ["@bob:bad_server!"], [BOB, None]])
def test_v12_additional_creators_must_be_user_ids_1_4(bad: object) -> None:
    ev = create_event("12")
    ev["content"]["additional_creators"] = bad
    with pytest.raises(AuthError) as info:
        check_auth(ev, {}, "12")
    assert info.value.rule == "1.4"
    ev["content"]["additional_creators"] = [BOB, "@historical Üser:c.example"]
    check_auth(ev, {}, "12")


def test_additional_creators_not_checked_before_v12() -> None:
    ev = create_event("11")
    ev["content"]["additional_creators"] = "junk"
    check_auth(ev, {}, "11")


# --- rule 2 of v12: the room id is the create event's id ------------------------------------------


def test_v12_room_id_must_be_create_event_id_2() -> None:
    room = standard_room("12")
    room.member(BOB, "join")
    good = message(room, BOB)
    room.check(good)
    assert room.rule({**good, "room_id": "!" + "A" * 43}) == "2"
    # A create event that is not this room's (different content, so another id).
    other = Room("12", create_content={"m.federate": True})
    room.state[("m.room.create", "")] = other.create
    assert room.rule(good) == "2"
    # The create event missing from the map.
    del room.state[("m.room.create", "")]
    assert room.rule(good) == "2"


# --- rule 2 (3 in v12): the auth events --------------------------------------------------------------


def bob_message_with_auth(version: str) -> tuple[Room, dict[str, Any], list[dict[str, Any]]]:
    room = standard_room(version)
    room.member(BOB, "join")
    ev = message(room, BOB)
    entries = [room.state[k] for k in auth_types_for_event(ev, version)]
    return room, ev, entries


AUTH_EVENTS = expect(v1_11="2", v12="3")


@pytest.mark.parametrize(("version", "n"), AUTH_EVENTS)
def test_auth_events_field_allowed(version: str, n: str) -> None:
    room, ev, entries = bob_message_with_auth(version)
    check_auth_events_field(ev, entries, version, is_rejected=lambda e: False)
    check_auth(ev, auth_events_map(entries) | {("m.room.create", ""): room.create}, version)


@pytest.mark.parametrize(("version", "n"), AUTH_EVENTS)
def test_auth_events_duplicates_x_1(version: str, n: str) -> None:
    room, ev, entries = bob_message_with_auth(version)
    other_pl = room.event("m.room.power_levels", ALICE, {"users": {}}, "")
    with pytest.raises(AuthError) as info:
        check_auth_events_field(ev, [*entries, other_pl], version)
    assert info.value.rule == f"{n}.1"


@pytest.mark.parametrize(("version", "n"), AUTH_EVENTS)
def test_auth_events_not_selected_x_2(version: str, n: str) -> None:
    room, ev, entries = bob_message_with_auth(version)
    # A message's auth events never include the join rules.
    with pytest.raises(AuthError) as info:
        check_auth_events_field(ev, [*entries, room.state[("m.room.join_rules", "")]], version)
    assert info.value.rule == f"{n}.2"
    # Nor a non-state event.
    with pytest.raises(AuthError) as info:
        check_auth_events_field(ev, [*entries, message(room, ALICE)], version)
    assert info.value.rule == f"{n}.2"


def test_v12_create_event_must_not_be_selected_3_2() -> None:
    room, ev, entries = bob_message_with_auth("12")
    assert ("m.room.create", "") not in auth_types_for_event(ev, "12")
    with pytest.raises(AuthError) as info:
        check_auth_events_field(ev, [room.create, *entries], "12")
    assert info.value.rule == "3.2"


@pytest.mark.parametrize(("version", "n"), AUTH_EVENTS)
def test_auth_events_rejected_entry_x_3(version: str, n: str) -> None:
    room, ev, entries = bob_message_with_auth(version)
    pl = room.state[("m.room.power_levels", "")]
    with pytest.raises(AuthError) as info:
        check_auth_events_field(ev, entries, version, is_rejected=lambda e: e is pl)
    assert info.value.rule == f"{n}.3"


@pytest.mark.parametrize("version", versions(1, 11))
def test_auth_events_need_create_2_4(version: str) -> None:
    room, ev, entries = bob_message_with_auth(version)
    without = [e for e in entries if e["type"] != "m.room.create"]
    with pytest.raises(AuthError) as info:
        check_auth_events_field(ev, without, version)
    assert info.value.rule == "2.4"
    del room.state[("m.room.create", "")]
    assert room.rule(ev) == "2.4"


@pytest.mark.parametrize(("version", "rule"), expect(v1_11="2.5", v12="3.4"))
def test_auth_events_from_another_room_x_5(version: str, rule: str) -> None:
    room, ev, entries = bob_message_with_auth(version)
    foreign = {**room.state[("m.room.power_levels", "")], "room_id": "!elsewhere:a.example"}
    swapped = [foreign if e["type"] == "m.room.power_levels" else e for e in entries]
    with pytest.raises(AuthError) as info:
        check_auth_events_field(ev, swapped, version)
    assert info.value.rule == rule
    room.state[("m.room.power_levels", "")] = foreign
    assert room.rule(ev) == rule


@pytest.mark.parametrize("version", ALL)
def test_unrelated_state_is_ignored(version: str) -> None:
    room = standard_room(version)
    room.member(BOB, "join")
    # Entries the selection never reads, some of them from another room: they must not matter.
    room.set(room.event("m.room.name", ALICE, {"name": "x"}, "", room_id="!elsewhere:a.example"))
    room.set(room.event("m.room.third_party_invite", ALICE, {}, "tok", room_id="!elsewhere:a.example"))
    room.member(CAROL, "ban", sender=ALICE)
    room.check(message(room, BOB))
    # The minimal map (the selected entries only, plus the create event) gives the same answer.
    ev = message(room, BOB)
    minimal = {k: room.state[k] for k in auth_types_for_event(ev, version)}
    minimal[("m.room.create", "")] = room.create
    check_auth(ev, minimal, version)


# --- rule 3 (4 in v12): m.federate ---------------------------------------------------------------------


@pytest.mark.parametrize(("version", "rule"), expect(v1_11="3", v12="4"))
def test_unfederated_room_rejects_other_servers(version: str, rule: str) -> None:
    room = Room(version, create_content={"m.federate": False})
    room.member(ALICE, "join")
    room.power_levels({"users": {} if room.rv.privileged_creators else {ALICE: 100}})
    room.join_rule("public")
    assert room.rule(room.event("m.room.member", BOB, {"membership": "join"}, BOB)) == rule
    room.check(room.event("m.room.member", "@alice2:a.example", {"membership": "join"}, "@alice2:a.example"))


@pytest.mark.parametrize("version", ALL)
def test_federated_room_allows_other_servers(version: str) -> None:
    room = Room(version, create_content={"m.federate": True})
    room.member(ALICE, "join")
    room.join_rule("public")
    room.check(room.event("m.room.member", BOB, {"membership": "join"}, BOB))


# --- rule 4 of v1–v5: m.room.aliases -----------------------------------------------------------------


@pytest.mark.parametrize("version", versions(1, 5))
def test_aliases_special_case(version: str) -> None:
    room = standard_room(version)
    # Allowed for a server's own aliases, even from a user who is not in the room.
    room.check(room.event("m.room.aliases", BOB, {"aliases": ["#a:b.example"]}, "b.example"))
    assert room.rule(room.event("m.room.aliases", BOB, {"aliases": []})) == "4.1"
    assert room.rule(room.event("m.room.aliases", BOB, {"aliases": []}, "a.example")) == "4.2"


@pytest.mark.parametrize(("version", "rule"), expect(v6_11="5", v12="6"))
def test_aliases_are_ordinary_state_from_v6(version: str, rule: str) -> None:
    room = standard_room(version)
    assert room.rule(room.event("m.room.aliases", BOB, {"aliases": []}, "b.example")) == rule
    room.member(BOB, "join")
    # Now only the state_default (50) stops Bob, as for any state event.
    assert room.rule(room.event("m.room.aliases", BOB, {"aliases": []}, "b.example")) != rule
    room.check(room.event("m.room.aliases", ALICE, {"aliases": []}, "b.example"))


# --- sender must be joined: rule 6 (5 in v6–v11) ---------------------------------------------------------

SENDER_JOINED = expect(v1_5="6", v6_11="5", v12="6")


@pytest.mark.parametrize(("version", "rule"), SENDER_JOINED)
def test_sender_must_be_joined(version: str, rule: str) -> None:
    room = standard_room(version)
    assert room.rule(message(room, BOB)) == rule
    room.member(BOB, "invite", sender=ALICE)
    assert room.rule(message(room, BOB)) == rule
    room.member(BOB, "join")
    room.check(message(room, BOB))


# --- m.room.third_party_invite: rule 7 (6 in v6–v11) ------------------------------------------------------


@pytest.mark.parametrize(("version", "rule"), expect(v1_5="7.1", v6_11="6.1", v12="7.1"))
def test_third_party_invite_needs_invite_level(version: str, rule: str) -> None:
    room = standard_room(version, users={BOB: 10})
    room.member(BOB, "join")
    tpi = room.event("m.room.third_party_invite", BOB, {"display_name": "x", "public_key": "k"}, "token")
    room.check(tpi)  # invite level defaults to 0
    pl = room.state[("m.room.power_levels", "")]
    pl["content"]["invite"] = 20
    assert room.rule(tpi) == rule
    pl["content"]["invite"] = 10
    room.check(tpi)


# --- required power level: rule 8 (7 in v6–v11) -----------------------------------------------------------

REQUIRED = expect(v1_5="8", v6_11="7", v12="8")


@pytest.mark.parametrize(("version", "rule"), REQUIRED)
def test_required_power_level(version: str, rule: str) -> None:
    room = standard_room(version, users={BOB: 10})
    room.member(BOB, "join")
    pl = room.state[("m.room.power_levels", "")]
    room.check(message(room, BOB))  # events_default 0
    assert room.rule(room.event("m.room.topic", BOB, {"topic": "t"}, "")) == rule  # state_default 50
    pl["content"]["events"] = {"m.room.topic": 10, "m.room.message": 11}
    room.check(room.event("m.room.topic", BOB, {"topic": "t"}, ""))
    assert room.rule(message(room, BOB)) == rule
    pl["content"]["events"] = {}
    pl["content"]["events_default"] = 11
    assert room.rule(message(room, BOB)) == rule
    pl["content"]["state_default"] = 10
    room.check(room.event("m.room.topic", BOB, {"topic": "t"}, ""))


@pytest.mark.parametrize(("version", "rule"), REQUIRED)
def test_state_default_is_50_without_power_levels_event(version: str, rule: str) -> None:
    room = Room(version)
    room.member(ALICE, "join")
    room.join_rule("public")
    room.member(BOB, "join")
    room.check(message(room, BOB))
    assert room.rule(room.event("m.room.topic", BOB, {"topic": "t"}, "")) == rule
    room.check(room.event("m.room.topic", ALICE, {"topic": "t"}, ""))  # the creator has 100


# --- state keys naming users: rule 9 (8 in v6–v11) -------------------------------------------------------


@pytest.mark.parametrize(("version", "rule"), expect(v1_5="9", v6_11="8", v12="9"))
def test_user_state_key_must_be_sender(version: str, rule: str) -> None:
    room = standard_room(version)
    room.member(BOB, "join")
    assert room.rule(room.event("m.custom", ALICE, {}, BOB)) == rule
    room.check(room.event("m.custom", ALICE, {}, ALICE))
    room.check(room.event("m.custom", ALICE, {}, "bob"))


# --- m.room.redaction: rule 11 of v1–v2, no rule later ---------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_v1_redaction_rules(version: str) -> None:
    room = standard_room(version, users={BOB: 10})
    room.member(BOB, "join")
    # 11.2: an event from the redaction's own server.
    room.check(room.event("m.room.redaction", BOB, {}, redacts="$x:b.example"))
    # 11.3: another server's event without the redact level.
    assert room.rule(room.event("m.room.redaction", BOB, {}, redacts="$x:a.example")) == "11.3"
    # 11.1: enough power.
    room.state[("m.room.power_levels", "")]["content"]["redact"] = 10
    room.check(room.event("m.room.redaction", BOB, {}, redacts="$x:a.example"))


@pytest.mark.parametrize("version", versions(3, 12))
def test_redaction_is_ordinary_from_v3(version: str) -> None:
    room = standard_room(version, users={BOB: 10})
    room.member(BOB, "join")
    content = {"redacts": "$x"} if room.rv.redacts_in_content else {}
    extra = {} if room.rv.redacts_in_content else {"redacts": "$x"}
    ev = room.event("m.room.redaction", BOB, content, **extra)
    room.check(ev)  # the redact level (50) is not an auth rule any more
    room.state[("m.room.power_levels", "")]["content"]["events"] = {"m.room.redaction": 20}
    assert room.rule(ev) == ("7" if 6 <= int(version) <= 11 else "8")


# --- auth events selection ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL)
def test_selection_for_message_and_create(version: str) -> None:
    room = standard_room(version)
    assert auth_types_for_event(room.create, version) == []
    expected = [("m.room.power_levels", ""), ("m.room.member", BOB)]
    if int(version) < 12:
        expected.insert(0, ("m.room.create", ""))
    assert auth_types_for_event(message(room, BOB), version) == expected


@pytest.mark.parametrize("version", ALL)
@pytest.mark.parametrize("membership", ["join", "invite", "knock", "leave", "ban"])
def test_selection_for_membership(version: str, membership: str) -> None:
    room = standard_room(version)
    got = auth_types_for_event(room.event("m.room.member", ALICE, {"membership": membership}, BOB), version)
    assert ("m.room.member", ALICE) in got and ("m.room.member", BOB) in got
    assert (("m.room.join_rules", "") in got) == (membership in ("join", "invite", "knock"))
    assert (("m.room.create", "") in got) == (int(version) < 12)


@pytest.mark.parametrize("version", ALL)
def test_selection_dedupes_self_membership(version: str) -> None:
    room = standard_room(version)
    got = auth_types_for_event(room.event("m.room.member", BOB, {"membership": "join"}, BOB), version)
    assert got.count(("m.room.member", BOB)) == 1


@pytest.mark.parametrize("version", ALL)
def test_selection_third_party_invite_token(version: str) -> None:
    room = standard_room(version)
    content = {"membership": "invite", "third_party_invite": {"signed": {"mxid": BOB, "token": "tok"}}}
    got = auth_types_for_event(room.event("m.room.member", ALICE, content, BOB), version)
    assert ("m.room.third_party_invite", "tok") in got
    content["third_party_invite"] = {"display_name": "no signed"}
    got = auth_types_for_event(room.event("m.room.member", ALICE, content, BOB), version)
    assert not any(t == "m.room.third_party_invite" for t, _ in got)


@pytest.mark.parametrize("version", ALL)
def test_selection_join_authorised_via_users_server(version: str) -> None:
    room = standard_room(version)
    content = {"membership": "join", "join_authorised_via_users_server": CAROL}
    got = auth_types_for_event(room.event("m.room.member", BOB, content, BOB), version)
    # spec: only where the room version supports restricted rooms (v8+)
    assert (("m.room.member", CAROL) in got) == (int(version) >= 8)
    content["membership"] = "invite"
    got = auth_types_for_event(room.event("m.room.member", ALICE, content, BOB), version)
    assert ("m.room.member", CAROL) not in got


def test_room_version_object_accepted() -> None:
    room = standard_room("10")
    room.member(BOB, "join")
    check_auth(message(room, BOB), room.state, get_room_version("10"))
    assert auth_types_for_event(message(room, BOB), get_room_version("10"))[0] == ("m.room.create", "")


def test_given_create_event_id_is_used() -> None:
    room = standard_room("12")
    room.member(BOB, "join")
    ev = message(room, BOB, room_id="!readable-create-id")
    room.state[("m.room.power_levels", "")]["room_id"] = "!readable-create-id"
    room.state[("m.room.member", BOB)]["room_id"] = "!readable-create-id"
    check_auth(ev, room.state, "12", create_event_id="$readable-create-id")
    with pytest.raises(AuthError) as info:
        check_auth(ev, room.state, "12", create_event_id="$another")
    assert info.value.rule == "2"
    with pytest.raises(AuthError) as info:
        check_auth(ev, room.state, "12")  # recomputed: not the room's id
    assert info.value.rule == "2"


@pytest.mark.parametrize("version", versions(3, 11))
def test_given_create_event_id_for_first_join(version: str) -> None:
    room = Room(version)
    first = room.event("m.room.member", ALICE, {"membership": "join"}, ALICE, prev_events=["$given"])
    check_auth(first, room.state, version, create_event_id="$given")
    with pytest.raises(AuthError):
        check_auth(first, room.state, version)
