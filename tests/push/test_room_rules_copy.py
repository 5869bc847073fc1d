"""`copy_room_rules` (homeserver/push/rules.py): a user's rules about a room that was upgraded get
twins about the replacement room when they join it (spec: client-server "Room Upgrades", "Server
behaviour": the user's notification settings follow them)."""

from __future__ import annotations

from typing import Any

from homeserver.push import rules as push_rules

OLD, NEW = "!old:hs", "!new:hs"


def on(room_id: str) -> list[dict[str, Any]]:
    return [{"kind": "event_match", "key": "room_id", "pattern": room_id}]


def record_with(**kinds: list[dict[str, Any]]) -> dict[str, Any]:
    record = push_rules.empty_record()
    record["rules"].update(kinds)
    return record


def test_room_and_conditioned_rules_get_twins_placed_before_them() -> None:
    record = record_with(
        room=[{"rule_id": OLD, "enabled": True, "actions": ["notify"]}],
        override=[
            {"rule_id": "first", "enabled": True, "actions": [], "conditions": on("!elsewhere:hs")},
            {"rule_id": OLD, "enabled": True, "actions": [], "conditions": on(OLD)},
        ],
        underride=[
            {
                "rule_id": "loud",
                "enabled": True,
                "actions": ["notify"],
                "conditions": [{"kind": "event_match", "key": "type", "pattern": "m.room.message"}, *on(OLD)],
            }
        ],
    )
    out = push_rules.copy_room_rules(record, OLD, NEW)
    assert out is not None
    assert out["rules"]["room"] == [
        {"rule_id": NEW, "enabled": True, "actions": ["notify"]},
        {"rule_id": OLD, "enabled": True, "actions": ["notify"]},
    ]
    assert [r["rule_id"] for r in out["rules"]["override"]] == ["first", NEW, OLD]
    assert out["rules"]["override"][1]["conditions"] == on(NEW)
    # a rule not named by its room: the copy takes the new room's id (as Synapse names it)
    assert out["rules"]["underride"][0]["rule_id"] == NEW
    assert out["rules"]["underride"][0]["conditions"][1:] == on(NEW)
    assert out["rules"]["underride"][0]["conditions"][0]["key"] == "type"
    assert record["rules"]["room"] == [{"rule_id": OLD, "enabled": True, "actions": ["notify"]}]  # not changed
    # the evaluator's view: the new room is muted as the old one was
    ruleset = push_rules.ruleset(out, "@u:hs")
    assert any(r["rule_id"] == NEW and r["conditions"] == on(NEW) for r in ruleset["override"])


def test_nothing_to_copy_gives_none() -> None:
    disabled = record_with(room=[{"rule_id": OLD, "enabled": False, "actions": []}])
    assert push_rules.copy_room_rules(disabled, OLD, NEW) is None
    elsewhere = record_with(override=[{"rule_id": "x", "enabled": True, "actions": [], "conditions": on("!x:hs")}])
    assert push_rules.copy_room_rules(elsewhere, OLD, NEW) is None
    assert push_rules.copy_room_rules(push_rules.empty_record(), OLD, NEW) is None


def test_a_rule_the_user_already_has_for_the_new_room_is_kept() -> None:
    record = record_with(
        room=[
            {"rule_id": NEW, "enabled": True, "actions": ["notify"]},
            {"rule_id": OLD, "enabled": True, "actions": []},
        ]
    )
    assert push_rules.copy_room_rules(record, OLD, NEW) is None
