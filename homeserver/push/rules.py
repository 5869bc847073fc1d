"""Push rules (spec: modules/push.md "Push Rules", "Predefined Rules", "Push Rules: API").

A user's rules are the server-default rules (ids starting with `.`; only their `enabled` and
`actions` can change) plus the user's own rules, in the order the spec checks them: override,
content, room, sender, underride; within a kind, user rules before defaults, except `.m.rule.master`
which comes before everything.
"""

from __future__ import annotations

import copy
from typing import Any

from homeserver.errors import MatrixError

KINDS = ("override", "content", "room", "sender", "underride")


def _rule(rule_id: str, conditions: list[dict[str, Any]], actions: list[Any], enabled: bool = True) -> dict[str, Any]:
    return {"rule_id": rule_id, "default": True, "enabled": enabled, "conditions": conditions, "actions": actions}


def _match(key: str, pattern: str) -> dict[str, Any]:
    return {"kind": "event_match", "key": key, "pattern": pattern}


_SOUND = {"set_tweak": "sound", "value": "default"}
_HIGHLIGHT = {"set_tweak": "highlight"}
USER_ID = "[the user's Matrix ID]"  # replaced by the owner's user id when the ruleset is built

# spec: modules/push.md "Default Override Rules" (v1.19; the body-matching legacy rules were removed in v1.17)
DEFAULT_OVERRIDE = [
    _rule(".m.rule.master", [], [], enabled=False),
    _rule(".m.rule.suppress_notices", [_match("content.msgtype", "m.notice")], []),
    _rule(
        ".m.rule.invite_for_me",
        [_match("type", "m.room.member"), _match("content.membership", "invite"), _match("state_key", USER_ID)],
        ["notify", _SOUND],
    ),
    _rule(".m.rule.member_event", [_match("type", "m.room.member")], []),
    _rule(
        ".m.rule.is_user_mention",
        [{"kind": "event_property_contains", "key": "content.m\\.mentions.user_ids", "value": USER_ID}],
        ["notify", _SOUND, _HIGHLIGHT],
    ),
    _rule(
        ".m.rule.is_room_mention",
        [
            {"kind": "event_property_is", "key": "content.m\\.mentions.room", "value": True},
            {"kind": "sender_notification_permission", "key": "room"},
        ],
        ["notify", _HIGHLIGHT],
    ),
    _rule(".m.rule.tombstone", [_match("type", "m.room.tombstone"), _match("state_key", "")], ["notify", _HIGHLIGHT]),
    _rule(".m.rule.reaction", [_match("type", "m.reaction")], []),
    _rule(".m.rule.room.server_acl", [_match("type", "m.room.server_acl"), _match("state_key", "")], []),
    _rule(
        ".m.rule.suppress_edits",
        [{"kind": "event_property_is", "key": "content.m\\.relates_to.rel_type", "value": "m.replace"}],
        [],
    ),
]
# spec: modules/push.md "Default Underride Rules"
DEFAULT_UNDERRIDE = [
    _rule(".m.rule.call", [_match("type", "m.call.invite")], ["notify", {"set_tweak": "sound", "value": "ring"}]),
    _rule(
        ".m.rule.encrypted_room_one_to_one",
        [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.encrypted")],
        ["notify", _SOUND],
    ),
    _rule(
        ".m.rule.room_one_to_one",
        [{"kind": "room_member_count", "is": "2"}, _match("type", "m.room.message")],
        ["notify", _SOUND],
    ),
    _rule(".m.rule.message", [_match("type", "m.room.message")], ["notify"]),
    _rule(".m.rule.encrypted", [_match("type", "m.room.encrypted")], ["notify"]),
]
DEFAULTS: dict[str, list[dict[str, Any]]] = {
    "override": DEFAULT_OVERRIDE,
    "content": [],
    "room": [],
    "sender": [],
    "underride": DEFAULT_UNDERRIDE,
}
DEFAULT_IDS = {r["rule_id"]: kind for kind, rules in DEFAULTS.items() for r in rules}


def empty_record() -> dict[str, Any]:
    """What is stored per user: their own rules by kind, and changes to default rules by id."""
    return {"rules": {kind: [] for kind in KINDS}, "defaults": {}}


def _with_user(value: Any, user_id: str) -> Any:
    if value == USER_ID:
        return user_id
    if isinstance(value, dict):
        return {k: _with_user(v, user_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_user(v, user_id) for v in value]
    return value


def ruleset(record: dict[str, Any] | None, user_id: str | None) -> dict[str, list[dict[str, Any]]]:
    """The user's whole ruleset in evaluation order (the `global` object of GET /pushrules/). With
    `user_id` None the placeholder `USER_ID` stays (a template that many users can share)."""
    record = record or empty_record()
    changes: dict[str, dict[str, Any]] = record.get("defaults", {})
    user_rules: dict[str, list[dict[str, Any]]] = record.get("rules", {})
    # Every rule is a copy (`_with_user` rebuilds each dict and list): callers may change what they
    # get without touching DEFAULTS, which every user shares, or the stored record.
    user = user_id if user_id is not None else USER_ID
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in KINDS:
        defaults = []
        for rule in DEFAULTS[kind]:
            rule = _with_user(rule, user)
            change = changes.get(rule["rule_id"])
            if change:
                rule = {**rule, **_with_user(change, user)}
            defaults.append(rule)
        own = [_present(kind, _with_user(r, user)) for r in user_rules.get(kind, [])]
        if kind == "override" and defaults and defaults[0]["rule_id"] == ".m.rule.master":
            out[kind] = [defaults[0], *own, *defaults[1:]]
        else:
            out[kind] = [*own, *defaults]
    return out


def _present(kind: str, rule: dict[str, Any]) -> dict[str, Any]:
    out = {"rule_id": rule["rule_id"], "default": False, "enabled": rule.get("enabled", True)}
    out["actions"] = rule.get("actions", [])
    if kind in ("override", "underride"):
        out["conditions"] = rule.get("conditions", [])
    elif kind == "content":
        out["pattern"] = rule.get("pattern", "")
    return out


# -- editing -------------------------------------------------------------------------------------


def not_found() -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", "The push rule was not found.")


def check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise MatrixError(400, "M_INVALID_PARAM", f"unknown push rule kind {kind!r}")


def find(rules: dict[str, list[dict[str, Any]]], kind: str, rule_id: str) -> dict[str, Any]:
    check_kind(kind)
    for rule in rules[kind]:
        if rule["rule_id"] == rule_id:
            return rule
    raise not_found()


def check_actions(actions: Any) -> list[Any]:
    """spec: "Actions" — `notify`, `set_tweak` objects; the historical `dont_notify` and `coalesce`
    are accepted and stripped."""
    if not isinstance(actions, list):
        raise MatrixError(400, "M_INVALID_PARAM", "actions must be a list")
    out: list[Any] = []
    for action in actions:
        if action in ("dont_notify", "coalesce"):
            continue
        if action == "notify" or (isinstance(action, dict) and isinstance(action.get("set_tweak"), str)):
            out.append(action)
        else:
            raise MatrixError(400, "M_INVALID_PARAM", f"unrecognised action {action!r}")
    return out


def _check_conditions(conditions: Any) -> list[dict[str, Any]]:
    if not isinstance(conditions, list) or not all(
        isinstance(c, dict) and isinstance(c.get("kind"), str) for c in conditions
    ):
        raise MatrixError(400, "M_INVALID_PARAM", "conditions must be a list of objects with a kind")
    return conditions


def put_rule(
    record: dict[str, Any], kind: str, rule_id: str, body: dict[str, Any], before: str | None, after: str | None
) -> dict[str, Any]:
    """PUT /pushrules/global/{kind}/{ruleId}: a new record with the rule created or replaced."""
    check_kind(kind)
    if rule_id.startswith("."):
        raise MatrixError(400, "M_INVALID_PARAM", "rule ids starting with '.' are reserved for server-default rules")
    if not rule_id or "/" in rule_id or "\\" in rule_id:
        raise MatrixError(400, "M_INVALID_PARAM", "rule ids must be non-empty, without slashes or backslashes")
    if "actions" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "actions is required")
    rule: dict[str, Any] = {"rule_id": rule_id, "enabled": True, "actions": check_actions(body["actions"])}
    if kind in ("override", "underride"):
        rule["conditions"] = _check_conditions(body.get("conditions", []))
    elif kind == "content":
        pattern = body.get("pattern")
        if not isinstance(pattern, str):
            raise MatrixError(400, "M_MISSING_PARAM", "content rules need a pattern")
        rule["pattern"] = pattern
    record = copy.deepcopy(record)
    rules: list[dict[str, Any]] = record["rules"].setdefault(kind, [])
    existing = next((i for i, r in enumerate(rules) if r["rule_id"] == rule_id), None)
    if existing is not None:
        rule["enabled"] = rules[existing].get("enabled", True)
        if before is None and after is None:
            rules[existing] = rule
            return record
        del rules[existing]
    for relative in (before, after):
        if relative is not None and relative.startswith("."):
            raise MatrixError(400, "M_INVALID_PARAM", "rules cannot be placed relative to a server-default rule")
    if before is not None:
        at = next((i for i, r in enumerate(rules) if r["rule_id"] == before), None)
        if at is None:
            raise MatrixError(400, "M_UNKNOWN", f"before/after rule not found: {before}")
        rules.insert(at, rule)
    elif after is not None:
        at = next((i for i, r in enumerate(rules) if r["rule_id"] == after), None)
        if at is None:
            raise MatrixError(400, "M_UNKNOWN", f"before/after rule not found: {after}")
        rules.insert(at + 1, rule)
    else:
        rules.insert(0, rule)  # spec: a new rule is the most important user rule of its kind
    return record


def delete_rule(record: dict[str, Any], kind: str, rule_id: str) -> dict[str, Any]:
    check_kind(kind)
    if rule_id in DEFAULT_IDS and DEFAULT_IDS[rule_id] == kind:
        raise MatrixError(400, "M_INVALID_PARAM", "server-default rules cannot be deleted")
    record = copy.deepcopy(record)
    rules = record["rules"].get(kind, [])
    kept = [r for r in rules if r["rule_id"] != rule_id]
    if len(kept) == len(rules):
        raise not_found()
    record["rules"][kind] = kept
    return record


def set_attribute(record: dict[str, Any], kind: str, rule_id: str, name: str, value: Any) -> dict[str, Any]:
    """Set `enabled` or `actions` of a user rule or a server-default rule."""
    check_kind(kind)
    record = copy.deepcopy(record)
    if DEFAULT_IDS.get(rule_id) == kind:
        record["defaults"].setdefault(rule_id, {})[name] = value
        return record
    for rule in record["rules"].get(kind, []):
        if rule["rule_id"] == rule_id:
            rule[name] = value
            return record
    raise not_found()


def _names_room(rule: dict[str, Any], kind: str, room_id: str) -> bool:
    """A rule about one room: the room rule of that id, or an override/underride rule with a
    `room_id` condition on it (how clients mute a room or make it notify for every message)."""
    if kind == "room":
        return bool(rule.get("rule_id") == room_id)
    conditions = rule.get("conditions")
    return isinstance(conditions, list) and any(
        isinstance(c, dict) and c.get("key") == "room_id" and c.get("pattern") == room_id for c in conditions
    )


def copy_room_rules(record: dict[str, Any], old_room_id: str, new_room_id: str) -> dict[str, Any] | None:
    """spec: room upgrades "Server behaviour" (a user joining the replacement room keeps their
    notification settings): a new record where each enabled rule about the old room has a copy about
    the new one, placed just before it; None when there is nothing to copy. A copy's id is the old
    id with the room id replaced (room rules and the rules clients make are named by their room), or
    the new room's id; a rule of that id that already exists is kept as it is (as Synapse does)."""
    record = copy.deepcopy(record)
    changed = False
    for kind in ("override", "room", "underride"):
        rules: list[dict[str, Any]] = record["rules"].get(kind, [])
        out: list[dict[str, Any]] = []
        taken = {r.get("rule_id") for r in rules}
        for rule in rules:
            if rule.get("enabled", True) and _names_room(rule, kind, old_room_id):
                old_id = str(rule.get("rule_id", ""))
                new_id = old_id.replace(old_room_id, new_room_id) if old_room_id in old_id else new_room_id
                if new_id not in taken:
                    taken.add(new_id)
                    twin = {**copy.deepcopy(rule), "rule_id": new_id}
                    if "conditions" in twin:
                        twin["conditions"] = [
                            {**c, "pattern": new_room_id} if _names_room({"conditions": [c]}, kind, old_room_id) else c
                            for c in twin["conditions"]
                        ]
                    out.append(twin)
                    changed = True
            out.append(rule)
        if rules:
            record["rules"][kind] = out
    return record if changed else None
