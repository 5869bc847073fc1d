"""Authorization rules for m.room.member: rule 5 of rooms v1–v5 and v12, rule 4 of rooms v6–v11."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.protocol.signing import encode_verify_key, generate_signing_key, sign_json

from .test_auth_rules import ALICE, ALL, BOB, CAROL, DAVE, Room, expect, standard_room, versions

MEMBER = expect(v1_5="5", v6_11="4", v12="5")
JOIN = expect(v1_5="5.2", v6_7="4.2", v8_11="4.3", v12="5.3")
INVITE = expect(v1_5="5.3", v6_7="4.3", v8_11="4.4", v12="5.4")
LEAVE = expect(v1_5="5.4", v6_7="4.4", v8_11="4.5", v12="5.5")
BAN = expect(v1_5="5.5", v6_7="4.5", v8_11="4.6", v12="5.6")
KNOCK = expect(v7="4.6", v8_11="4.7", v12="5.7")
UNKNOWN = expect(v1_5="5.6", v6="4.6", v7="4.7", v8_11="4.8", v12="5.8")


def join(
    room: Room, user: str, sender: str | None = None, prev_events: list[Any] | None = None, **content: Any
) -> dict[str, Any]:
    ev = room.event("m.room.member", sender or user, {"membership": "join", **content}, user)
    if prev_events is not None:
        ev["prev_events"] = prev_events
    return ev


def otherwise(version: str, j: str) -> str:
    """The join rules' final "Otherwise, reject": 6th before v8, 7th once `restricted` is added."""
    return f"{j}.{6 if int(version) < 8 else 7}"


# --- x.1: state_key and membership ------------------------------------------------------------------


@pytest.mark.parametrize(("version", "m"), MEMBER)
def test_member_needs_state_key_and_membership(version: str, m: str) -> None:
    room = standard_room(version, join_rule="public")
    assert room.rule(room.event("m.room.member", BOB, {}, BOB)) == f"{m}.1"
    assert room.rule(room.event("m.room.member", BOB, {"membership": "join"})) == f"{m}.1"
    room.check(room.event("m.room.member", BOB, {"membership": "join"}, BOB))


@pytest.mark.parametrize(("version", "m"), UNKNOWN)
def test_unknown_membership(version: str, m: str) -> None:
    room = standard_room(version, join_rule="public")
    assert room.rule(room.event("m.room.member", ALICE, {"membership": "foo"}, BOB)) == m
    assert room.rule(room.event("m.room.member", ALICE, {"membership": None}, BOB)) == m
    if int(version) < 7:
        # spec: knock arrives in room v7; before, it is an unknown membership
        assert room.rule(room.event("m.room.member", BOB, {"membership": "knock"}, BOB)) == m


# --- x.2 of v8+: join_authorised_via_users_server must have signed ------------------------------------


@pytest.mark.parametrize(("version", "m"), expect(v8_11="4", v12="5"))
def test_authorising_server_must_sign(version: str, m: str) -> None:
    room = standard_room(version, join_rule="restricted")
    room.member(CAROL, "join")
    ev = join(room, BOB, join_authorised_via_users_server=CAROL)
    assert room.rule(ev) == f"{m}.2.1"
    ev["signatures"]["c.example"] = {"ed25519:1": "c2ln"}
    room.check(ev)
    ev["content"]["join_authorised_via_users_server"] = "carol"
    assert room.rule(ev) == f"{m}.2.1"
    # The rule applies whatever the membership.
    leave = room.event("m.room.member", ALICE, {"membership": "leave", "join_authorised_via_users_server": DAVE}, ALICE)
    assert room.rule(leave) == f"{m}.2.1"


@pytest.mark.parametrize("version", versions(1, 7))
def test_join_authorised_via_users_server_ignored_before_v8(version: str) -> None:
    room = standard_room(version, join_rule="public")
    room.check(join(room, BOB, join_authorised_via_users_server=CAROL))


# --- join ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "j"), JOIN)
def test_creator_first_join(version: str, j: str) -> None:
    room = Room(version)
    first = join(room, ALICE, prev_events=[room.ref(room.create_id)])
    room.check(first)  # x.1: nothing else in the room yet, not even join rules
    # Not directly after the create event: the ordinary rules apply and Alice is not invited.
    assert room.rule(join(room, ALICE)) == otherwise(version, j)
    two = join(room, ALICE, prev_events=[room.ref(room.create_id), room.ref("$other:a.example")])
    assert room.rule(two) == otherwise(version, j)
    # Someone else straight after the create event.
    assert room.rule(join(room, BOB, prev_events=[room.ref(room.create_id)])) == otherwise(version, j)


