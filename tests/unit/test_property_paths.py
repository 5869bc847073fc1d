"""spec: appendices "Dot-separated property paths" — the examples the section gives."""

from __future__ import annotations

import pytest

from homeserver.protocol.property_paths import split_path


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("content.body", ["content", "body"]),
        ("content.m\\.relates_to", ["content", "m.relates_to"]),
        ("content.m\\\\foo", ["content", "m\\foo"]),
        ("content.\\x", ["content", "\\x"]),  # other escapes are left as they are
        ("type", ["type"]),
    ],
)
def test_split_path(path: str, parts: list[str]) -> None:
    assert split_path(path) == parts
