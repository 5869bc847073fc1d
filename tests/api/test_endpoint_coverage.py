"""Does the server serve every client-server endpoint of the spec (v1.19)?

Every non-deprecated client-server operation in `tests/openapi/endpoints.tsv`, less the end-to-end
encryption ones (keys, room_keys, sendToDevice, dehydrated devices) and the application-service
ones, is called on a live in-process server with a logged-in user's token and plausible path
parameters. An endpoint counts as served unless the answer is `M_UNRECOGNIZED` (404: no such path,
405: no such method on the path); any other status, errors included, means a handler answered.

The figure (`client-server coverage: N/M endpoints`) is written to the terminal even when output
is captured, and the test fails listing every endpoint still missing. Every answer also goes
through the OpenAPI response check of `Harness.request`; mismatches are listed too.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from .conftest import Harness, User
from .openapi_check import OpenAPIMismatch

ENDPOINTS_FILE = Path(__file__).resolve().parents[1] / "openapi" / "endpoints.tsv"
CALL_TIMEOUT_S = 10.0

# Out of scope here: end-to-end encryption has its own work and tests; appservices are not served.
EXCLUDED_MARKERS = ("/keys/", "/room_keys/", "/sendToDevice/", "dehydrated_device", "/appservice")
# Operations whose documented answer, on a server without the feature, is 404 M_UNRECOGNIZED itself.
# spec: GET /_matrix/client/v1/auth_metadata — "404 With M_UNRECOGNIZED: the homeserver does not
# support the OAuth 2.0 API" (this server offers the legacy login API).
SPEC_UNRECOGNIZED_ANSWERS = {"getAuthMetadata"}


@dataclass(frozen=True)
class Endpoint:
    method: str
    template: str
    operation_ids: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def in_scope_endpoints() -> list[Endpoint]:
    ops: dict[tuple[str, str], list[str]] = {}
    with ENDPOINTS_FILE.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["api"] != "client-server" or row["deprecated"] != "no":
                continue
            if any(marker in row["path"] for marker in EXCLUDED_MARKERS):
                continue
            ops.setdefault((row["method"], row["path"]), []).append(row["operationId"])
    return [Endpoint(m, p, tuple(ids)) for (m, p), ids in sorted(ops.items(), key=lambda kv: kv[0][1])]


@dataclass
class Call:
    """How to call one endpoint: parameter overrides, query, body, and which user."""

    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    raw: bytes | None = None  # a non-JSON body (media uploads)
    as_victim: bool = False  # destructive calls use a second account
    order: int = 1  # 0: first (they make ids later calls use), 2: last (they change or end sessions)


# Calls that need more than the defaults (an empty JSON object for POST/PUT, no query).
CALLS: dict[str, Call] = {
    "POST /_matrix/client/v3/createRoom": Call(body={"name": "coverage"}, order=0),
    "PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}": Call(
        body={"msgtype": "m.text", "body": "hello"}, order=0
    ),
    "POST /_matrix/media/v3/upload": Call(raw=b"coverage", order=0),
    "PUT /_matrix/media/v3/upload/{serverName}/{mediaId}": Call(raw=b"coverage"),
    "POST /_matrix/client/v3/user/{userId}/filter": Call(body={"room": {"timeline": {"limit": 5}}}, order=0),
    "GET /_matrix/client/v3/sync": Call(query={"timeout": "0"}),
    "GET /_matrix/client/v3/events": Call(query={"timeout": "0"}),
    "GET /_matrix/client/v3/rooms/{roomId}/messages": Call(query={"dir": "b", "limit": "5"}),
    "GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event": Call(query={"ts": "0", "dir": "f"}),
    "GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}": Call(query={"width": "32", "height": "32"}),
    "GET /_matrix/client/v1/media/preview_url": Call(query={"url": "http://127.0.0.1:9/"}),
    "GET /_matrix/client/v1/register/m.login.registration_token/validity": Call(query={"token": "nope"}),
    "GET /_matrix/client/v3/register/available": Call(query={"username": "coverage-free"}),
    "GET /_matrix/client/v3/thirdparty/location": Call(query={"alias": "#irc:example.org"}),
    "GET /_matrix/client/v3/thirdparty/user": Call(query={"userid": "@irc_x:example.org"}),
    "GET /_matrix/client/v1/mutual_rooms": Call(query={"user_id": "@victim:hs.test"}),
    "GET /_matrix/client/v3/login/sso/redirect": Call(query={"redirectUrl": "http://127.0.0.1:9/"}),
    "GET /_matrix/client/v3/login/sso/redirect/{idpId}": Call(query={"redirectUrl": "http://127.0.0.1:9/"}),
    "POST /_matrix/client/v3/search": Call(body={"search_categories": {"room_events": {"search_term": "hello"}}}),
    "POST /_matrix/client/v3/user_directory/search": Call(body={"search_term": "vic", "limit": 5}),
    "POST /_matrix/client/v3/login": Call(
        body={"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "nobody"}, "password": "x"}
    ),
    "POST /_matrix/client/v3/register": Call(body={"username": "coverage-new", "password": "p"}),
    "POST /_matrix/client/v3/refresh": Call(body={"refresh_token": "not-a-token"}),
    "PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}": Call(
        params={"eventType": "m.room.topic", "stateKey": ""}, body={"topic": "coverage"}
    ),
    "GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}": Call(
        params={"eventType": "m.room.create", "stateKey": ""}
    ),
    "PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}": Call(body={"typing": True, "timeout": 1000}),
    "POST /_matrix/client/v3/rooms/{roomId}/read_markers": Call(body={}),
    "PUT /_matrix/client/v3/profile/{userId}/{keyName}": Call(body={"displayname": "Coverage"}),
    "PUT /_matrix/client/v3/presence/{userId}/status": Call(body={"presence": "online"}),
    "PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}": Call(
        params={"kind": "override", "ruleId": "org.example.coverage"}, body={"actions": [], "conditions": []}
    ),
    "PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/actions": Call(body={"actions": []}),
    "PUT /_matrix/client/v3/pushrules/global/{kind}/{ruleId}/enabled": Call(body={"enabled": True}),
    "DELETE /_matrix/client/v3/pushrules/global/{kind}/{ruleId}": Call(
        params={"kind": "override", "ruleId": "org.example.coverage"}
    ),
    "PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}": Call(body={"order": 0.5}),
    "PUT /_matrix/client/v3/directory/room/{roomAlias}": Call(body={"room_id": "{roomId}"}),
    "PUT /_matrix/client/v3/directory/list/room/{roomId}": Call(body={"visibility": "private"}),
    "POST /_matrix/client/v3/rooms/{roomId}/invite": Call(body={"user_id": "@victim:hs.test"}),
    "POST /_matrix/client/v3/rooms/{roomId}/kick": Call(body={"user_id": "@victim:hs.test"}, order=2),
    "POST /_matrix/client/v3/rooms/{roomId}/ban": Call(body={"user_id": "@victim:hs.test"}, order=2),
    "POST /_matrix/client/v3/rooms/{roomId}/unban": Call(body={"user_id": "@victim:hs.test"}, order=2),
    "POST /_matrix/client/v3/rooms/{roomId}/upgrade": Call(body={"new_version": "11"}, order=2),
    "POST /_matrix/client/v3/rooms/{roomId}/leave": Call(order=2),
    "POST /_matrix/client/v3/rooms/{roomId}/forget": Call(order=2),
    "PUT /_matrix/client/v1/admin/lock/{userId}": Call(params={"userId": "@victim:hs.test"}, body={"locked": False}),
    "PUT /_matrix/client/v1/admin/suspend/{userId}": Call(
        params={"userId": "@victim:hs.test"}, body={"suspended": False}
    ),
    "POST /_matrix/client/v3/pushers/set": Call(
        body={"pushkey": "k", "kind": None, "app_id": "org.example.coverage"}  # kind null: delete (none exists)
    ),
    # These end or change the victim's sessions and account: last, and never on the main user.
    "DELETE /_matrix/client/v3/devices/{deviceId}": Call(as_victim=True, order=2),
    "POST /_matrix/client/v3/delete_devices": Call(body={"devices": ["NOSUCHDEVICE"]}, as_victim=True, order=2),
    "POST /_matrix/client/v3/account/password": Call(body={"new_password": "x"}, as_victim=True, order=2),
    "POST /_matrix/client/v3/account/deactivate": Call(as_victim=True, order=3),
    "POST /_matrix/client/v3/logout": Call(as_victim=True, order=4),
    "POST /_matrix/client/v3/logout/all": Call(as_victim=True, order=5),
}


@dataclass
class Context:
    """Ids the calls use: real ones where an earlier call made them, plausible ones otherwise."""

    user: User
    victim: User
    values: dict[str, str]
    txn: int = 0

    def param(self, name: str, endpoint: Endpoint) -> str:
        if name == "txnId":
            self.txn += 1
            return f"cov{self.txn}"
        if name == "deviceId":
            return self.victim.device_id
        return self.values[name]


def default_values(user: User, server_name: str) -> dict[str, str]:
    return {
        "userId": user.user_id,
        "roomId": f"!nosuchroom:{server_name}",
        "roomIdOrAlias": f"!nosuchroom:{server_name}",
        "eventId": "$nosuchevent",
        "roomAlias": f"#coverage:{server_name}",
        "serverName": server_name,
        "mediaId": "nosuchmedia",
        "fileName": "coverage.txt",
        "eventType": "m.room.message",
        "stateKey": "",
        "receiptType": "m.read",
        "kind": "override",
        "ruleId": ".m.rule.master",
        "type": "org.example.coverage",
        "tag": "u.coverage",
        "filterId": "0",
        "keyName": "displayname",
        "protocol": "irc",
        "relType": "m.annotation",
        "idpId": "oidc",
    }


def _fill(template: str, ctx: Context, endpoint: Endpoint, overrides: dict[str, str]) -> str:
    out = []
    for part in template.split("/"):
        if part.startswith("{") and part.endswith("}"):
            name = part[1:-1]
            value = overrides[name] if name in overrides else ctx.param(name, endpoint)
            out.append(quote(value, safe=""))
        else:
            out.append(part)
    return "/".join(out)


def _learn(ctx: Context, endpoint: Endpoint, status: int, body: Any) -> None:
    """Keep the ids that creating calls returned, so later calls address real things."""
    if status != 200 or not isinstance(body, dict):
        return
    key = str(endpoint)
    if key == "POST /_matrix/client/v3/createRoom" and isinstance(body.get("room_id"), str):
        ctx.values["roomId"] = ctx.values["roomIdOrAlias"] = body["room_id"]
    elif key.startswith("PUT /_matrix/client/v3/rooms/{roomId}/send/") and isinstance(body.get("event_id"), str):
        ctx.values["eventId"] = body["event_id"]
    elif key == "POST /_matrix/media/v3/upload" and str(body.get("content_uri", "")).startswith("mxc://"):
        server, _, media = body["content_uri"][len("mxc://") :].partition("/")
        ctx.values["serverName"], ctx.values["mediaId"] = server, media
    elif key == "POST /_matrix/client/v3/user/{userId}/filter" and isinstance(body.get("filter_id"), str):
        ctx.values["filterId"] = body["filter_id"]


@dataclass
class Outcome:
    endpoint: Endpoint
    status: int | None
    errcode: str | None
    problem: str | None = None  # OpenAPI mismatch or timeout

    @property
    def missing(self) -> bool:
        if set(self.endpoint.operation_ids) & SPEC_UNRECOGNIZED_ANSWERS and self.status == 404:
            return False
        return self.errcode == "M_UNRECOGNIZED" and self.status in (404, 405)


async def call(harness: Harness, ctx: Context, endpoint: Endpoint) -> Outcome:
    spec = CALLS.get(str(endpoint), Call())
    user = ctx.victim if spec.as_victim else ctx.user
    overrides = {k: v.format(**ctx.values) for k, v in spec.params.items()}
    path = _fill(endpoint.template, ctx, endpoint, overrides)
    kw: dict[str, Any] = {"params": spec.query or None, "allow_redirects": False}
    body = spec.body
    if isinstance(body, dict):
        body = {k: v.format(**ctx.values) if isinstance(v, str) and "{" in v else v for k, v in body.items()}
    if spec.raw is not None:
        kw["data"] = spec.raw
        kw["headers"] = {"Content-Type": "text/plain"}
    elif body is None and endpoint.method in ("POST", "PUT"):
        body = {}
    try:
        status, answer = await asyncio.wait_for(
            harness.request(endpoint.method, path, user, json=body, **kw), CALL_TIMEOUT_S
        )
    except OpenAPIMismatch as e:
        return Outcome(endpoint, None, None, problem=str(e))
    except TimeoutError:
        return Outcome(endpoint, None, None, problem=f"no answer within {CALL_TIMEOUT_S:.0f} s")
    _learn(ctx, endpoint, status, answer)
    errcode = answer.get("errcode") if isinstance(answer, dict) else None
    return Outcome(endpoint, status, errcode)


def report(line: str, capsys: pytest.CaptureFixture[str], record: Callable[[str, object], None]) -> None:
    """Show `line` in the plain `pytest -q` output, with or without xdist (workers share stderr)."""
    record("client_server_coverage", line)
    with capsys.disabled():
        sys.stderr.write(f"\n{line}\n")
        sys.stderr.flush()


@pytest.mark.asyncio
async def test_every_client_server_endpoint_is_served(
    harness: Harness, capsys: pytest.CaptureFixture[str], record_property: Callable[[str, object], None]
) -> None:
    endpoints = in_scope_endpoints()
    assert len(endpoints) > 120, "endpoints.tsv lost rows"
    user = await harness.user("coverage")
    victim = await harness.user("victim")
    ctx = Context(user, victim, default_values(user, harness.hs.server_name))

    ordered = sorted(endpoints, key=lambda e: CALLS.get(str(e), Call()).order)
    outcomes = [await call(harness, ctx, e) for e in ordered]

    missing = [o for o in outcomes if o.missing]
    problems = [o for o in outcomes if o.problem is not None]
    served = len(endpoints) - len(missing)
    report(f"client-server coverage: {served}/{len(endpoints)} endpoints", capsys, record_property)

    lines = []
    if missing:
        lines.append(f"{len(missing)} endpoints answer M_UNRECOGNIZED:")
        lines += [f"  {o.endpoint}  ({', '.join(o.endpoint.operation_ids)}) -> {o.status}" for o in missing]
    if problems:
        lines.append(f"{len(problems)} endpoints answered with a problem:")
        lines += [f"  {o.endpoint}: {o.problem}" for o in problems]
    if lines:
        pytest.fail(f"client-server coverage: {served}/{len(endpoints)} endpoints\n" + "\n".join(lines), pytrace=False)