@pytest.mark.parametrize(("version", "j"), JOIN)
def test_which_user_is_the_creator(version: str, j: str) -> None:
    # The create event is sent by Alice but names Bob in `creator`.
    room = Room(version, create_content={"creator": BOB})
    alice, bob = (join(room, u, prev_events=[room.ref(room.create_id)]) for u in (ALICE, BOB))
    if int(version) <= 10:  # spec: rooms v1–v10 — the creator is content.creator
        room.check(bob)
        assert room.rule(alice) == otherwise(version, j)
    else:  # spec: rooms/v11 — the creator is the create event's sender
        room.check(alice)
        assert room.rule(bob) == otherwise(version, j)


def test_v12_additional_creator_has_no_first_join() -> None:
    room = Room("12", create_content={"additional_creators": [BOB]})
    assert room.rule(join(room, BOB, prev_events=[room.ref(room.create_id)])) == "5.3.7"
    room.check(join(room, ALICE, prev_events=[room.ref(room.create_id)]))


@pytest.mark.parametrize(("version", "j"), JOIN)
def test_join_must_be_sent_by_the_user(version: str, j: str) -> None:
    room = standard_room(version, join_rule="public")
    assert room.rule(join(room, BOB, sender=ALICE)) == f"{j}.2"
    room.check(join(room, BOB))


@pytest.mark.parametrize(("version", "j"), JOIN)
def test_banned_user_cannot_join(version: str, j: str) -> None:
    room = standard_room(version, join_rule="public")
    room.member(BOB, "ban", sender=ALICE)
    assert room.rule(join(room, BOB)) == f"{j}.3"
    room.member(BOB, "leave", sender=ALICE)
    room.check(join(room, BOB))


@pytest.mark.parametrize(("version", "j"), JOIN)
def test_invite_join_rule(version: str, j: str) -> None:
    room = standard_room(version, join_rule="invite")
    assert room.rule(join(room, BOB)) == otherwise(version, j)
    room.member(BOB, "invite", sender=ALICE)
    room.check(join(room, BOB))
    room.member(BOB, "join")
    room.check(join(room, BOB, displayname="Bob"))  # already joined: a profile change
    room.member(BOB, "leave")
    assert room.rule(join(room, BOB)) == otherwise(version, j)


@pytest.mark.parametrize(("version", "j"), JOIN)
def test_knock_join_rule_admits_invited_users(version: str, j: str) -> None:
    room = standard_room(version, join_rule="knock")
    room.member(BOB, "invite", sender=ALICE)
    if int(version) >= 7:  # spec: rooms/v7 rule 4.2.4
        room.check(join(room, BOB))
    else:
        assert room.rule(join(room, BOB)) == otherwise(version, j)
    assert room.rule(join(room, CAROL)) == otherwise(version, j)


@pytest.mark.parametrize(("version", "j"), JOIN)
def test_without_join_rules_event_room_is_invite_only(version: str, j: str) -> None:
    room = standard_room(version)
    del room.state[("m.room.join_rules", "")]
    assert room.rule(join(room, BOB)) == otherwise(version, j)
    room.member(BOB, "invite", sender=ALICE)
    room.check(join(room, BOB))


@pytest.mark.parametrize(("version", "j"), JOIN)
def test_public_and_unknown_join_rules(version: str, j: str) -> None:
    room = standard_room(version, join_rule="public")
    room.check(join(room, BOB))
    room.join_rule("private")
    assert room.rule(join(room, BOB)) == otherwise(version, j)
    room.join_rule("")
    assert room.rule(join(room, BOB)) == otherwise(version, j)


def restricted_join(room: Room, via: str | None) -> dict[str, Any]:
    ev = join(room, BOB) if via is None else join(room, BOB, join_authorised_via_users_server=via)
    if via is not None:
        ev["signatures"][via.split(":", 1)[1]] = {"ed25519:1": "c2ln"}
    return ev


@pytest.mark.parametrize(("version", "j"), JOIN)
@pytest.mark.parametrize("rule", ["restricted", "knock_restricted"])
def test_restricted_join_rules(version: str, j: str, rule: str) -> None:
    room = standard_room(version, join_rule=rule, users={CAROL: 10})
    room.member(CAROL, "join")
    supported = int(version) >= (8 if rule == "restricted" else 10)
    if not supported:
        # spec: restricted arrives in v8, knock_restricted in v10; before, they let no one in
        assert room.rule(restricted_join(room, CAROL)) == otherwise(version, j)
        return
    room.check(restricted_join(room, CAROL))  # x.5.3: Carol is joined and may invite (invite 0)
    assert room.rule(restricted_join(room, None)) == f"{j}.5.2"
    assert room.rule(restricted_join(room, DAVE)) == f"{j}.5.2"  # Dave is not joined
    room.state[("m.room.power_levels", "")]["content"]["invite"] = 20
    assert room.rule(restricted_join(room, CAROL)) == f"{j}.5.2"  # Carol may not invite
    room.member(BOB, "invite", sender=ALICE)
    room.check(restricted_join(room, None))  # x.5.1: already invited


