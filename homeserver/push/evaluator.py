"""Push rule evaluation (spec: modules/push.md "Conditions", "Predefined Rules").

`EventContext` holds what conditions ask about an event and its room, computed at most once per
event however many users are evaluated; `evaluate` walks one user's ruleset in order and returns
the actions of the first enabled rule whose conditions all hold.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from homeserver.protocol.glob import PUSH, PUSH_BODY, WORD_CHARS, compile_glob, is_literal
from homeserver.protocol.property_paths import split_path

_MISSING = object()
_MEMBER_COUNT = re.compile(r"^(==|<=|>=|<|>)?\s*([0-9]+)$")


@functools.lru_cache(maxsize=1024)
def key_path(key: str) -> tuple[str, ...]:
    return tuple(split_path(key))


def lookup(event: Mapping[str, Any], key: str) -> Any:
    return _lookup_path(event, key_path(key))


def _lookup_path(event: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = event
    for part in path:
        # events are dicts: the exact type check first spares the (slower) ABC check
        if not (type(value) is dict or isinstance(value, Mapping)) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _same(a: Any, b: Any) -> bool:
    """Exact equality of non-compound canonical JSON values (no bool/int mixing)."""
    return type(a) is type(b) and a == b and isinstance(a, str | int | bool | type(None))


class EventContext:
    """An event and lazily computed facts about its room, shared by every user evaluated.

    The room questions go to the callables given; a subclass may answer them itself by overriding
    `count_members`, `sender_power_level`, `notification_level` and `display_name` (one object per
    event instead of a closure per question)."""

    __slots__ = (
        "_display_name",
        "_member_count",
        "_members",
        "_notification_level",
        "_power",
        "_sender_power",
        "event",
        "memo",
    )

    def __init__(
        self,
        event: Mapping[str, Any],
        *,
        member_count: Callable[[], int],
        sender_power: Callable[[], int | float],
        notification_level: Callable[[str], int],
        display_name: Callable[[str], str | None],
    ) -> None:
        self.event = event
        self._member_count = member_count
        self._sender_power = sender_power
        self._notification_level = notification_level
        self._display_name = display_name
        self._members: int | None = None
        self._power: int | float | None = None
        self.memo: dict[object, Any] = {}  # user-independent results for this event

    @property
    def member_count(self) -> int:
        members = self._members
        if members is None:
            members = self._members = int(self.count_members())
        return members

    @property
    def sender_power(self) -> int | float:
        power = self._power
        if power is None:
            power = self._power = self.sender_power_level()
        return power

    def count_members(self) -> int:
        return self._member_count()

    def sender_power_level(self) -> int | float:
        return self._sender_power()

    def notification_level(self, key: str) -> int:
        return self._notification_level(key)

    def display_name(self, user_id: str) -> str | None:
        return self._display_name(user_id)

    @property
    def body(self) -> Any:
        return lookup(self.event, "content.body")


def condition_holds(cond: Mapping[str, Any], ctx: EventContext, user_id: str) -> bool:
    kind = cond.get("kind")
    event = ctx.event
    if kind == "event_match":
        key, pattern = cond.get("key"), cond.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return False
        value = lookup(event, key)
        if not isinstance(value, str):
            return False  # spec: absent or not a string: no match, even for `*`
        # spec: push globs have `?` and fold case (a filter's `types` do not: protocol/glob.py);
        # `content.body` matches a word-bounded substring, any other key the whole value
        return compile_glob(pattern, PUSH_BODY if key == "content.body" else PUSH).search(value) is not None
    if kind == "event_property_is":
        key = cond.get("key")
        if not isinstance(key, str) or "value" not in cond:
            return False
        return _same(lookup(event, key), cond["value"])
    if kind == "event_property_contains":
        key = cond.get("key")
        if not isinstance(key, str) or "value" not in cond:
            return False
        values = lookup(event, key)
        return isinstance(values, list) and any(_same(v, cond["value"]) for v in values)
    if kind == "contains_display_name":
        body = ctx.body
        name = ctx.display_name(user_id)
        if not isinstance(body, str) or not name:
            return False
        escaped = re.escape(name)
        return re.search(f"(?<![{WORD_CHARS}]){escaped}(?![{WORD_CHARS}])", body, re.IGNORECASE) is not None
    if kind == "room_member_count":
        spec = cond.get("is")
        m = _MEMBER_COUNT.match(spec.strip()) if isinstance(spec, str) else None
        if m is None:
            return False
        op, number = m.group(1) or "==", int(m.group(2))
        count = ctx.member_count
        return {
            "==": count == number,
            "<": count < number,
            ">": count > number,
            "<=": count <= number,
            ">=": count >= number,
        }[op]
    if kind == "sender_notification_permission":
        key = cond.get("key")
        if not isinstance(key, str):
            return False
        return ctx.sender_power >= ctx.notification_level(key)
    return False  # spec: unrecognised conditions never match


def rule_matches(kind: str, rule: Mapping[str, Any], ctx: EventContext, user_id: str) -> bool:
    if kind == "room":
        return bool(ctx.event.get("room_id") == rule["rule_id"])
    if kind == "sender":
        return bool(ctx.event.get("sender") == rule["rule_id"])
    if kind == "content":
        pattern, body = rule.get("pattern"), ctx.body
        return (
            isinstance(pattern, str)
            and isinstance(body, str)
            and compile_glob(pattern, PUSH_BODY).search(body) is not None
        )
    conditions = rule.get("conditions") or ()
    return all(condition_holds(c, ctx, user_id) for c in conditions if isinstance(c, Mapping))


def evaluate(ruleset: Mapping[str, Sequence[Mapping[str, Any]]], ctx: EventContext, user_id: str) -> list[Any] | None:
    """The actions of the first matching enabled rule, or None when no rule matches."""
    for kind in ("override", "content", "room", "sender", "underride"):
        for rule in ruleset.get(kind, ()):
            if rule.get("enabled", True) and rule_matches(kind, rule, ctx, user_id):
                return [a for a in rule.get("actions", []) if a not in ("dont_notify", "coalesce")]
    return None


def is_highlight(actions: Sequence[Any]) -> bool:
    """spec: "highlight" tweak — present without a value means true."""
    for action in actions:
        if type(action) is str:
            continue  # "notify": spares the (slower) ABC check below
        if isinstance(action, Mapping) and action.get("set_tweak") == "highlight":
            return action.get("value", True) is True
    return False


# -- compiled rulesets ---------------------------------------------------------------------------
# Evaluating every local member's rules for every event must be cheap: a ruleset is compiled once
# (shared by every user without rules of their own), conditions that do not depend on the user are
# evaluated once per event and remembered in the EventContext, and only the few that name the user
# (the placeholder `USER_ID` of the default rules) are evaluated per user.


def _names_user(value: Any, placeholder: str) -> bool:
    if value == placeholder:
        return True
    if isinstance(value, Mapping):
        return any(_names_user(v, placeholder) for v in value.values())
    return False


_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "==": operator.eq,
    "<": operator.lt,
    ">": operator.gt,
    "<=": operator.le,
    ">=": operator.ge,
}


def _getter(path: tuple[str, ...]) -> Callable[[Any], Any]:
    """`_lookup_path(event, path)` for one path: the short paths of the default rules walked through
    plain dicts (what events are) with one `get` a step; anything else goes the general way."""
    if len(path) == 2:
        first, second = path

        def get2(event: Any) -> Any:
            if type(event) is dict:
                inner = event.get(first, _MISSING)
                if type(inner) is dict:
                    return inner.get(second, _MISSING)
                if inner is _MISSING:
                    return _MISSING
            return _lookup_path(event, path)

        return get2
    if len(path) == 3:
        first, second, third = path

        def get3(event: Any) -> Any:
            if type(event) is dict:
                inner = event.get(first, _MISSING)
                if type(inner) is dict:
                    inner = inner.get(second, _MISSING)
                    if type(inner) is dict:
                        return inner.get(third, _MISSING)
                if inner is _MISSING:
                    return _MISSING
            return _lookup_path(event, path)

        return get3
    return lambda event: _lookup_path(event, path)


def _compile_test(cond: Mapping[str, Any]) -> Callable[[EventContext, str], bool]:
    """`condition_holds(cond, ...)` with its parsing done once: the key path, the glob's regex and the
    member count comparison are prepared here (same answers; other kinds use `condition_holds`)."""
    kind = cond.get("kind")
    key = cond.get("key")
    if kind == "event_match":
        pattern = cond.get("pattern")
        if not isinstance(key, str) or not isinstance(pattern, str):
            return lambda ctx, user_id: False
        get = _getter(key_path(key))
        words = key == "content.body"
        find = compile_glob(pattern, PUSH_BODY if words else PUSH).search
        if not words and pattern.isascii() and is_literal(pattern, PUSH):
            # a whole-value match of a plain ASCII pattern: for an ASCII value, the case-insensitive
            # glob is a comparison of lower-cased strings (non-ASCII values may still match: `K`, `ſ`)
            literal = pattern.lower()

            def literal_match(ctx: EventContext, user_id: str) -> bool:
                value = get(ctx.event)
                if not isinstance(value, str):
                    return False
                if value.isascii():
                    return value.lower() == literal
                return find(value) is not None

            return literal_match

        def event_match(ctx: EventContext, user_id: str) -> bool:
            value = get(ctx.event)
            return isinstance(value, str) and find(value) is not None

        return event_match
    if kind == "event_property_is":
        if not isinstance(key, str) or "value" not in cond:
            return lambda ctx, user_id: False
        get = _getter(key_path(key))
        expected = cond["value"]
        if not isinstance(expected, str | int | bool | type(None)):
            return lambda ctx, user_id: False  # compound or float values never compare equal (`_same`)
        expected_type = type(expected)
        # `_same`: the same type (no bool/int mixing) and equal
        return lambda ctx, user_id: type(value := get(ctx.event)) is expected_type and value == expected
    if kind == "room_member_count":
        spec = cond.get("is")
        m = _MEMBER_COUNT.match(spec.strip()) if isinstance(spec, str) else None
        if m is None:
            return lambda ctx, user_id: False
        compare, number = _COMPARE[m.group(1) or "=="], int(m.group(2))
        return lambda ctx, user_id: compare(ctx.member_count, number)
    return lambda ctx, user_id: condition_holds(cond, ctx, user_id)


def _literal_type(cond: Mapping[str, Any]) -> str | None:
    """The lower-cased pattern of an `event_match` on `type` without wildcards, in ASCII (where the
    case-insensitive glob is a comparison of lower-cased strings); else None."""
    pattern = cond.get("pattern")
    if cond.get("kind") != "event_match" or cond.get("key") != "type" or not isinstance(pattern, str):
        return None
    if not is_literal(pattern, PUSH) or not pattern.isascii():
        return None
    return pattern.lower()


class CompiledCondition:
    __slots__ = ("cond", "fast", "get", "path", "per_user", "test")

    def __init__(self, cond: Mapping[str, Any], placeholder: str) -> None:
        self.cond = cond
        self.per_user = _names_user(cond, placeholder) or cond.get("kind") == "contains_display_name"
        self.test = _compile_test(cond)
        # the two shapes of the default rules that name the user, checked without building a condition
        kind, key = cond.get("kind"), cond.get("key")
        self.fast = ""
        self.path: tuple[str, ...] = ()
        if placeholder and isinstance(key, str):
            if kind == "event_property_contains" and cond.get("value") == placeholder:
                self.fast = "contains"
            elif kind == "event_match" and cond.get("pattern") == placeholder:
                self.fast = "match"
            self.path = key_path(key)
        self.get = _getter(self.path)  # the value the fast shapes compare user ids with

    def holds(self, ctx: EventContext, user_id: str, placeholder: str) -> bool:
        memo = ctx.memo
        if not self.per_user:
            found = memo.get(self)
            if found is None:
                found = memo[self] = self.test(ctx, user_id)
            return bool(found)
        if self.fast:
            value = memo.get((self, "value"), _MISSING)
            if value is _MISSING:
                value = memo[(self, "value")] = self.get(ctx.event)
            if self.fast == "contains":
                return isinstance(value, list) and user_id in value
            if "*" not in user_id and "?" not in user_id:
                return isinstance(value, str) and value.lower() == user_id.lower()
        cond = self.cond
        if placeholder:
            cond = {k: (user_id if v == placeholder else v) for k, v in cond.items()}
        return condition_holds(cond, ctx, user_id)


class CompiledRule:
    __slots__ = ("actions", "conditions", "event_type", "kind", "per_user", "rule", "shared", "simple", "tests")

    def __init__(self, kind: str, rule: Mapping[str, Any], placeholder: str) -> None:
        self.kind = kind
        self.simple = kind in ("room", "sender", "content")  # no conditions: the rule is one test
        self.rule = rule
        self.actions = [a for a in rule.get("actions", []) if a not in ("dont_notify", "coalesce")]
        raw = rule.get("conditions") or () if kind in ("override", "underride") else ()
        self.conditions = tuple(CompiledCondition(c, placeholder) for c in raw if isinstance(c, Mapping))
        # Most rules are about one event type (`type` matched against a plain ASCII pattern): that
        # test is a string comparison, done before the others, and the rule skipped when it fails.
        self.event_type: str | None = None
        shared = []
        for c in self.conditions:
            if c.per_user:
                continue
            literal = _literal_type(c.cond)
            if literal is not None and self.event_type is None:
                self.event_type = literal
            else:
                shared.append(c)
        self.shared = tuple(shared)  # the same for every user
        self.tests = tuple(c.test for c in shared)
        self.per_user = tuple(c for c in self.conditions if c.per_user)

    def matches(self, ctx: EventContext, user_id: str, placeholder: str) -> bool:
        if self.simple:
            memo = ctx.memo
            found = memo.get(self)
            if found is None:
                found = memo[self] = rule_matches(self.kind, self.rule, ctx, user_id)
            return found
        return all(c.holds(ctx, user_id, placeholder) for c in self.conditions)


class CompiledRuleset:
    """A ruleset ready for evaluation; `placeholder` is the text standing for the user's id."""

    __slots__ = ("_by_type", "groupable", "placeholder", "rules")

    def __init__(self, ruleset: Mapping[str, Sequence[Mapping[str, Any]]], placeholder: str = "") -> None:
        self.placeholder = placeholder
        self.rules = tuple(
            CompiledRule(kind, rule, placeholder)
            for kind in ("override", "content", "room", "sender", "underride")
            for rule in ruleset.get(kind, ())
            if rule.get("enabled", True)
        )
        # Every condition that names the user has a fast form (the default rules' shapes): then a user
        # the event does not name gets the same answer as any other such user, worked out once.
        self.groupable = all(c.fast for r in self.rules for c in r.conditions if c.per_user)
        self._by_type: dict[str, tuple[CompiledRule, ...]] = {}

    def rules_for(self, etype: Any) -> tuple[CompiledRule, ...]:
        """The rules an event of type `etype` can match, in order: those about another type (their
        literal `type` pattern fails) are left out, once per type rather than once per event."""
        if not isinstance(etype, str):
            return tuple(r for r in self.rules if r.event_type is None)  # spec: not a string: no match
        found = self._by_type.get(etype)
        if found is None:
            # a literal type pattern compares as lower-cased ASCII; else (non-ASCII) the glob decides
            plain = etype.lower() if etype.isascii() else None
            found = tuple(
                r
                for r in self.rules
                if r.event_type is None
                or (
                    plain == r.event_type
                    if plain is not None
                    else compile_glob(r.event_type, PUSH).search(etype) is not None
                )
            )
            if len(self._by_type) >= 256:  # types are chosen by senders: keep the cache bounded
                self._by_type.clear()
            self._by_type[etype] = found
        return found

    def _candidates(self, ctx: EventContext, user_id: str) -> list[tuple[CompiledRule, tuple[CompiledCondition, ...]]]:
        """For this event: the rules whose user-independent conditions hold, in order, each with the
        conditions left to check per user; the list ends at the first rule with none left."""
        out: list[tuple[CompiledRule, tuple[CompiledCondition, ...]]] = []
        for rule in self.rules_for(ctx.event.get("type")):
            if rule.simple:
                if rule.matches(ctx, user_id, self.placeholder):
                    out.append((rule, ()))
                    break
                continue
            for test in rule.tests:
                # each condition is asked once per event and ruleset here: no memo needed
                if not test(ctx, user_id):
                    break
            else:
                out.append((rule, rule.per_user))
                if not rule.per_user:
                    break
        return out

    def _plan(self, ctx: EventContext, user_id: str) -> _Plan:
        candidates = self._candidates(ctx, user_id)
        named: set[str] | None = None
        unnamed: list[Any] | None = None
        if self.groupable:
            # The values the user-naming conditions compare user ids with (lower-cased: a superset of
            # what matches). A user id outside them fails every such condition, so the answer for it is
            # the first candidate with none: the last one, if any.
            named = set()
            event = ctx.event
            for _, per_user in candidates:
                for c in per_user:
                    value = c.get(event)
                    if value is _MISSING:
                        continue
                    if isinstance(value, str):
                        named.add(value.lower())
                    elif isinstance(value, list):
                        named.update(v.lower() for v in value if isinstance(v, str))
            if candidates and not candidates[-1][1]:
                unnamed = candidates[-1][0].actions
        return _Plan(candidates, named, unnamed)

    def evaluate(self, ctx: EventContext, user_id: str) -> list[Any] | None:
        """The actions of the first matching rule, or None when no rule matches."""
        plan = ctx.memo.get(self)
        if plan is None:
            plan = ctx.memo[self] = self._plan(ctx, user_id)
        named = plan.named
        if named is not None and user_id.lower() not in named and "*" not in user_id and "?" not in user_id:
            return plan.unnamed
        return self._first_match(plan, ctx, user_id)

    def evaluate_many(
        self, ctx: EventContext, user_ids: list[str], globless: bool = False
    ) -> list[tuple[list[Any] | None, list[str]]]:
        """`evaluate` for several users who all have this ruleset: each distinct answer with its users
        (lists that may be `user_ids` itself: do not change them). `globless`: the caller knows no id
        has a glob character (`*`, `?`)."""
        if not user_ids:
            return []
        plan = ctx.memo.get(self)
        if plan is None:
            plan = ctx.memo[self] = self._plan(ctx, user_ids[0])
        named = plan.named
        if globless and named is not None and not named:
            return [(plan.unnamed, user_ids)]  # nobody is named: one answer for all (the common case)
        answers: dict[int, tuple[list[Any] | None, list[str]]] = {}
        if named is not None and not named:
            # nobody is named: one answer for all but the (rare) ids with glob characters
            plain = [u for u in user_ids if "*" not in u and "?" not in u]
            if plain:
                answers[id(plan.unnamed)] = (plan.unnamed, plain)
            if len(plain) == len(user_ids):
                return list(answers.values())
            user_ids = [u for u in user_ids if "*" in u or "?" in u]
        for user_id in user_ids:
            if named is not None and user_id.lower() not in named and "*" not in user_id and "?" not in user_id:
                actions = plan.unnamed
            else:
                actions = self._first_match(plan, ctx, user_id)
            found = answers.get(id(actions))
            if found is None:
                answers[id(actions)] = (actions, [user_id])
            else:
                found[1].append(user_id)
        return list(answers.values())

    def _first_match(self, plan: _Plan, ctx: EventContext, user_id: str) -> list[Any] | None:
        placeholder = self.placeholder
        for rule, per_user in plan.candidates:
            if all(c.holds(ctx, user_id, placeholder) for c in per_user):
                return rule.actions
        return None


class _Plan:
    """One ruleset's evaluation of one event: its candidate rules, and the shortcut for unnamed users."""

    __slots__ = ("candidates", "named", "unnamed")

    def __init__(
        self,
        candidates: list[tuple[CompiledRule, tuple[CompiledCondition, ...]]],
        named: set[str] | None,
        unnamed: list[Any] | None,
    ) -> None:
        self.candidates = candidates
        self.named = named
        self.unnamed = unnamed
