"""Server access control lists: whether a server may take part in a room.

spec: client-server-api "Server Access Control Lists (ACLs) for rooms" and the `m.room.server_acl`
event: `allow` and `deny` are lists of server-name globs (`*`, `?`), matched against the server name
without its port; `allow` defaults to nothing allowed, `deny` to nothing denied, and
`allow_ip_literals` (default true; anything but a boolean counts as true) may refuse every IP
literal. Order: an IP literal refused by `allow_ip_literals`, then `deny`, then `allow`. A room
without the event allows every server. Entries that are not strings are ignored.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from typing import Any

from homeserver.protocol.glob import SERVER_ACL, GlobSet


def host_of(server_name: str) -> str:
    """The server name without a port (IPv6 literals keep their brackets)."""
    if server_name.startswith("["):
        return server_name[: server_name.find("]") + 1] if "]" in server_name else server_name
    host, sep, port = server_name.rpartition(":")
    return host if sep and port.isdigit() else server_name


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=256)
def _globs(patterns: tuple[str, ...]) -> GlobSet:
    return GlobSet(patterns, SERVER_ACL)


def server_allowed(acl: Mapping[str, Any] | None, server_name: str) -> bool:
    """Whether `server_name` may take part in a room whose `m.room.server_acl` content is `acl`."""
    if acl is None:
        return True
    host = host_of(server_name)
    allow_ip = acl.get("allow_ip_literals", True)
    if allow_ip is False and _is_ip_literal(host):
        return False
    deny = acl.get("deny")
    if isinstance(deny, list) and _globs(tuple(d for d in deny if isinstance(d, str))).matches(host):
        return False
    allow = acl.get("allow")
    return isinstance(allow, list) and _globs(tuple(a for a in allow if isinstance(a, str))).matches(host)
