"""Dot-separated property paths (spec: appendices "Dot-separated property paths"), as push rule keys
(`content.body`) and filters' `event_fields` name a property of an event."""

from __future__ import annotations


def split_path(path: str) -> list[str]:
    """The property names of a path: `.` separates them, `\\.` is a literal dot and `\\\\` a backslash;
    any other escape is left as it is ("a `\\x` would be treated as a literal backslash followed by
    'x'")."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(path):
        c = path[i]
        if c == "\\" and i + 1 < len(path) and path[i + 1] in ".\\":
            current.append(path[i + 1])
            i += 2
            continue
        if c == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return parts
