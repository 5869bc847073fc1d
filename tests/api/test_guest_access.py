"""Guests may call exactly the endpoints the spec's guest access module lists.

spec: client-server-api modules/guest_access.md "Client behaviour" (v1.19). The matrix walks every
client-server operation of the spec that needs an access token (tests/openapi/endpoints.tsv) with a
guest's token: the listed ones answer 200, every other one 403 `M_GUEST_ACCESS_FORBIDDEN`.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path
from typing import Any

from .conftest import Harness, User
from .rooms_helpers import create_room, q, send
from .test_media import upload
from .test_media_thumbnails import png

ENDPOINTS = Path(__file__).resolve().parents[1] / "openapi" / "endpoints.tsv"
V3 = "/_matrix/client/v3"
V1 = "/_matrix/client/v1"

# The spec's list, written out here (not taken from the server) so the test checks the code against it.
GUEST_ALLOWED = {
    # for retrieving events and associated media
    ("GET", f"{V3}/rooms/{{roomId}}/state"),
    ("GET", f"{V3}/rooms/{{roomId}}/context/{{eventId}}"),
    ("GET", f"{V3}/rooms/{{roomId}}/event/{{eventId}}"),
    ("GET", f"{V3}/rooms/{{roomId}}/state/{{eventType}}/{{stateKey}}"),
    ("GET", f"{V3}/rooms/{{roomId}}/messages"),
    ("GET", f"{V3}/rooms/{{roomId}}/members"),
    ("GET", f"{V3}/rooms/{{roomId}}/initialSync"),
    ("GET", f"{V3}/sync"),
    ("GET", f"{V3}/events"),
    ("GET", f"{V1}/media/download/{{serverName}}/{{mediaId}}"),
    ("GET", f"{V1}/media/download/{{serverName}}/{{mediaId}}/{{fileName}}"),
    ("GET", f"{V1}/media/thumbnail/{{serverName}}/{{mediaId}}"),
    # for sending events
    ("POST", f"{V3}/rooms/{{roomId}}/join"),
    ("POST", f"{V3}/rooms/{{roomId}}/leave"),
    ("PUT", f"{V3}/rooms/{{roomId}}/send/{{eventType}}/{{txnId}}"),
    ("PUT", f"{V3}/rooms/{{roomId}}/state/{{eventType}}/{{stateKey}}"),
    ("PUT", f"{V3}/sendToDevice/{{eventType}}/{{txnId}}"),
    # for their own account maintenance (profile: the display name only, below)
    ("PUT", f"{V3}/profile/{{userId}}/{{keyName}}"),
    ("DELETE", f"{V3}/profile/{{userId}}/{{keyName}}"),
    ("GET", f"{V3}/devices"),
    ("GET", f"{V3}/devices/{{deviceId}}"),
    ("PUT", f"{V3}/devices/{{deviceId}}"),
    ("GET", f"{V3}/account/whoami"),
    # for end-to-end encryption
    ("POST", f"{V3}/keys/upload"),
    ("POST", f"{V3}/keys/query"),
    ("POST", f"{V3}/keys/claim"),
}
# Answered to anyone (the token is optional and changes nothing here).
PUBLIC = {("GET", "/_matrix/client/versions")}
# Application-service operations: a user's token is not the credential they take.
APPSERVICE_ONLY = {
    ("POST", f"{V1}/appservice/{{appserviceId}}/ping"),
    ("PUT", f"{V3}/directory/list/appservice/{{networkId}}/{{roomId}}"),
}
# Deprecated operations this server does not serve: 404 M_UNRECOGNIZED for everyone.
NOT_SERVED = {("GET", f"{V3}/events/{{eventId}}"), ("GET", f"{V3}/initialSync")}

# Bodies the allowed operations accept (anything else sends `{}`).
BODIES: dict[tuple[str, str], Any] = {
    ("PUT", f"{V3}/rooms/{{roomId}}/send/{{eventType}}/{{txnId}}"): {"msgtype": "m.text", "body": "guest says hi"},
    ("PUT", f"{V3}/sendToDevice/{{eventType}}/{{txnId}}"): {"messages": {}},
    ("PUT", f"{V3}/profile/{{userId}}/{{keyName}}"): {"displayname": "Guesty"},
    ("PUT", f"{V3}/devices/{{deviceId}}"): {"display_name": "guest phone"},
    ("POST", f"{V3}/keys/query"): {"device_keys": {}},
    ("POST", f"{V3}/keys/claim"): {"one_time_keys": {}},
}
QUERIES: dict[tuple[str, str], str] = {
    ("GET", f"{V3}/sync"): "timeout=0",
    ("GET", f"{V3}/events"): "timeout=0",
    ("GET", f"{V3}/rooms/{{roomId}}/messages"): "dir=b",
    ("GET", f"{V1}/media/thumbnail/{{serverName}}/{{mediaId}}"): "width=32&height=32&method=scale",
}


def operations() -> list[tuple[str, str, str]]:
    """(method, path template, requires_auth) of every client-server operation of the spec."""
    with ENDPOINTS.open(newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["api"] == "client-server"]
    # two operations share a path with a trailing space in the OpenAPI (see the spec README)
    return sorted({(r["method"], r["path"].strip(), r["requires_auth"]) for r in rows})


async def guest_user(harness: Harness) -> User:
    status, body = await harness.request("POST", "register?kind=guest", json={})
    assert status == 200, body
    return User(body["user_id"], body["device_id"], body["access_token"])


async def test_guest_matrix(harness: Harness) -> None:
    alice = await harness.user("alice")
    guest = await guest_user(harness)
    room = await create_room(
        harness,
        alice,
        preset="public_chat",
        initial_state=[{"type": "m.room.guest_access", "content": {"guest_access": "can_join"}}],
    )
    event_id = await send(harness, alice, room, "hello guests")
    mxc = await upload(harness, alice, png(64, 48), "image/png")
    server_name, media_id = mxc.removeprefix("mxc://").split("/")
    txns = itertools.count()
    values = {
        "roomId": room,
        "roomIdOrAlias": room,
        "roomAlias": "#guests:hs.test",
        "eventId": event_id,
        "userId": guest.user_id,
        "deviceId": guest.device_id,
        "serverName": server_name,
        "mediaId": media_id,
        "fileName": "picture.png",
        "eventType": "m.room.message",
        "receiptType": "m.read",
        "filterId": "1",
        "tag": "u.work",
        "type": "m.guest.test",
        "kind": "override",
        "ruleId": "my.rule",
        "relType": "m.thread",
        "protocol": "irc",
        "version": "1",
        "sessionId": "s",
        "idpId": "oidc",
        "keyName": "displayname",  # the one field guests may change; avatar_url below
    }

    def fill(method: str, template: str) -> str:
        path = template
        for name, value in values.items():
            path = path.replace("{" + name + "}", q(value))
        if "{txnId}" in path:
            path = path.replace("{txnId}", f"guest{next(txns)}")
        if "/state/{eventType}/{stateKey}" in template:
            # reading: the create event; writing: the guest's own membership (PL 0 may send it)
            event_type, state_key = ("m.room.create", "") if method == "GET" else ("m.room.member", guest.user_id)
            path = path.replace(f"/state/{q('m.room.message')}/{{stateKey}}", f"/state/{event_type}/{q(state_key)}")
        assert "{" not in path, f"no value for a variable in {template}"
        return path

    joined = False
    checked: list[str] = []
    wrong: list[str] = []
    for method, template, requires_auth in operations():
        op = (method, template)
        if requires_auth == "no" or op in PUBLIC or op in APPSERVICE_ONLY:
            continue
        if template == f"{V3}/rooms/{{roomId}}/leave":
            continue  # last, below: leaving ends the guest's access to the room
        if op in GUEST_ALLOWED and template.startswith(f"{V3}/rooms/") and not joined:
            status, body = await harness.request("POST", f"rooms/{q(room)}/join", guest, json={})
            assert status == 200, body
            joined = True
        path = fill(method, template)
        query = QUERIES.get(op)
        url = f"{path}?{query}" if query else path
        kwargs: dict[str, Any] = {}
        if method in ("PUT", "POST"):
            kwargs["json"] = BODIES.get(op, {})
        if "/state/m.room.member/" in url and method == "PUT":
            kwargs["json"] = {"membership": "join", "displayname": "Guest in the room"}
        status, body = await harness.request(method, url, guest, **kwargs)
        errcode = body.get("errcode") if isinstance(body, dict) else None
        if op in NOT_SERVED:
            if status != 404 or errcode != "M_UNRECOGNIZED":
                wrong.append(f"{method} {url}: {status} {body} (expected 404: not served)")
        elif op in GUEST_ALLOWED:
            if status != 200:
                wrong.append(f"{method} {url}: {status} {body}")
        elif status != 403 or errcode != "M_GUEST_ACCESS_FORBIDDEN":
            wrong.append(f"{method} {url}: {status} {body}")
        checked.append(f"{method} {template}")
    assert not wrong, "\n".join(wrong)
    assert len(checked) > 120  # every authenticated operation but the appservice ones

    # the profile: the display name only (spec: "other profile fields may not be changed")
    for method, body in (("PUT", {"avatar_url": "mxc://hs.test/x"}), ("DELETE", None)):
        status, err = await harness.request(method, f"profile/{q(guest.user_id)}/avatar_url", guest, json=body)
        assert status == 403 and err["errcode"] == "M_GUEST_ACCESS_FORBIDDEN", (method, err)
    status, err = await harness.request("PUT", f"profile/{q(guest.user_id)}/m.tz", guest, json={"m.tz": "UTC"})
    assert status == 403 and err["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    # the older media upload paths and r0 prefixes are gated too
    for method, path in (("POST", "/_matrix/media/v3/upload"), ("POST", "/_matrix/media/r0/upload")):
        resp = await harness.client.request(method, path, data=b"x", headers=guest.headers)
        assert resp.status == 403 and (await resp.json())["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
    status, err = await harness.request("POST", "/_matrix/client/r0/createRoom", guest, json={})
    assert status == 403 and err["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"

    status, body = await harness.request("POST", f"rooms/{q(room)}/leave", guest, json={})
    assert status == 200, body


async def test_guest_joins_only_rooms_that_allow_guests(harness: Harness) -> None:
    # spec: guest access "Server behaviour" — only rooms whose m.room.guest_access is can_join
    alice = await harness.user("alice")
    guest = await guest_user(harness)
    public = await create_room(harness, alice, preset="public_chat")  # its guest_access is forbidden
    status, err = await harness.request("POST", f"rooms/{q(public)}/join", guest, json={})
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    # the same rule for a join written as state
    status, err = await harness.request(
        "PUT", f"rooms/{q(public)}/state/m.room.member/{q(guest.user_id)}", guest, json={"membership": "join"}
    )
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"
    # a guest's account data and pushers: refused, as every other endpoint outside the list
    status, err = await harness.request("PUT", f"user/{q(guest.user_id)}/account_data/m.x", guest, json={"a": 1})
    assert status == 403 and err["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"
