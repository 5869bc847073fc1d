"""Which addresses outbound requests may connect to (no requests into the server's own network).

Someone else chooses the name we connect to (a peer's server name, a pusher's gateway URL), so
without a check a remote server, a client or their DNS could make this server send requests to
loopback, the LAN or cloud metadata endpoints. Only globally routable addresses are allowed, plus the
ranges an admin lists (`federation.ip_range_allow`, `push.ip_range_allow`: tests on loopback, a
private federation, a gateway on the LAN). IPv4-mapped IPv6 addresses are judged as the IPv4 address they
carry.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressPolicy:
    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow: list[IPNetwork] = [ipaddress.ip_network(cidr, strict=False) for cidr in allow]

    def permits(self, address: str) -> bool:
        try:
            ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if any(ip in net for net in self.allow if net.version == ip.version):
            return True
        return ip.is_global and not ip.is_multicast
