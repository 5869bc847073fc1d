"""Push rule conditions (spec: modules/push.md "Conditions") evaluated on their own."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.protocol.glob import PUSH, PUSH_BODY, compile_glob
from homeserver.push import rules as push_rules
from homeserver.push.evaluator import EventContext, condition_holds, evaluate, is_highlight


def ctx(event: dict[str, Any], members: int = 3, power: int = 0, names: dict[str, str] | None = None) -> EventContext:
    return EventContext(
        event,
        member_count=lambda: members,
        sender_power=lambda: power,
        notification_level=lambda key: 50,
        display_name=lambda user: (names or {}).get(user),
    )


MSG = {"type": "m.room.message", "sender": "@bob:hs", "room_id": "!r:hs", "content": {"body": "An example event."}}


@pytest.mark.parametrize(
    ("pattern", "value", "words", "matches"),
    [
        ("lunc?*", "Lunch plans", False, True),
        ("lunc?*", "LUNCH", False, True),
        ("lunc?*", " lunch", False, False),
        ("lunc?*", "lunc", False, False),
        ("ex*ple", "An example event.", True, True),
        ("ex*ple", "exple", True, True),
        ("ex*ple", "An exciting triple-whammy", True, True),
        ("cake", "cakes are great", True, False),
        ("cake", "I like cake!", True, True),
        ("m.notice", "m.notice", False, True),
        ("m.notice", "mXnotice", False, False),
    ],
)
def test_glob(pattern: str, value: str, words: bool, matches: bool) -> None:
    regex = compile_glob(pattern, PUSH_BODY if words else PUSH)
    assert (regex.search(value) is not None) is matches


def test_event_match_needs_a_string() -> None:
    cond = {"kind": "event_match", "key": "content.topic", "pattern": "*"}
    assert not condition_holds(cond, ctx({"content": {"topic": None}}), "@a:hs")
    assert not condition_holds(cond, ctx({"content": {}}), "@a:hs")
    assert condition_holds(cond, ctx({"content": {"topic": ""}}), "@a:hs")


def test_event_property_is_and_contains() -> None:
    create = {"type": "m.room.create", "content": {"m.federate": True, "alt": ["#a:hs", 1, True, None]}}
    is_true = {"kind": "event_property_is", "key": "content.m\\.federate", "value": True}
    assert condition_holds(is_true, ctx(create), "@a:hs")
    for other in ("true", 1):
        assert not condition_holds({**is_true, "value": other}, ctx(create), "@a:hs")
    contains = {"kind": "event_property_contains", "key": "content.alt", "value": "#a:hs"}
    assert condition_holds(contains, ctx(create), "@a:hs")
    assert not condition_holds({**contains, "value": ":hs"}, ctx(create), "@a:hs")
    assert condition_holds({**contains, "value": None}, ctx(create), "@a:hs")
    assert not condition_holds({**contains, "value": 1.5}, ctx(create), "@a:hs")
    assert not condition_holds({**contains, "key": "content.m\\.federate"}, ctx(create), "@a:hs")


@pytest.mark.parametrize(
    ("spec", "count", "holds"),
    [
        ("2", 2, True),
        ("==2", 3, False),
        ("<3", 2, True),
        (">=3", 3, True),
        (">3", 3, False),
        ("<=1", 2, False),
        ("x", 2, False),
    ],
)
def test_room_member_count(spec: str, count: int, holds: bool) -> None:
    assert condition_holds({"kind": "room_member_count", "is": spec}, ctx(MSG, members=count), "@a:hs") is holds


def test_sender_notification_permission_and_display_name() -> None:
    cond = {"kind": "sender_notification_permission", "key": "room"}
    assert condition_holds(cond, ctx(MSG, power=50), "@a:hs")
    assert not condition_holds(cond, ctx(MSG, power=49), "@a:hs")
    name = {"kind": "contains_display_name"}
    event = {**MSG, "content": {"body": "hello Alice!"}}
    assert condition_holds(name, ctx(event, names={"@a:hs": "alice"}), "@a:hs")
    assert not condition_holds(name, ctx(event, names={"@a:hs": "ali"}), "@a:hs")
    assert not condition_holds(name, ctx(event), "@a:hs")
    assert not condition_holds({"kind": "made_up"}, ctx(MSG), "@a:hs")  # unknown conditions never match


def test_default_ruleset_decisions() -> None:
    rules = push_rules.ruleset(None, "@alice:hs")
    assert evaluate(rules, ctx(MSG, members=3), "@alice:hs") == ["notify"]
    assert evaluate(rules, ctx(MSG, members=2), "@alice:hs") == ["notify", {"set_tweak": "sound", "value": "default"}]
    notice = {**MSG, "content": {"msgtype": "m.notice", "body": "bot"}}
    assert evaluate(rules, ctx(notice), "@alice:hs") == []
    mention = {**MSG, "content": {"body": "hi", "m.mentions": {"user_ids": ["@alice:hs"]}}}
    actions = evaluate(rules, ctx(mention), "@alice:hs")
    assert actions is not None and is_highlight(actions)
    room_mention = {**MSG, "content": {"body": "@room", "m.mentions": {"room": True}}}
    assert is_highlight(evaluate(rules, ctx(room_mention, power=50), "@alice:hs") or [])
    assert evaluate(rules, ctx(room_mention, power=0), "@alice:hs") == ["notify"]  # falls to .m.rule.message
    edit = {**MSG, "content": {"body": "* x", "m.relates_to": {"rel_type": "m.replace", "event_id": "$e"}}}
    assert evaluate(rules, ctx(edit), "@alice:hs") == []
    invite = {"type": "m.room.member", "state_key": "@alice:hs", "sender": "@bob:hs"}
    invite["content"] = {"membership": "invite"}
    assert evaluate(rules, ctx(invite), "@alice:hs") == ["notify", {"set_tweak": "sound", "value": "default"}]
    assert evaluate(rules, ctx({**invite, "state_key": "@carol:hs"}), "@alice:hs") == []
    assert evaluate(rules, ctx({"type": "org.custom", "sender": "@bob:hs", "content": {}}), "@alice:hs") is None
    assert not is_highlight(["notify", {"set_tweak": "highlight", "value": False}])


def test_compiled_rulesets_agree_with_plain_evaluation() -> None:
    from homeserver.push.evaluator import CompiledRuleset

    custom = push_rules.put_rule(
        push_rules.empty_record(),
        "override",
        "beer",
        {"conditions": [{"kind": "event_match", "key": "content.body", "pattern": "beer"}], "actions": ["notify"]},
        None,
        None,
    )
    custom = push_rules.put_rule(custom, "content", "tea", {"pattern": "tea", "actions": []}, None, None)
    custom = push_rules.put_rule(custom, "sender", "@bob:hs", {"actions": []}, None, None)
    custom = push_rules.set_attribute(custom, "underride", ".m.rule.message", "enabled", False)
    events = [
        MSG,
        {**MSG, "content": {"body": "beer o'clock"}},
        {**MSG, "content": {"body": "tea?"}},
        {**MSG, "sender": "@bob:hs"},
        {**MSG, "content": {"body": "x", "m.mentions": {"user_ids": ["@alice:hs", "@carol:hs"]}}},
        {**MSG, "content": {"body": "all", "m.mentions": {"room": True}}},
        {"type": "m.room.member", "state_key": "@ALICE:hs", "sender": "@x:hs", "content": {"membership": "invite"}},
        {"type": "m.room.encrypted", "sender": "@x:hs", "content": {}},
        {"type": "m.room.tombstone", "state_key": "", "sender": "@x:hs", "content": {}},
        # the shortcuts (types compared as strings, users the event does not name answered together)
        # must agree with the globs: other cases, non-ASCII look-alikes, types that are not strings
        {**MSG, "type": "M.Room.Message"},
        {**MSG, "type": "m.room.me\u017fsage"},
        {**MSG, "type": 7},
        {k: v for k, v in MSG.items() if k != "type"},
        {**MSG, "content": {"body": "x", "m.mentions": {"user_ids": ["@ALICE:hs", 3, "@a*:hs"]}}},
        {"type": "m.room.member", "state_key": "@carol:HS", "sender": "@x:hs", "content": {"membership": "invite"}},
    ]
    for record in (None, custom):
        template = CompiledRuleset(push_rules.ruleset(record, None), push_rules.USER_ID)
        for event in events:
            for members in (2, 5):
                shared = ctx(event, members=members, power=50)
                for user in ("@alice:hs", "@carol:hs", "@dave:hs", "@ALICE:hs", "@a*:hs"):
                    plain = evaluate(push_rules.ruleset(record, user), ctx(event, members=members, power=50), user)
                    assert template.evaluate(shared, user) == plain, (record is None, event, user)
