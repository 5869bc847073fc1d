"""Compiled rulesets (homeserver/push/evaluator.py) give the answers of the plain evaluation they
shortcut: rules indexed by event type, prepared condition tests, path getters, the one answer for all
users an event does not name, and an EventContext that answers room questions itself."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from homeserver.push import rules as push_rules
from homeserver.push.evaluator import (
    _MISSING,
    CompiledRuleset,
    EventContext,
    _compile_test,
    _getter,
    _lookup_path,
    condition_holds,
    evaluate,
)

MSG = {
    "type": "m.room.message",
    "sender": "@bob:hs",
    "room_id": "!r:hs",
    "content": {"msgtype": "m.text", "body": "hi"},
}


def ctx(event: Any, members: int = 3, power: int = 50) -> EventContext:
    return EventContext(
        event,
        member_count=lambda: members,
        sender_power=lambda: power,
        notification_level=lambda key: 50,
        display_name=lambda user: "Alice" if user == "@alice:hs" else None,
    )


def template() -> CompiledRuleset:
    return CompiledRuleset(push_rules.ruleset(None, None), push_rules.USER_ID)


def ids(rules: tuple[Any, ...]) -> list[str]:
    return [r.rule["rule_id"] for r in rules]


def test_rules_are_indexed_by_event_type() -> None:
    compiled = template()
    message = ids(compiled.rules_for("m.room.message"))
    # rules about other types are left out; the order is kept
    assert message == [
        ".m.rule.suppress_notices",
        ".m.rule.is_user_mention",
        ".m.rule.is_room_mention",
        ".m.rule.suppress_edits",
        ".m.rule.room_one_to_one",
        ".m.rule.message",
    ]
    assert ids(compiled.rules_for("M.Room.Message")) == message  # the glob is case-insensitive
    assert ".m.rule.member_event" in ids(compiled.rules_for("m.room.member"))
    assert ".m.rule.message" not in ids(compiled.rules_for("m.room.member"))
    untyped = [r for r in ids(compiled.rules) if r in ids(compiled.rules_for("org.custom"))]
    assert ids(compiled.rules_for(7)) == untyped == ids(compiled.rules_for("org.custom"))
    # a non-ASCII type is matched by the glob, not by lower-casing: LONG S folds to s there
    assert "m.room.me\u017fsage".lower() != "m.room.message"
    assert ".m.rule.message" in ids(compiled.rules_for("m.room.me\u017fsage"))
    assert ".m.rule.message" not in ids(compiled.rules_for("m.room.me\u017fage"))
    assert compiled.rules_for("m.room.message") is compiled.rules_for("m.room.message")  # cached
    for n in range(600):  # types are the senders' choice: the cache stays bounded
        compiled.rules_for(f"org.type.{n}")
    assert len(compiled._by_type) <= 256


EVENTS: list[Any] = [
    MSG,
    {**MSG, "content": {"msgtype": "m.notice", "body": "bot"}},
    {**MSG, "content": {"msgtype": "M.NOTICE"}},
    {**MSG, "content": {"msgtype": "m.noti\u212ae"}},  # KELVIN SIGN: case-folds to k, not c
    {**MSG, "content": {"msgtype": "\u212aey"}},  # folds to "key" under the glob's IGNORECASE
    {**MSG, "content": {"msgtype": "ma\u017fk"}},  # LONG S: folds to s
    {**MSG, "content": {"msgtype": 5}},
    {**MSG, "content": {"msgtype": None}},
    {**MSG, "content": "not an object"},
    {**MSG, "content": MappingProxyType({"msgtype": "m.notice", "m.mentions": {"room": True}})},
    MappingProxyType({**MSG, "content": {"m.mentions": MappingProxyType({"room": True})}}),
    {**MSG, "content": {"m.mentions": {"room": True}}},
    {**MSG, "content": {"m.mentions": {"room": 1}}},
    {**MSG, "content": {"m.mentions": {"room": "true"}}},
    {**MSG, "content": {"m.mentions": {"room": [True]}}},
    {**MSG, "content": {"m.mentions": [True]}},
    {**MSG, "content": {"m.mentions": {"room": True, "user_ids": ["@alice:hs"]}}},
    {**MSG, "content": {"m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}},
    {**MSG, "content": {"m.relates_to": {"rel_type": "M.REPLACE"}}},
    {**MSG, "content": {"m.relates_to": None}},
    {**MSG, "content": {"level": 1.0, "flag": False, "n": 0}},
    {"type": "m.room.member", "state_key": "@alice:hs", "content": {"membership": "invite"}, "sender": "@b:hs"},
    {"type": "m.room.tombstone", "state_key": "", "content": {}, "sender": "@b:hs"},
]

CONDITIONS: list[dict[str, Any]] = [
    {"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"},
    {"kind": "event_match", "key": "content.msgtype", "pattern": "key"},
    {"kind": "event_match", "key": "content.msgtype", "pattern": "mask"},
    {"kind": "event_match", "key": "content.msgtype", "pattern": "m.*"},
    {"kind": "event_match", "key": "content.msgtype", "pattern": "M.NOT?CE"},
    {"kind": "event_match", "key": "content.msgtype", "pattern": "\u212aey"},
    {"kind": "event_match", "key": "content.body", "pattern": "hi"},
    {"kind": "event_match", "key": "content", "pattern": "*"},
    {"kind": "event_match", "key": "state_key", "pattern": ""},
    {"kind": "event_match", "key": "content.m\\.relates_to.rel_type", "pattern": "m.replace"},
    {"kind": "event_match", "key": "content.msgtype", "pattern": 3},
    {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
    {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": 1},
    {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": "true"},
    {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": [True]},
    {"kind": "event_property_is", "key": "content.m\\.relates_to", "value": None},
    {"kind": "event_property_is", "key": "content.level", "value": 1.0},
    {"kind": "event_property_is", "key": "content.flag", "value": False},
    {"kind": "event_property_is", "key": "content.n", "value": 0},
    {"kind": "event_property_is", "key": "content.n", "value": False},
    {"kind": "event_property_is", "key": "content.msgtype"},
    {"kind": "room_member_count", "is": "2"},
    {"kind": "room_member_count", "is": ">=3"},
    {"kind": "room_member_count", "is": "<3"},
    {"kind": "room_member_count", "is": "x"},
    {"kind": "sender_notification_permission", "key": "room"},
]


@pytest.mark.parametrize("cond", CONDITIONS, ids=lambda c: f"{c.get('kind')}:{c.get('key', c.get('is'))}")
def test_prepared_conditions_agree_with_condition_holds(cond: dict[str, Any]) -> None:
    test = _compile_test(cond)
    for event in EVENTS:
        for members in (2, 3):
            expected = condition_holds(cond, ctx(event, members), "@alice:hs")
            assert test(ctx(event, members), "@alice:hs") is expected, (cond, event, members)


PATHS = [(), ("type",), ("content", "msgtype"), ("content", "m.mentions", "room"), ("content", "a", "b", "c")]
SHAPES: list[Any] = [
    *EVENTS,
    {"content": {"a": {"b": {"c": 1}}}},
    {"content": {"a": MappingProxyType({"b": {"c": 2}})}},
    {"content": MappingProxyType({"m.mentions": {"room": False}})},
    {"content": {"m.mentions": MappingProxyType({"room": "x"})}},
    {"content": {"m.mentions": ["room"]}},
    {"content": {"msgtype": {"nested": 1}}},
    {"content": None},
    {},
]


def test_path_getters_agree_with_lookup() -> None:
    for path in PATHS:
        get = _getter(path)
        for shape in SHAPES:
            found, expected = get(shape), _lookup_path(shape, path)
            assert found is expected or found == expected, (path, shape)
    assert _getter(("content", "m.mentions", "room"))({"content": {}}) is _MISSING


RULES = push_rules.put_rule(
    push_rules.empty_record(),
    "override",
    "notice-too",
    {"conditions": [{"kind": "event_match", "key": "content.msgtype", "pattern": "m.notice"}], "actions": ["notify"]},
    None,
    None,
)
USERS = ["@alice:hs", "@carol:hs", "@ALICE:hs", "@dave:hs"]


@pytest.mark.parametrize("record", [None, RULES], ids=["defaults", "custom"])
def test_evaluate_many_agrees_with_each_user_alone(record: dict[str, Any] | None) -> None:
    compiled = CompiledRuleset(push_rules.ruleset(record, None), push_rules.USER_ID)
    for event in EVENTS:
        for members in (2, 5):
            expected = {u: evaluate(push_rules.ruleset(record, u), ctx(event, members), u) for u in USERS}
            for globless in (False, True):
                users = list(USERS)
                answers = compiled.evaluate_many(ctx(event, members), users, globless)
                assert users == USERS  # the caller's list is not changed
                got = {u: actions for actions, who in answers for u in who}
                assert sorted(u for _, who in answers for u in who) == sorted(USERS)
                assert got == expected, (event, members, globless)


def test_nobody_named_is_one_answer_for_everyone() -> None:
    compiled = template()
    users = ["@carol:hs", "@dave:hs"]
    ((actions, who),) = compiled.evaluate_many(ctx(MSG), users, globless=True)
    assert actions == ["notify"] and who is users  # no per-user work, no copy
    # ids with glob characters are never answered together (`*` could match anyone)
    mention = {**MSG, "content": {"m.mentions": {"user_ids": ["@carol:hs"]}}}
    answers = compiled.evaluate_many(ctx(mention), ["@carol:hs", "@*:hs", "@dave:hs"])
    highlighted = {u for actions, who in answers if actions and len(actions) > 1 for u in who}
    assert highlighted == {"@carol:hs"}


def test_an_event_context_may_answer_room_questions_itself() -> None:
    asked: list[str] = []

    class Facts(EventContext):
        __slots__ = ()

        def __init__(self, event: dict[str, Any]) -> None:
            self.event = event
            self.memo = {}
            self._members = None
            self._power = None

        def count_members(self) -> int:
            asked.append("members")
            return 2

        def sender_power_level(self) -> int:
            asked.append("power")
            return 100

        def notification_level(self, key: str) -> int:
            return 50

    compiled = template()
    one_to_one = compiled.evaluate_many(Facts(MSG), ["@alice:hs"], globless=True)
    assert one_to_one == [(["notify", {"set_tweak": "sound", "value": "default"}], ["@alice:hs"])]
    room = Facts({**MSG, "content": {"m.mentions": {"room": True}}})
    assert room.sender_power == 100 and room.sender_power == 100 and room.member_count == 2
    assert room.member_count == 2
    assert asked == ["members", "power", "members"]  # each asked once per event


@pytest.mark.parametrize("user_id", [None, "@alice:hs.test"])
def test_a_ruleset_is_the_callers_own(user_id: str | None) -> None:
    # DEFAULTS and a stored record are shared by every reader: what `ruleset` hands out must be a copy
    record = {
        "rules": {"content": [{"rule_id": "mine", "pattern": "cake", "actions": ["notify"]}]},
        "defaults": {".m.rule.master": {"enabled": True}, ".m.rule.message": {"actions": ["notify"]}},
    }
    pristine = push_rules.ruleset(record, user_id)
    for rules in (push_rules.ruleset(None, user_id), push_rules.ruleset(record, user_id)):
        for kind_rules in rules.values():
            for rule in kind_rules:
                rule["actions"].append("spoiled")
                for cond in rule.get("conditions", []):
                    cond["spoiled"] = True
                rule["enabled"] = "spoiled"
    assert push_rules.ruleset(record, user_id) == pristine
    assert record["rules"]["content"][0]["actions"] == ["notify"]
    assert record["defaults"][".m.rule.message"]["actions"] == ["notify"]
