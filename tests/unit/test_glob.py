"""homeserver.protocol.glob: one glob compiler for push rules and filters (spec: appendices "Glob-style
matching"; modules/push "Conditions" `event_match`; client-server-api "Filtering" EventFilter.types).

A slow reference matcher written from the spec's words is the oracle; the differential tests run
push's `event_match` (both the plain and the compiled evaluator) and an EventFilter's `types` on the
same patterns and values and check they agree or differ exactly as the spec says.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.protocol.glob import FILTER, PUSH, PUSH_BODY, Dialect, GlobSet, compile_glob, is_literal, translate
from homeserver.push.evaluator import CompiledRuleset, EventContext, evaluate
from homeserver.rooms.event_filter import RoomEventFilter, RoomEventFilterModel

WORD = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def reference(pattern: str, value: str, dialect: Dialect) -> bool:
    """The spec read literally: `*` zero or more characters, `?` exactly one (push only), case folded
    for push; the whole value, or (content.body) some substring with a word boundary on each side."""
    if dialect.ignore_case:
        pattern, value = pattern.lower(), value.lower()

    def whole(text: str) -> bool:
        @functools.cache
        def m(i: int, j: int) -> bool:
            if i == len(pattern):
                return j == len(text)
            c = pattern[i]
            if c == "*":
                return m(i + 1, j) or (j < len(text) and m(i, j + 1))
            if j == len(text):
                return False
            if c == "?" and dialect.question:
                return m(i + 1, j + 1)
            return c == text[j] and m(i + 1, j + 1)

        return m(0, 0)

    if not dialect.words:
        return whole(value)
    n = len(value)
    return any(
        (i == 0 or value[i - 1] not in WORD) and (j == n or value[j] not in WORD) and whole(value[i:j])
        for i in range(n + 1)
        for j in range(i, n + 1)
    )


# small alphabets so that matches are common: letters of both cases, a word and a non-word
# separator, the wildcards themselves, and characters regular expressions would treat specially
patterns = st.text(alphabet="aAbB._*? [\\", max_size=7)
values = st.text(alphabet="aAbB._? -[\\\n", max_size=9)


@settings(max_examples=400, deadline=None)
@given(patterns, values)
def test_every_dialect_matches_the_reference(pattern: str, value: str) -> None:
    for dialect in (FILTER, PUSH, PUSH_BODY):
        assert (compile_glob(pattern, dialect).search(value) is not None) is reference(pattern, value, dialect), dialect


@settings(max_examples=200, deadline=None)
@given(st.lists(patterns, max_size=4), values)
def test_a_glob_set_matches_any_of_its_patterns(pattern_list: list[str], value: str) -> None:
    for dialect in (FILTER, PUSH):
        expected = any(reference(p, value, dialect) for p in pattern_list)
        assert GlobSet(pattern_list, dialect).matches(value) is expected


@pytest.mark.parametrize(
    ("pattern", "value", "dialect", "matches"),
    [
        # filters: only `*` is special, case counts, the whole value
        ("m.room.*", "m.room.message", FILTER, True),
        ("m.room.*", "m.room.", FILTER, True),
        ("m.room.*", "M.ROOM.message", FILTER, False),
        ("m.room.*", "xm.room.message", FILTER, False),
        ("m.?", "m.x", FILTER, False),
        ("m.?", "m.?", FILTER, True),
        ("*", "", FILTER, True),
        ("*.*", "a\nb.c", FILTER, True),  # "any sequence of characters", line breaks too
        ("a**b", "ab", FILTER, True),
        # push: `*` and `?`, case-insensitive (spec examples, modules/push "event_match")
        ("lunc?*", "Lunch plans", PUSH, True),
        ("lunc?*", "LUNCH", PUSH, True),
        ("lunc?*", " lunch", PUSH, False),
        ("lunc?*", "lunc", PUSH, False),
        ("ex*ple", "An example event.", PUSH_BODY, True),
        ("ex*ple", "exple", PUSH_BODY, True),
        ("ex*ple", "An exciting triple-whammy", PUSH_BODY, True),
        ("cake", "cakes are great", PUSH_BODY, False),
        ("cake", "I like cake!", PUSH_BODY, True),
        ("cake", "I like cake!", PUSH, False),
    ],
)
def test_spec_examples(pattern: str, value: str, dialect: Dialect, matches: bool) -> None:
    assert (compile_glob(pattern, dialect).search(value) is not None) is matches
    assert reference(pattern, value, dialect) is matches


def test_literals_and_translation() -> None:
    assert is_literal("m.room.message", FILTER) and is_literal("m.room.message", PUSH)
    assert is_literal("what?", FILTER) and not is_literal("what?", PUSH)
    assert not is_literal("m.*", FILTER) and not is_literal("m.*", PUSH)
    assert translate("a***b", FILTER) == "a.*b"  # a run of stars is one wildcard
    assert translate("a?b", FILTER) == re.escape("a?b")
    assert translate("a?b", PUSH) == "a.b"
    assert compile_glob("m.*", FILTER) is compile_glob("m.*", FILTER)  # compiled once


def test_glob_set_parts() -> None:
    s = GlobSet(["m.room.message", "m.call.*", "org.*.ping", "m.room.message"], FILTER)
    assert s.exact == frozenset({"m.room.message"})
    assert s.matches("m.room.message") and s.matches("m.call.invite") and s.matches("org.x.ping")
    assert not s.matches("m.room.member") and not s.matches("org.x.pong")
    assert not GlobSet([], FILTER).matches("")  # an empty list matches nothing
    assert GlobSet(["M.Room.Message"], PUSH).matches("m.room.message")  # case-insensitive: no set lookup


# -- push's event_match and a filter's types on the same pattern ------------------------------------


def _context(event: dict[str, Any]) -> EventContext:
    return EventContext(
        event,
        member_count=lambda: 2,
        sender_power=lambda: 0,
        notification_level=lambda key: 50,
        display_name=lambda user: None,
    )


def push_matches(key: str, pattern: str, value: str) -> bool:
    """`event_match` on `key`, through both evaluators (they must agree)."""
    path = key.split(".")
    event: dict[str, Any] = {"type": "m.room.message", "sender": "@a:hs", "content": {}}
    target = event
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value
    ruleset = {
        "override": [
            {
                "rule_id": "r",
                "enabled": True,
                "conditions": [{"kind": "event_match", "key": key, "pattern": pattern}],
                "actions": ["notify"],
            }
        ]
    }
    plain = evaluate(ruleset, _context(event), "@u:hs") is not None
    compiled = CompiledRuleset(ruleset).evaluate(_context(event), "@u:hs") is not None
    assert plain is compiled, (key, pattern, value)
    return plain


def filter_matches(pattern: str, value: str) -> bool:
    f = RoomEventFilter(RoomEventFilterModel(types=[pattern]))
    event = {"type": value, "sender": "@a:hs", "content": {}}
    excluded = RoomEventFilter(RoomEventFilterModel(not_types=[pattern]))
    assert f.allows(event) is not excluded.allows(event)  # `not_types` is the same test, negated
    return f.allows(event)


@settings(max_examples=300, deadline=None)
@given(patterns, values)
def test_push_and_filter_differ_only_as_the_spec_says(pattern: str, value: str) -> None:
    push = push_matches("type", pattern, value)
    filtered = filter_matches(pattern, value)
    assert push is reference(pattern, value, PUSH)
    assert filtered is reference(pattern, value, FILTER)
    # A filter match is a push match: push's `?` also matches a literal `?`, and it folds case.
    if filtered:
        assert push
    # Without `?` and with the case folded on both sides, the two agree exactly.
    if "?" not in pattern:
        assert filter_matches(pattern.lower(), value.lower()) is push


def test_push_and_filter_on_the_same_patterns() -> None:
    # both dialects: `*` any sequence, the entire value
    for pattern, value, both in [("m.room.*", "m.room.topic", True), ("*.topic", "m.room.topic", True),
                                 ("m.room.*", "xm.room.topic", False), ("m.*", "m", False)]:  # fmt: skip
        assert push_matches("type", pattern, value) is both
        assert filter_matches(pattern, value) is both
    # push only: `?` is one character and case is folded; in a filter `?` is itself, case counts
    assert push_matches("type", "m.room.?opic", "m.room.topic") and not filter_matches("m.room.?opic", "m.room.topic")
    assert push_matches("type", "M.ROOM.*", "m.room.topic") and not filter_matches("M.ROOM.*", "m.room.topic")
    assert filter_matches("what?", "what?") and push_matches("type", "what?", "what?")
    # push's content.body: a word-bounded substring, where any other key needs the whole value
    assert push_matches("content.body", "cake", "I like cake!")
    assert not push_matches("content.topic", "cake", "I like cake!")
    assert not filter_matches("cake", "I like cake!")
