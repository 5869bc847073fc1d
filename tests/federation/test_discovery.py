"""Server discovery's decision table, every branch, with a fake DNS and well-known fetcher.

spec: server-server-api "Resolving server names".
"""

from __future__ import annotations

import pytest

from federation.addresses import AddressPolicy
from federation.discovery import (
    Destination,
    ServerResolver,
    SrvRecord,
    WellKnown,
    cache_seconds,
    parse_well_known,
)
from storage.cache import LruCache


class FakeDns:
    def __init__(self, srv: dict[str, list[SrvRecord]] | None = None) -> None:
        self.records = srv or {}
        self.asked: list[str] = []

    async def srv(self, name: str) -> list[SrvRecord]:
        self.asked.append(name)
        return self.records.get(name, [])


class FakeWellKnown:
    def __init__(self, answers: dict[str, WellKnown | Exception]) -> None:
        self.answers = answers
        self.fetched: list[str] = []

    async def fetch(self, hostname: str) -> WellKnown:
        self.fetched.append(hostname)
        answer = self.answers.get(hostname, WellKnown(None, 60))
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolver(
    srv: dict[str, list[SrvRecord]] | None = None, wk: dict[str, WellKnown | Exception] | None = None
) -> tuple[ServerResolver, FakeDns, FakeWellKnown, Clock]:
    dns, fetcher, clock = FakeDns(srv), FakeWellKnown(wk or {}), Clock()
    return ServerResolver(dns, fetcher, LruCache("wk", 100), clock=clock), dns, fetcher, clock


def ok(server: str) -> WellKnown:
    return WellKnown(server, 3600)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1.2.3.4", Destination("1.2.3.4", 8448, "1.2.3.4", None)),  # 1: IP literal, default port
        ("1.2.3.4:8000", Destination("1.2.3.4", 8000, "1.2.3.4:8000", None)),
        ("[2001:db8::1]", Destination("2001:db8::1", 8448, "[2001:db8::1]", None)),
        ("[2001:db8::1]:443", Destination("2001:db8::1", 443, "[2001:db8::1]:443", None)),
        ("example.org:8000", Destination("example.org", 8000, "example.org:8000", "example.org")),  # 2
    ],
)
async def test_literals_and_explicit_ports_need_no_lookups(name: str, expected: Destination) -> None:
    r, dns, fetcher, _ = resolver()
    assert await r.resolve(name) == [expected]
    assert dns.asked == [] and fetcher.fetched == []


@pytest.mark.parametrize(
    ("delegated", "srv", "expected"),
    [
        ("5.6.7.8", {}, Destination("5.6.7.8", 8448, "5.6.7.8", None)),  # 3.1
        ("5.6.7.8:9000", {}, Destination("5.6.7.8", 9000, "5.6.7.8:9000", None)),
        ("[2001:db8::2]:9000", {}, Destination("2001:db8::2", 9000, "[2001:db8::2]:9000", None)),
        (
            "matrix.example.net:9000",
            {},
            Destination("matrix.example.net", 9000, "matrix.example.net:9000", "matrix.example.net"),
        ),  # 3.2
        (  # 3.3: SRV _matrix-fed of the delegated name; Host and certificate stay the delegated name
            "matrix.example.net",
            {"_matrix-fed._tcp.matrix.example.net": [SrvRecord(10, 5, "fed.example.net.", 8443)]},
            Destination("fed.example.net", 8443, "matrix.example.net", "matrix.example.net"),
        ),
        (  # 3.4: the deprecated _matrix SRV when there is no _matrix-fed one
            "matrix.example.net",
            {"_matrix._tcp.matrix.example.net": [SrvRecord(10, 5, "old.example.net.", 8449)]},
            Destination("old.example.net", 8449, "matrix.example.net", "matrix.example.net"),
        ),
        (
            "matrix.example.net",
            {},
            Destination("matrix.example.net", 8448, "matrix.example.net", "matrix.example.net"),
        ),  # 3.5
    ],
)
async def test_well_known_delegation(delegated: str, srv: dict[str, list[SrvRecord]], expected: Destination) -> None:
    r, dns, fetcher, _ = resolver(srv, {"example.org": ok(delegated)})
    assert await r.resolve("example.org") == [expected]
    assert fetcher.fetched == ["example.org"]
    assert not any(name.endswith("example.org") for name in dns.asked)  # SRV of the delegated name only


