"""DNS for server discovery, on dnspython: SRV records and host addresses.

Lookups have a deadline; failures are "no records" for SRV (discovery goes on to the next step) and
an empty address list for hosts (the caller reports the destination as unreachable).
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from federation.discovery import SrvRecord

if TYPE_CHECKING:
    import dns.asyncresolver

LOOKUP_TIMEOUT_S = 5.0


class DnsPython:
    def __init__(self, timeout: float = LOOKUP_TIMEOUT_S) -> None:
        self._resolver: dns.asyncresolver.Resolver | None = None
        self.timeout = timeout

    def _get(self) -> dns.asyncresolver.Resolver:
        if self._resolver is None:  # reads /etc/resolv.conf: only when federation first needs it
            import dns.asyncresolver  # ~50 ms and a few MiB: loaded on the first SRV lookup only

            self._resolver = dns.asyncresolver.Resolver()
            self._resolver.lifetime = self.timeout
        return self._resolver

    async def srv(self, name: str) -> list[SrvRecord]:
        import dns.exception

        try:
            answer = await self._get().resolve(name, "SRV")
        except (dns.exception.DNSException, OSError):
            return []
        return [SrvRecord(r.priority, r.weight, r.target.to_text(), r.port) for r in answer]

    async def addresses(self, host: str, port: int) -> list[str]:
        """IPv6 and IPv4 addresses of a host name (CNAMEs followed), as the system resolver gives them
        (so /etc/hosts counts, as for any program on the machine)."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), self.timeout
            )
        except (OSError, TimeoutError, UnicodeError):
            return []
        seen: list[str] = []
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6) and sockaddr[0] not in seen:
                seen.append(str(sockaddr[0]))
        return seen
