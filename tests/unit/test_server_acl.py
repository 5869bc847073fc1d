"""spec: client-server-api "Server Access Control Lists (ACLs) for rooms"."""

from __future__ import annotations

from typing import Any

import pytest

from homeserver.protocol.server_acl import host_of, server_allowed


@pytest.mark.parametrize(
    ("acl", "server", "allowed"),
    [
        (None, "anything.example", True),  # no ACL event: everyone
        ({}, "a.example", False),  # allow defaults to nothing
        ({"allow": ["*"]}, "a.example", True),
        ({"allow": ["*"], "deny": ["evil.example"]}, "evil.example", False),
        ({"allow": ["*"], "deny": ["*.evil.example"]}, "sub.evil.example", False),
        ({"allow": ["*"], "deny": ["*.evil.example"]}, "evil.example", True),
        ({"allow": ["*.good.example"]}, "x.good.example:8448", True),  # the port is not matched
        ({"allow": ["good.example"]}, "GOOD.example", True),  # server names: any case
        ({"allow": ["a?.example"]}, "ab.example", True),
        ({"allow": ["a?.example"]}, "abc.example", False),
        ({"allow": ["*"], "allow_ip_literals": False}, "1.2.3.4:8448", False),
        ({"allow": ["*"], "allow_ip_literals": False}, "[2001:db8::1]:8448", False),
        ({"allow": ["*"], "allow_ip_literals": "no"}, "1.2.3.4", True),  # not a boolean: true
        ({"allow": ["*"]}, "1.2.3.4", True),
        ({"allow": ["*"], "deny": [5, None, "bad.example"]}, "bad.example", False),  # non-strings ignored
        ({"allow": "*"}, "a.example", False),  # not a list: nothing allowed
        ({"allow": ["a.example"], "deny": ["a.example"]}, "a.example", False),  # deny wins
    ],
)
def test_server_allowed(acl: dict[str, Any] | None, server: str, allowed: bool) -> None:
    assert server_allowed(acl, server) is allowed


def test_host_of() -> None:
    assert host_of("example.org:8448") == "example.org"
    assert host_of("example.org") == "example.org"
    assert host_of("[::1]:8448") == "[::1]"
    assert host_of("1.2.3.4:80") == "1.2.3.4"