# --- invite -------------------------------------------------------------------------------------------


def invite(room: Room, target: str, sender: str = ALICE, **content: Any) -> dict[str, Any]:
    return room.event("m.room.member", sender, {"membership": "invite", **content}, target)


@pytest.mark.parametrize(("version", "i"), INVITE)
def test_invite(version: str, i: str) -> None:
    room = standard_room(version, users={BOB: 10})
    assert room.rule(invite(room, CAROL, sender=BOB)) == f"{i}.2"  # Bob is not joined
    room.member(BOB, "join")
    room.check(invite(room, CAROL, sender=BOB))  # invite level defaults to 0
    room.state[("m.room.power_levels", "")]["content"]["invite"] = 11
    assert room.rule(invite(room, CAROL, sender=BOB)) == f"{i}.5"
    room.check(invite(room, CAROL))
    room.member(CAROL, "join")
    assert room.rule(invite(room, CAROL)) == f"{i}.3"
    room.member(CAROL, "ban", sender=ALICE)
    assert room.rule(invite(room, CAROL)) == f"{i}.3"
    room.member(CAROL, "leave", sender=ALICE)
    room.check(invite(room, CAROL))


class ThirdParty:
    """An m.room.third_party_invite from Alice, and member events that redeem it for Bob."""

    def __init__(self, room: Room, *, listed_key: bool = False) -> None:
        self.room = room
        key_id, self.key = generate_signing_key()
        self.key_id = key_id
        public = encode_verify_key(self.key)
        content: dict[str, Any] = {"display_name": "b...@example.org", "key_validity_url": "https://id.example/v"}
        if listed_key:
            content["public_key"] = encode_verify_key(generate_signing_key()[1])  # not the signing key
            content["public_keys"] = [{"public_key": "junk"}, {"public_key": public}]
        else:
            content["public_key"] = public
        room.set(room.event("m.room.third_party_invite", ALICE, content, "tok"))

    def signed(self, mxid: str = BOB, token: str = "tok") -> dict[str, Any]:
        return dict(sign_json({"mxid": mxid, "token": token}, "id.example", self.key_id, self.key))

    def event(self, signed: Any = None, sender: str = ALICE, target: str = BOB) -> dict[str, Any]:
        tpi: dict[str, Any] = {"display_name": "b...@example.org"}
        if signed is not None:
            tpi["signed"] = signed
        return invite(self.room, target, sender=sender, third_party_invite=tpi)


@pytest.mark.parametrize(("version", "i"), INVITE)
@pytest.mark.parametrize("listed_key", [False, True])
def test_third_party_invite_allowed(version: str, i: str, listed_key: bool) -> None:
    room = standard_room(version)
    tp = ThirdParty(room, listed_key=listed_key)
    room.check(tp.event(tp.signed()))


@pytest.mark.parametrize(("version", "i"), INVITE)
def test_third_party_invite_rejections(version: str, i: str) -> None:
    room = standard_room(version)
    tp = ThirdParty(room)
    r = f"{i}.1"
    assert room.rule(tp.event(None)) == f"{r}.2"
    assert room.rule(tp.event("not an object")) == f"{r}.2"
    assert room.rule(tp.event({"mxid": BOB})) == f"{r}.3"
    assert room.rule(tp.event({"token": "tok"})) == f"{r}.3"
    assert room.rule(tp.event(tp.signed(mxid=CAROL))) == f"{r}.4"
    assert room.rule(tp.event(tp.signed(token="other"))) == f"{r}.5"
    room.member(CAROL, "join")
    assert room.rule(tp.event(tp.signed(), sender=CAROL)) == f"{r}.6"
    forged = tp.signed()
    forged["signatures"] = {"id.example": {tp.key_id: tp.signed(mxid=CAROL)["signatures"]["id.example"][tp.key_id]}}
    assert room.rule(tp.event(forged)) == f"{r}.8"
    other = ThirdParty(Room(version))  # a key the room's invite does not list
    assert room.rule(tp.event(other.signed())) == f"{r}.8"
    room.member(BOB, "ban", sender=ALICE)
    assert room.rule(tp.event(tp.signed())) == f"{r}.1"


# --- leave --------------------------------------------------------------------------------------------


def leave(room: Room, target: str, sender: str | None = None) -> dict[str, Any]:
    return room.event("m.room.member", sender or target, {"membership": "leave"}, target)


