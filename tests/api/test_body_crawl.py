"""A crawl of every route that takes a JSON body: bad bodies get a 4xx with an errcode, never a 5xx,
and nothing they leave behind breaks anyone's /sync (issue 10).

Routes come from the server's own router: every POST, PUT and DELETE, under v3 when a route has
several prefixes (media uploads take raw bytes and are left out, and so is /logout). Each gets
bodies nested 50, 101, 260 and 1000 levels deep, a body over the size limit, every JSON type but an
object, and objects whose documented fields (tests/openapi) all hold one wrong type or a too-deep
value. The routes that store what they are given and re-send it later (to-device, account data,
tags, filters, pushers, keys, key backup, push rules) also get too-deep and just-acceptable values
where they are stored. Afterwards every user's /sync, initial and incremental, must answer 200: the
crawler's, the to-device recipient's device, and the other member of the room the crawl targeted;
so must the reads that re-encode stored values for other users (/keys/query, /keys/claim) and for
the owner.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web

from homeserver.api.http import BULK_JSON_BODY_LIMIT, JSON_BODY_LIMIT, MAX_BODY_DEPTH
from homeserver.api.routing import PathRoute

from .conftest import Harness, User
from .openapi_check import checker
from .rooms_helpers import create_room, join, q, send

NO_LIMITS = {"rate_limits": {"enabled": False}}
LEVELS = (50, 101, 260, 1000)
WRONG_TYPES: tuple[Any, ...] = ([], "text", 7, -1.5, None, True, [1, "x", None])
# Routes that end or change the crawler's session or membership run last, so the rest see a
# logged-in member of the room.
LATE = re.compile(r"/(logout|deactivate|leave|forget|kick|ban|upgrade|redact|delete_devices|password)\b")
# Media uploads take raw bytes with their own size limit; /logout takes no body and ends the session.
SKIP = re.compile(r"^/_matrix/media/|/logout(/all)?$")


def nested(levels: int, kind: str = "object") -> orjson.Fragment:
    """A value `levels` containers deep with a scalar at the bottom, as JSON text that orjson embeds
    as it is (its encoder stops at 255 levels, the very limit this test is about)."""
    start, end = (b'{"a":', b"}") if kind == "object" else (b"[", b"]")
    return orjson.Fragment(start * levels + b'"leaf"' + end * levels)


def json_routes(harness: Harness) -> list[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    app: web.Application = harness.client.app
    for resource in app.router.resources():
        for route in resource:
            if not isinstance(route, PathRoute) or route.method not in ("POST", "PUT", "DELETE"):
                continue
            if route.path.startswith("/_matrix/client/r0/") or SKIP.search(route.path):
                continue
            found.add((route.method, route.path))
    # DELETE last: most take no body and delete what they name whatever they are sent
    return sorted(found, key=lambda r: (r[0] == "DELETE", bool(LATE.search(r[1])), r[1], r[0]))


def documented_fields(method: str, path: str) -> list[str]:
    """The top-level fields the spec documents for a request body (none if undocumented)."""
    spec = checker()
    names: list[str] = []
    for op in spec.operations(method, path):
        body = spec.doc["paths"][op.key][method.lower()].get("requestBody") or {}
        schema = ((body.get("content") or {}).get("application/json") or {}).get("schema") or {}
        for part in [schema, *schema.get("allOf", [])]:
            names.extend(n for n in part.get("properties", {}) if n not in names)
    return names


class Crawl:
    def __init__(self, harness: Harness, alice: User, bob: User, room_id: str, event_id: str) -> None:
        self.h = harness
        self.alice, self.bob = alice, bob
        self.room_id, self.event_id = room_id, event_id
        self.txn = itertools.count()
        self.failures: list[str] = []
        self.sent = 0
        self.statuses: dict[str, int] = {}

    def fill(self, template: str) -> str:
        values = {
            "userId": self.alice.user_id,
            "roomId": self.room_id,
            "roomIdOrAlias": self.room_id,
            "eventId": self.event_id,
            "eventType": "org.example.crawl",
            "type": "org.example.crawl",
            "stateKey": "",
            "tag": "u.crawl",
            "deviceId": self.alice.device_id,
            "receiptType": "m.read",
            "roomAlias": "#crawl:hs.test",
            "serverName": "hs.test",
            "kind": "override",
            "ruleId": "crawl",
            "scope": "global",
            "attr": "actions",
            "version": "1",
            "sessionId": "crawl-session",
            "keyName": "displayname",
            "filterId": "0",
        }

        def value(m: re.Match[str]) -> str:
            name = m.group(1).split(":", 1)[0]
            if name == "txnId":
                return f"crawl{next(self.txn)}"
            return quote(values.get(name, "x"), safe="")

        return re.sub(r"\{([^}]+)\}", value, template)

    async def send(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else orjson.dumps(body)
        headers = {**self.alice.headers, "Content-Type": "application/json"}
        resp = await self.h.client.request(method, path, data=data, headers=headers)
        answer = await resp.read()
        self.sent += 1
        what = f"{method} {path} with {data[:60]!r}: {resp.status} {answer[:200]!r}"
        if resp.status >= 500:
            self.failures.append(what)
        elif resp.status >= 400:
            try:
                error = orjson.loads(answer)
            except orjson.JSONDecodeError:
                error = None
            # spec: "User-interactive authentication API" — a 401 may be the flows, without errcode
            uia = resp.status == 401 and isinstance(error, dict) and "flows" in error
            # the OAuth 2.0 API's endpoints answer OAuth's errors (RFC 6749 5.2: `error`), not Matrix's
            oauth = path.startswith("/_homeserver/oauth/")
            oauth = oauth and isinstance(error, dict) and isinstance(error.get("error"), str)
            if not uia and not oauth and not (isinstance(error, dict) and isinstance(error.get("errcode"), str)):
                self.failures.append(f"no errcode: {what}")
        self.statuses[str(resp.status)] = self.statuses.get(str(resp.status), 0) + 1
        return resp.status, answer

    def bodies(self, method: str, path: str) -> Iterator[Any]:
        for levels in LEVELS:
            yield nested(levels)
        for levels in (101, 1000):
            yield nested(levels, "array")
        yield from WRONG_TYPES
        fields = documented_fields(method, path)
        if fields:
            for wrong in (*WRONG_TYPES, {}, nested(MAX_BODY_DEPTH + 1), nested(260)):
                yield {name: wrong for name in fields}

    async def crawl(self, method: str, template: str) -> None:
        path = template if "{" not in template else None
        for body in self.bodies(method, template):
            await self.send(method, path or self.fill(template), body)
        oversized = b'{"a":"' + b"x" * JSON_BODY_LIMIT + b'"}'
        await self.send(method, path or self.fill(template), raw=oversized)


def stored_shapes(alice: User, bob: User, room_id: str, event_id: str) -> Iterator[tuple[str, str, Any]]:
    """(method, path, body) that put a deep value where a route stores it."""
    base = f"user/{q(alice.user_id)}"
    for levels in (20, MAX_BODY_DEPTH - 3, MAX_BODY_DEPTH + 1, 252, 260):
        v = nested(levels)
        yield "PUT", "sendToDevice/m.crawl/deep{}", {"messages": {bob.user_id: {bob.device_id: v}}}
        yield "PUT", "sendToDevice/m.crawl/star{}", {"messages": {bob.user_id: {"*": v}}}
        yield "PUT", f"{base}/account_data/m.crawl.{levels}", v
        yield "PUT", f"{base}/rooms/{q(room_id)}/account_data/m.crawl.{levels}", v
        yield "PUT", f"{base}/rooms/{q(room_id)}/tags/u.{levels}", {"order": 0.5, "x": v}
        yield "POST", f"{base}/filter", {"room": {"timeline": {"limit": 5}}, "x": v}
        pusher: dict[str, Any] = {"app_id": "a", "pushkey": f"k{levels}", "kind": "http", "lang": "en"}
        pusher |= {"app_display_name": "a", "device_display_name": "d"}
        yield "POST", "pushers/set", {**pusher, "data": {"url": "https://p.example/_matrix/push/v1/notify", "x": v}}
        yield "PUT", f"pushrules/global/override/r{levels}", {"actions": [{"set_tweak": "x", "value": v}]}
        otk = {f"signed_curve25519:K{levels}": {"key": "k", "signatures": v}, f"curve25519:C{levels}": v}
        yield "POST", "keys/upload", {"one_time_keys": otk, "fallback_keys": {f"signed_curve25519:F{levels}": v}}
        yield "POST", "keys/device_signing/upload", {"master_key": {"user_id": alice.user_id, "usage": v}}
        session = {"first_message_index": 0, "forwarded_count": 0, "is_verified": False, "session_data": v}
        yield "PUT", "room_keys/keys?version=1", {"rooms": {room_id: {"sessions": {f"s{levels}": session}}}}
        yield "PUT", f"devices/{q(alice.device_id)}", {"display_name": v}
        yield "PUT", f"presence/{q(alice.user_id)}/status", {"presence": "online", "status_msg": v}
        yield "POST", f"rooms/{q(room_id)}/receipt/m.read/{q(event_id)}", {"thread_id": "main", "x": v}


async def assert_everyone_syncs(h: Harness, crawl: Crawl, since: dict[str, str]) -> None:
    for user in (crawl.alice, crawl.bob):
        for query in ("timeout=0", "timeout=0&full_state=true", f"timeout=0&since={since[user.user_id]}"):
            status, body = await h.request("GET", f"sync?{query}", user)
            assert status == 200, (user.user_id, query, body)
    # the reads that re-encode what the crawl stored, for other users and for the owner
    alice = crawl.alice.user_id
    for user, method, path, body in [
        (crawl.bob, "POST", "keys/query", {"device_keys": {alice: []}}),
        (crawl.bob, "POST", "keys/claim", {"one_time_keys": {alice: {crawl.alice.device_id: "signed_curve25519"}}}),
        (crawl.alice, "GET", "pushers", None),
        (crawl.alice, "GET", "pushrules/", None),
        (crawl.alice, "GET", "room_keys/keys?version=1", None),
        (crawl.alice, "GET", f"user/{q(alice)}/filter/0", None),
        (crawl.alice, "GET", "devices", None),
        (crawl.bob, "GET", f"presence/{q(alice)}/status", None),
    ]:
        status, answer = await h.request(method, path, user, json=body)
        assert status < 500, (method, path, answer)


@pytest.mark.parametrize("harness", [NO_LIMITS], indirect=True)
async def test_bad_bodies_never_5xx_and_everyone_still_syncs(harness: Harness) -> None:
    started = time.monotonic()
    h = harness
    alice, bob = await h.user("alice"), await h.user("bob")
    room_id = await create_room(h, alice, preset="public_chat")
    await join(h, bob, room_id)
    event_id = await send(h, bob, room_id, "target")
    status, _ = await h.request(
        "POST", "room_keys/version", alice, json={"algorithm": "m.megolm_backup.v1", "auth_data": {}}
    )
    assert status == 200
    since = {}
    for user in (alice, bob):
        status, body = await h.request("GET", "sync?timeout=0", user)
        assert status == 200
        since[user.user_id] = body["next_batch"]

    crawl = Crawl(h, alice, bob, room_id, event_id)
    routes = json_routes(h)
    assert len(routes) > 60  # the router was read, not an empty list
    for method, path, body in stored_shapes(alice, bob, room_id, event_id):
        await crawl.send(method, "/_matrix/client/v3/" + path.format(next(crawl.txn)), body)
    for method, template in routes:
        await crawl.crawl(method, template)
    assert not crawl.failures, "\n".join(crawl.failures[:40])
    await assert_everyone_syncs(h, crawl, since)
    elapsed = time.monotonic() - started
    print(f"body crawl: {len(routes)} routes, {crawl.sent} requests, {elapsed:.1f} s, statuses {crawl.statuses}")


async def test_size_limits_answer_413(harness: Harness) -> None:
    """The size policy: JSON_BODY_LIMIT for a body, BULK_JSON_BODY_LIMIT for the end-to-end batch
    routes, and the caps of values that are stored and re-sent (to-device content, account data)."""
    h = harness
    alice, bob = await h.user("alice"), await h.user("bob")
    room_id = await create_room(h, alice)
    base = f"user/{q(alice.user_id)}"

    def filler(size: int) -> dict[str, str]:
        return {"x": "y" * size}

    cases: list[tuple[str, str, Any, int]] = [
        ("PUT", f"{base}/account_data/x.big", filler(256 * 1024), 413),
        ("PUT", f"{base}/account_data/x.fine", filler(200 * 1024), 200),
        ("PUT", f"{base}/rooms/{q(room_id)}/account_data/x.big", filler(256 * 1024), 413),
        ("PUT", f"{base}/rooms/{q(room_id)}/tags/{'t' * 256}", {}, 400),
        ("PUT", f"{base}/rooms/{q(room_id)}/tags/{'t' * 255}", {}, 200),
        ("PUT", "sendToDevice/m.x/big", {"messages": {bob.user_id: {bob.device_id: filler(64 * 1024)}}}, 413),
        ("PUT", "sendToDevice/m.x/fine", {"messages": {bob.user_id: {bob.device_id: filler(60 * 1024)}}}, 200),
        # a batch of to-device messages larger than a plain body is fine: one per device
        (
            "PUT",
            "sendToDevice/m.x/batch",
            {"messages": {bob.user_id: {f"D{i}": filler(60 * 1024) for i in range(40)}}},
            200,
        ),
        ("POST", f"{base}/filter", filler(JSON_BODY_LIMIT), 413),
        ("PUT", f"devices/{q(alice.device_id)}", {"display_name": "d" * 101}, 400),
        ("PUT", f"presence/{q(alice.user_id)}/status", {"presence": "online", "status_msg": "s" * 1025}, 400),
        ("PUT", "sendToDevice/m.x/huge", filler(BULK_JSON_BODY_LIMIT), 413),
    ]
    for method, path, body, expected in cases:
        status, answer = await h.request(method, path, alice, json=body)
        assert status == expected, (path, status, answer)
        if status >= 400:
            assert answer["errcode"] == "M_TOO_LARGE" if status == 413 else answer["errcode"].startswith("M_"), answer
    for user in (alice, bob):
        status, _ = await h.request("GET", "sync?timeout=0", user)
        assert status == 200


@pytest.mark.parametrize(
    ("depth", "status"), [(MAX_BODY_DEPTH, 200), (MAX_BODY_DEPTH + 1, 400), (1000, 400), (5000, 400)]
)
async def test_nesting_limit_is_exact(harness: Harness, depth: int, status: int) -> None:
    """Values may sit MAX_BODY_DEPTH levels below the top of a body (the rule canonical JSON applies
    to events); one level more is 400 M_BAD_JSON, also past orjson's own parsing limit."""
    alice = await harness.user("alice")
    path = f"user/{q(alice.user_id)}/account_data/x.d"
    got, answer = await harness.request("PUT", path, alice, data=orjson.dumps(nested(depth)))
    assert got == status, answer
    if status == 400:
        assert answer["errcode"] == "M_BAD_JSON"
