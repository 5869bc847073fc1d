"""Dot-separated property paths (spec: appendices "Dot-separated property paths"), used by filters'
`event_fields` and push rules' `event_match` keys."""

from __future__ import annotations


def split_path(path: str) -> list[str]:
    """spec: appendices "Dot-separated property paths" — `\\.` is a literal dot, `\\\\` a backslash."""
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
