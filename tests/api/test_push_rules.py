"""Push rules: GET /pushrules/ (trailing slash, as Element calls it), the default ruleset of the
spec, and CRUD of user rules including enabled/actions and before/after."""

from __future__ import annotations

import pytest

from .conftest import Harness
from .sync_helpers import q, sync

pytestmark = pytest.mark.asyncio

OVERRIDE_IDS = [
    ".m.rule.master",
    ".m.rule.suppress_notices",
    ".m.rule.invite_for_me",
    ".m.rule.member_event",
    ".m.rule.is_user_mention",
    ".m.rule.is_room_mention",
    ".m.rule.tombstone",
    ".m.rule.reaction",
    ".m.rule.room.server_acl",
    ".m.rule.suppress_edits",
]
UNDERRIDE_IDS = [
    ".m.rule.call",
    ".m.rule.encrypted_room_one_to_one",
    ".m.rule.room_one_to_one",
    ".m.rule.message",
    ".m.rule.encrypted",
]


async def test_default_ruleset(harness: Harness) -> None:
    alice = await harness.user("alice")
    for path in ("pushrules/", "pushrules"):
        status, body = await harness.request("GET", path, alice)
        assert status == 200
        rules = body["global"]
        assert [r["rule_id"] for r in rules["override"]] == OVERRIDE_IDS
        assert [r["rule_id"] for r in rules["underride"]] == UNDERRIDE_IDS
        assert rules["content"] == [] and rules["room"] == [] and rules["sender"] == []
    master = rules["override"][0]
    assert master == {"rule_id": ".m.rule.master", "default": True, "enabled": False, "conditions": [], "actions": []}
    mention = next(r for r in rules["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention["conditions"] == [
        {"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": alice.user_id}
    ]
    status, body = await harness.request("GET", "pushrules/global/", alice)
    assert status == 200 and body == rules
    status, body = await harness.request("GET", "pushrules/global/underride/.m.rule.message", alice)
    assert status == 200 and body["actions"] == ["notify"] and body["default"] is True


async def test_user_rules_crud_and_ordering(harness: Harness) -> None:
    alice = await harness.user("alice")
    since = (await sync(harness, alice))["next_batch"]
    base = "pushrules/global"
    status, body = await harness.request(
        "PUT", f"{base}/content/cake", alice, json={"pattern": "cake", "actions": ["notify", "dont_notify"]}
    )
    assert status == 200 and body == {}
    status, body = await harness.request("GET", f"{base}/content/cake", alice)
    assert body == {"rule_id": "cake", "default": False, "enabled": True, "pattern": "cake", "actions": ["notify"]}
    # a new rule goes first; before/after place it relative to another user rule
    await harness.request("PUT", f"{base}/content/pie", alice, json={"pattern": "pie", "actions": []})
    await harness.request("PUT", f"{base}/content/tart?after=cake", alice, json={"pattern": "tart", "actions": []})
    await harness.request("PUT", f"{base}/content/bun?before=pie", alice, json={"pattern": "bun", "actions": []})
    rules = (await harness.request("GET", "pushrules/", alice))[1]["global"]
    assert [r["rule_id"] for r in rules["content"]] == ["bun", "pie", "cake", "tart"]
    # override rules come after the master rule and before the other defaults
    cond = [{"kind": "event_match", "key": "content.body", "pattern": "beer"}]
    await harness.request("PUT", f"{base}/override/beer", alice, json={"conditions": cond, "actions": ["notify"]})
    override = (await harness.request("GET", "pushrules/", alice))[1]["global"]["override"]
    assert [r["rule_id"] for r in override][:3] == [".m.rule.master", "beer", ".m.rule.suppress_notices"]
    # room and sender rules
    room_id = "!someroom:hs.test"
    status, _ = await harness.request("PUT", f"{base}/room/{q(room_id)}", alice, json={"actions": []})
    assert status == 200
    assert (await harness.request("GET", f"{base}/room/{q(room_id)}", alice))[1]["rule_id"] == room_id
    # enabled and actions, for user rules and defaults
    status, _ = await harness.request("PUT", f"{base}/content/cake/enabled", alice, json={"enabled": False})
    assert status == 200
    assert (await harness.request("GET", f"{base}/content/cake/enabled", alice))[1] == {"enabled": False}
    status, _ = await harness.request("PUT", f"{base}/override/.m.rule.master/enabled", alice, json={"enabled": True})
    assert status == 200
    assert (await harness.request("GET", f"{base}/override/.m.rule.master/enabled", alice))[1] == {"enabled": True}
    actions = ["notify", {"set_tweak": "sound", "value": "bing"}]
    message_actions = f"{base}/underride/.m.rule.message/actions"
    status, _ = await harness.request("PUT", message_actions, alice, json={"actions": actions})
    assert status == 200
    assert (await harness.request("GET", f"{base}/underride/.m.rule.message/actions", alice))[1] == {"actions": actions}
    # replacing a rule keeps its place and enabled flag
    await harness.request("PUT", f"{base}/content/cake", alice, json={"pattern": "cakes", "actions": []})
    rule = (await harness.request("GET", f"{base}/content/cake", alice))[1]
    assert rule["pattern"] == "cakes" and rule["enabled"] is False
    # delete
    status, body = await harness.request("DELETE", f"{base}/content/pie", alice)
    assert status == 200 and body == {}
    assert (await harness.request("GET", f"{base}/content/pie", alice))[0] == 404
    # changes reach /sync as the m.push_rules account data event
    delta = await sync(harness, alice, f"since={since}&timeout=0")
    [event] = [e for e in delta["account_data"]["events"] if e["type"] == "m.push_rules"]
    assert [r["rule_id"] for r in event["content"]["global"]["content"]] == ["bun", "cake", "tart"]


async def test_push_rule_errors(harness: Harness) -> None:
    alice = await harness.user("alice")
    base = "pushrules/global"
    cases = [
        ("PUT", f"{base}/content/.mine", {"pattern": "x", "actions": []}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{base}/content/nopattern", {"actions": []}, 400, "M_MISSING_PARAM"),
        ("PUT", f"{base}/override/noactions", {"conditions": []}, 400, "M_MISSING_PARAM"),
        ("PUT", f"{base}/override/bad", {"actions": ["explode"]}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{base}/override/bad", {"actions": [], "conditions": "all"}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{base}/sometimes/x", {"actions": []}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{base}/override/x?before=missing", {"actions": []}, 400, "M_UNKNOWN"),
        ("PUT", f"{base}/override/x?after=.m.rule.master", {"actions": []}, 400, "M_INVALID_PARAM"),
        ("GET", f"{base}/override/nothing", None, 404, "M_NOT_FOUND"),
        ("DELETE", f"{base}/override/nothing", None, 404, "M_NOT_FOUND"),
        ("DELETE", f"{base}/override/.m.rule.master", None, 400, "M_INVALID_PARAM"),
        ("GET", f"{base}/override/nothing/enabled", None, 404, "M_NOT_FOUND"),
        ("PUT", f"{base}/override/nothing/enabled", {"enabled": True}, 404, "M_NOT_FOUND"),
        ("PUT", f"{base}/override/.m.rule.master/enabled", {"enabled": "yes"}, 400, "M_BAD_JSON"),
        ("PUT", f"{base}/override/.m.rule.master/actions", {"actions": "notify"}, 400, "M_INVALID_PARAM"),
        ("PUT", f"{base}/override/.m.rule.master/actions", {}, 400, "M_MISSING_PARAM"),
    ]
    for method, path, body, want, errcode in cases:
        status, resp = await harness.request(method, path, alice, json=body)
        assert (status, resp.get("errcode")) == (want, errcode), (method, path, resp)
    status, _ = await harness.request("GET", "pushrules/")
    assert status == 401
