"""Server discovery: where to connect for a server name, with which Host header and TLS name.

spec: server-server-api "Resolving server names", steps in order:
1. IP literal: that address, the given port or 8448; the certificate is for the IP; no SNI.
2. Hostname with an explicit port: A/AAAA (CNAME followed) of the hostname, that port; Host is the
   server name; the certificate is for the hostname.
3. Otherwise `https://<hostname>/.well-known/matrix/server`; when valid, `m.server` is
   `<delegated_hostname>[:<delegated_port>]`:
   3.1 an IP literal: that address, the port or 8448, Host is the delegated name;
   3.2 with a port: A/AAAA, Host `<delegated_hostname>:<delegated_port>`;
   3.3 SRV `_matrix-fed._tcp.<delegated_hostname>`; 3.4 (deprecated) SRV `_matrix._tcp.…`;
   3.5 A/AAAA of the delegated hostname and port 8448. In 3.3–3.5 Host and certificate are the
   delegated hostname.
4. No valid well-known: SRV `_matrix-fed._tcp.<hostname>`, 5. (deprecated) `_matrix._tcp.<hostname>`,
6. A/AAAA of the hostname and port 8448. Host and certificate: the hostname.
Well-known answers are cached as the spec recommends: a valid one for its Cache-Control max-age or
24 h, at most 48 h; an error for a minute at first, doubling while failures go on, at most an hour.

The DNS lookups and the HTTPS fetch are behind small interfaces so that the decision table can be
tested on its own (tests/federation/test_discovery.py) and run on dnspython in the server.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from homeserver.protocol.errors import InvalidIdentifier
from homeserver.protocol.identifiers import HostKind, ServerName, parse_server_name
from storage.cache import LruCache

log = logging.getLogger(__name__)

DEFAULT_PORT = 8448
WELL_KNOWN_DEFAULT_S = 24 * 3600
WELL_KNOWN_MAX_S = 48 * 3600
WELL_KNOWN_ERROR_S = 60.0  # the first failure; doubled while failures go on
WELL_KNOWN_ERROR_MAX_S = 3600.0


@dataclass(frozen=True, slots=True)
class Destination:
    """Where and how to send requests for a server name.

    `target` is resolved to addresses at connection time (an IP literal stands for itself); `tls_name`
    is both the SNI and the name the certificate must be valid for, None when the certificate must
    be valid for the IP address (no SNI is sent then)."""

    target: str
    port: int
    host_header: str
    tls_name: str | None


@dataclass(frozen=True, slots=True)
class SrvRecord:
    priority: int
    weight: int
    target: str
    port: int


@dataclass(frozen=True, slots=True)
class WellKnown:
    """A `/.well-known/matrix/server` answer: `server` None when it was an error or invalid."""

    server: str | None
    cache_s: float


class Dns(Protocol):
    async def srv(self, name: str) -> list[SrvRecord]:
        """The SRV records of `name`; empty when there are none (NXDOMAIN, no answer)."""
        ...


class WellKnownFetcher(Protocol):
    async def fetch(self, hostname: str) -> WellKnown: ...


def parse_well_known(status: int, body: Any, cache_control: str | None) -> WellKnown:
    """The meaning of a well-known response: valid only with 200 and an `m.server` that is a server name."""
    if status != 200 or not isinstance(body, dict):
        return WellKnown(None, WELL_KNOWN_ERROR_S)
    server = body.get("m.server")
    try:
        if not isinstance(server, str):
            raise InvalidIdentifier("m.server is not a string")
        parse_server_name(server)
    except InvalidIdentifier:
        return WellKnown(None, WELL_KNOWN_ERROR_S)
    return WellKnown(server, cache_seconds(cache_control))


def cache_seconds(cache_control: str | None) -> float:
    """How long to keep a valid well-known answer: max-age if given, else 24 h; at most 48 h;
    `no-store`/`no-cache` mean not at all (0)."""
    if cache_control:
        for part in cache_control.lower().split(","):
            name, _, value = part.strip().partition("=")
            if name in ("no-store", "no-cache"):
                return 0.0
            if name == "max-age":
                try:
                    return float(min(max(int(value.strip().strip('"')), 0), WELL_KNOWN_MAX_S))
                except ValueError:
                    break
    return float(WELL_KNOWN_DEFAULT_S)


def _ordered(records: list[SrvRecord]) -> list[SrvRecord]:
    """RFC 2782: lowest priority first; within a priority, a weighted random order."""
    out: list[SrvRecord] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        while group:
            total = sum(r.weight for r in group)
            pick = random.uniform(0, total) if total else 0
            acc = 0
            chosen = group[0]
            for r in group:
                acc += r.weight
                if acc >= pick and (r.weight or not total):
                    chosen = r
                    break
            out.append(chosen)
            group.remove(chosen)
    return out


class ServerResolver:
    """Resolves server names per the spec, caching well-known answers (bounded: an `LruCache`)."""

    def __init__(
        self,
        dns: Dns,
        well_known: WellKnownFetcher,
        cache: LruCache[str, tuple[float, WellKnown, float]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dns = dns
        self.fetcher = well_known
        self.cache = cache  # hostname -> (expires at, answer, the error back-off now in force)
        self.clock = clock

    async def resolve(self, server_name: str) -> list[Destination]:
        """Destinations to try in order (several when SRV gives several targets)."""
        name = parse_server_name(server_name)
        if name.kind is not HostKind.DNS:  # step 1
            return [Destination(name.ip_literal or name.host, name.port or DEFAULT_PORT, name.text, None)]
        if name.port is not None:  # step 2
            return [Destination(name.host, name.port, name.text, name.host)]
        delegated = (await self._well_known(name.host)).server  # step 3
        if delegated is not None:
            return await self._delegated(parse_server_name(delegated))
        return await self._by_srv(name.host, name.host)  # steps 4-6

    async def _delegated(self, d: ServerName) -> list[Destination]:
        if d.kind is not HostKind.DNS:  # 3.1
            return [Destination(d.ip_literal or d.host, d.port or DEFAULT_PORT, d.text, None)]
        if d.port is not None:  # 3.2
            return [Destination(d.host, d.port, d.text, d.host)]
        return await self._by_srv(d.host, d.host)  # 3.3-3.5

    async def _by_srv(self, hostname: str, host_header: str) -> list[Destination]:
        for service in ("_matrix-fed._tcp.", "_matrix._tcp."):
            records = [r for r in await self.dns.srv(service + hostname) if r.target not in ("", ".")]
            if records:
                return [Destination(r.target.rstrip("."), r.port, host_header, hostname) for r in _ordered(records)]
        return [Destination(hostname, DEFAULT_PORT, host_header, hostname)]

    async def _well_known(self, hostname: str) -> WellKnown:
        now = self.clock()
        cached = self.cache.get(hostname)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            answer = await self.fetcher.fetch(hostname)
        except Exception as e:  # any failure to fetch is "no well-known"
            log.info("well-known of %s: %s", hostname, e)
            answer = WellKnown(None, WELL_KNOWN_ERROR_S)
        backoff = 0.0
        if answer.server is None:
            # repeated failures back off: each doubles the time before the next attempt, up to an hour
            previous = cached[2] if cached is not None else 0.0
            backoff = min(previous * 2 if previous else WELL_KNOWN_ERROR_S, WELL_KNOWN_ERROR_MAX_S)
            answer = WellKnown(None, backoff)
        if answer.cache_s > 0:
            self.cache.put(hostname, (now + answer.cache_s, answer, backoff))
        else:
            self.cache.discard(hostname)
        return answer