@pytest.mark.parametrize(("version", "lv"), LEAVE)
def test_leaving_yourself(version: str, lv: str) -> None:
    room = standard_room(version, join_rule="knock")
    assert room.rule(leave(room, BOB)) == f"{lv}.1"  # never in the room
    for allowed in ("invite", "join"):
        room.member(BOB, allowed, sender=ALICE if allowed == "invite" else BOB)
        room.check(leave(room, BOB))
    for refused in ("leave", "ban"):
        room.member(BOB, refused, sender=ALICE)
        assert room.rule(leave(room, BOB)) == f"{lv}.1"
    room.member(BOB, "knock")
    if int(version) >= 7:  # spec: rooms/v7 — knocks can be withdrawn
        room.check(leave(room, BOB))
    else:
        assert room.rule(leave(room, BOB)) == f"{lv}.1"


@pytest.mark.parametrize(("version", "lv"), LEAVE)
def test_kick_and_unban(version: str, lv: str) -> None:
    room = standard_room(version, users={CAROL: 50, DAVE: 50})
    room.member(BOB, "join")
    room.member(DAVE, "join")
    assert room.rule(leave(room, BOB, sender=CAROL)) == f"{lv}.2"  # Carol is not joined
    room.member(CAROL, "join")
    room.check(leave(room, BOB, sender=CAROL))  # kick level 50, Bob has 0
    assert room.rule(leave(room, DAVE, sender=CAROL)) == f"{lv}.5"  # Dave is not below Carol
    assert room.rule(leave(room, CAROL, sender=BOB)) == f"{lv}.5"  # Bob lacks the kick level
    room.member(BOB, "ban", sender=ALICE)
    room.check(leave(room, BOB, sender=CAROL))  # unban: ban level 50
    room.state[("m.room.power_levels", "")]["content"]["ban"] = 51
    assert room.rule(leave(room, BOB, sender=CAROL)) == f"{lv}.3"
    room.check(leave(room, BOB, sender=ALICE))


# --- ban ----------------------------------------------------------------------------------------------


def ban(room: Room, target: str, sender: str) -> dict[str, Any]:
    return room.event("m.room.member", sender, {"membership": "ban"}, target)


@pytest.mark.parametrize(("version", "b"), BAN)
def test_ban(version: str, b: str) -> None:
    room = standard_room(version, users={CAROL: 50, DAVE: 50})
    assert room.rule(ban(room, BOB, CAROL)) == f"{b}.1"
    room.member(CAROL, "join")
    room.check(ban(room, BOB, CAROL))  # ban level 50; Bob need not be in the room
    assert room.rule(ban(room, DAVE, CAROL)) == f"{b}.3"  # equal levels
    room.member(BOB, "join")
    assert room.rule(ban(room, DAVE, BOB)) == f"{b}.3"  # below the ban level
    room.check(ban(room, CAROL, ALICE))


def test_v12_creators_cannot_be_banned_or_kicked() -> None:
    room = Room("12", create_content={"additional_creators": [CAROL]})
    room.member(ALICE, "join")
    room.power_levels({"users": {BOB: 100}})
    room.join_rule("invite")
    for user in (BOB, CAROL):
        room.member(user, "join")
    assert room.rule(ban(room, CAROL, BOB)) == "5.6.3"
    assert room.rule(ban(room, CAROL, ALICE)) == "5.6.3"  # infinity is not below infinity
    assert room.rule(leave(room, ALICE, sender=CAROL)) == "5.5.5"
    room.check(ban(room, BOB, CAROL))
    room.check(leave(room, BOB, sender=ALICE))


# --- knock --------------------------------------------------------------------------------------------


def knock(room: Room, target: str, sender: str | None = None) -> dict[str, Any]:
    return room.event("m.room.member", sender or target, {"membership": "knock"}, target)


@pytest.mark.parametrize(("version", "k"), KNOCK)
def test_knock(version: str, k: str) -> None:
    room = standard_room(version, join_rule="invite")
    assert room.rule(knock(room, BOB)) == f"{k}.1"
    room.join_rule("knock")
    room.check(knock(room, BOB))  # no membership yet
    assert room.rule(knock(room, BOB, sender=CAROL)) == f"{k}.2"
    room.member(BOB, "leave")
    room.check(knock(room, BOB))
    for refused in ("invite", "join", "ban"):
        room.member(BOB, refused, sender=ALICE if refused != "join" else BOB)
        assert room.rule(knock(room, BOB)) == f"{k}.4"


@pytest.mark.parametrize(("version", "k"), KNOCK)
def test_knock_restricted(version: str, k: str) -> None:
    room = standard_room(version, join_rule="knock_restricted")
    if int(version) >= 10:  # spec: rooms/v10
        room.check(knock(room, BOB))
    else:
        assert room.rule(knock(room, BOB)) == f"{k}.1"
    room.join_rule("restricted")
    assert room.rule(knock(room, BOB)) == f"{k}.1"


@pytest.mark.parametrize("version", ALL)
def test_sender_membership_rule_does_not_apply_to_members(version: str) -> None:
    # Member events are decided by the member rules: a non-member may join a public room.
    room = standard_room(version, join_rule="public")
    room.check(join(room, DAVE))
