"""Glob-style matching (spec: appendices "Glob-style matching": `*` matches zero or more characters,
`?` exactly one), compiled once into regular expressions.

The spec uses globs in two places that do not agree on the details, so a pattern is compiled for a
`Dialect`:

- `PUSH`, `PUSH_BODY` (spec: modules/push "Conditions", `event_match`, and `content` rules): `*` and
  `?` are wildcards and the match is case-insensitive. It covers the entire value, except for the
  key `content.body`, where the pattern matches "any substring of the value of the property which
  starts and ends at a word boundary" (`PUSH_BODY`).
- `FILTER` (spec: client-server-api "Filtering", EventFilter `types` / `not_types`): "A `*` can be
  used as a wildcard to match any sequence of characters" and nothing else is special, so `?` is a
  literal question mark; the match is case-sensitive (event types are) and covers the entire value.

On a pattern without `?` and a value whose case matches, the dialects agree; the unit tests check
the difference where they do not.

`compile_glob` is a pure function; its results are memoised because patterns repeat (the default
push rules for every user, a client's filter on every /sync).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import NamedTuple

# spec: push `content.body` — "any character not in the sets [A-Z], [a-z], [0-9] or _" is a boundary
WORD_CHARS = "A-Za-z0-9_"


class Dialect(NamedTuple):
    question: bool  # `?` matches exactly one character (else it is a literal `?`)
    ignore_case: bool
    words: bool  # match a substring between word boundaries (else the whole value)


FILTER = Dialect(question=False, ignore_case=False, words=False)
PUSH = Dialect(question=True, ignore_case=True, words=False)
PUSH_BODY = Dialect(question=True, ignore_case=True, words=True)
# spec: client-server "Server Access Control Lists": `*` and `?` wildcards over server names, which
# are compared without regard to case (as DNS names are): the push dialect, under its own name
SERVER_ACL = PUSH

_FILTER_WILDCARDS = re.compile(r"(\*+)")
_PUSH_WILDCARDS = re.compile(r"(\*+|\?)")


def is_literal(pattern: str, dialect: Dialect) -> bool:
    """Whether the pattern has no wildcard in this dialect (it matches one string, up to case)."""
    return "*" not in pattern and not (dialect.question and "?" in pattern)


def translate(pattern: str, dialect: Dialect) -> str:
    """The regular expression (unanchored) for a glob: literal runs escaped, a run of `*` as one
    `.*` (so `**…*` cannot make the match backtrack more than `*` does)."""
    # `.*?` where the match is searched for in a longer value: the shortest candidate is tried first
    star = ".*?" if dialect.words else ".*"
    parts = (_PUSH_WILDCARDS if dialect.question else _FILTER_WILDCARDS).split(pattern)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(re.escape(part))
        else:
            out.append("." if part == "?" else star)
    return "".join(out)


@functools.lru_cache(maxsize=4096)
def compile_glob(pattern: str, dialect: Dialect) -> re.Pattern[str]:
    """The pattern compiled: `.search(value)` finds a match as the dialect says (whole-value dialects
    are anchored at both ends, so `.match` answers the same for them)."""
    flags = re.DOTALL | (re.IGNORECASE if dialect.ignore_case else 0)
    body = translate(pattern, dialect)
    if dialect.words:
        return re.compile(f"(?<![{WORD_CHARS}])(?:{body})(?![{WORD_CHARS}])", flags)
    return re.compile(f"\\A(?:{body})\\Z", flags)


class GlobSet:
    """A list of patterns compiled for "does the value match any of them": the literal ones a set
    lookup, the others one regular expression (the alternation of their compiled globs). A
    case-insensitive dialect compiles every pattern, since a set lookup would not fold case."""

    __slots__ = ("exact", "regex")

    def __init__(self, patterns: Iterable[str], dialect: Dialect) -> None:
        exact: set[str] = set()
        globs: list[re.Pattern[str]] = []
        for p in dict.fromkeys(patterns):
            if is_literal(p, dialect) and not dialect.ignore_case:
                exact.add(p)
            else:
                globs.append(compile_glob(p, dialect))
        self.exact = frozenset(exact)
        self.regex: re.Pattern[str] | None = None
        if len(globs) == 1:
            self.regex = globs[0]
        elif globs:
            # each alternative is anchored (or word-bounded) on its own, as compiled
            self.regex = re.compile("|".join(g.pattern for g in globs), globs[0].flags)

    def matches(self, value: str) -> bool:
        return value in self.exact or (self.regex is not None and self.regex.search(value) is not None)