async def test_srv_prefers_matrix_fed_over_the_deprecated_service() -> None:
    srv = {
        "_matrix-fed._tcp.matrix.example.net": [SrvRecord(10, 0, "new.example.net", 1)],
        "_matrix._tcp.matrix.example.net": [SrvRecord(10, 0, "old.example.net", 2)],
    }
    r, dns, _, _ = resolver(srv, {"example.org": ok("matrix.example.net")})
    assert [d.target for d in await r.resolve("example.org")] == ["new.example.net"]
    assert dns.asked == ["_matrix-fed._tcp.matrix.example.net"]


@pytest.mark.parametrize(
    ("srv", "expected"),
    [
        (  # 4: SRV _matrix-fed of the hostname; Host and certificate: the hostname
            {"_matrix-fed._tcp.example.org": [SrvRecord(1, 1, "fed.example.org.", 8443)]},
            Destination("fed.example.org", 8443, "example.org", "example.org"),
        ),
        (  # 5: deprecated _matrix SRV
            {"_matrix._tcp.example.org": [SrvRecord(1, 1, "old.example.org.", 8449)]},
            Destination("old.example.org", 8449, "example.org", "example.org"),
        ),
        ({}, Destination("example.org", 8448, "example.org", "example.org")),  # 6
        (  # a "." target means "no service here": ignored like no record
            {"_matrix-fed._tcp.example.org": [SrvRecord(1, 1, ".", 0)]},
            Destination("example.org", 8448, "example.org", "example.org"),
        ),
    ],
)
async def test_without_well_known(srv: dict[str, list[SrvRecord]], expected: Destination) -> None:
    r, _, _, _ = resolver(srv, {"example.org": WellKnown(None, 60)})
    assert (await r.resolve("example.org"))[0] == expected


async def test_srv_targets_come_in_priority_order() -> None:
    srv = {
        "_matrix-fed._tcp.example.org": [
            SrvRecord(20, 0, "c.example.org", 3),
            SrvRecord(10, 50, "a.example.org", 1),
            SrvRecord(10, 50, "b.example.org", 2),
        ]
    }
    r, _, _, _ = resolver(srv)
    targets = [d.target for d in await r.resolve("example.org")]
    assert set(targets[:2]) == {"a.example.org", "b.example.org"} and targets[2] == "c.example.org"


async def test_well_known_answers_and_errors_are_cached_with_backoff() -> None:
    r, _, fetcher, clock = resolver(wk={"good.example": ok("m.good.example:443"), "bad.example": OSError("refused")})
    for _ in range(3):
        await r.resolve("good.example")
    assert fetcher.fetched == ["good.example"]  # cached for the answer's time
    clock.now += 3601
    await r.resolve("good.example")
    assert fetcher.fetched.count("good.example") == 2
    # errors: cached a minute, then two, four... never beyond an hour
    waits = []
    for _ in range(9):
        before = len(fetcher.fetched)
        await r.resolve("bad.example")
        assert len(fetcher.fetched) == before + 1
        cached = r.cache.peek("bad.example")
        assert cached is not None
        waits.append(cached[0] - clock.now)
        await r.resolve("bad.example")  # within the wait: no new fetch
        assert len(fetcher.fetched) == before + 1
        clock.now += waits[-1] + 1
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]


@pytest.mark.parametrize(
    ("status", "body", "server"),
    [
        (200, {"m.server": "matrix.example.org:443"}, "matrix.example.org:443"),
        (200, {"m.server": "not a server name!"}, None),
        (200, {"m.server": 5}, None),
        (200, {}, None),
        (200, ["m.server"], None),
        (404, {"m.server": "matrix.example.org"}, None),
    ],
)
def test_well_known_validity(status: int, body: object, server: str | None) -> None:
    assert parse_well_known(status, body, None).server == server


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, 86400),
        ("max-age=600", 600),
        ("public, max-age=3600", 3600),
        ("max-age=999999999", 172800),  # at most 48 h
        ("no-store", 0),
        ("max-age=abc", 86400),
    ],
)
def test_cache_control(header: str | None, seconds: int) -> None:
    assert cache_seconds(header) == seconds


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.1.1", False),
        ("172.16.0.1", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("not an ip", False),
    ],
)
def test_address_policy(address: str, allowed: bool) -> None:
    assert AddressPolicy().permits(address) is allowed


def test_address_policy_allow_list() -> None:
    policy = AddressPolicy(["127.0.0.0/8", "fd00::/8"])
    assert policy.permits("127.0.0.1") and policy.permits("::ffff:127.0.0.2") and policy.permits("fd12::1")
    assert not policy.permits("10.0.0.1")
