"""The federation HTTP API in-process: authentication before any handler, ACLs, and the endpoints
a joining server uses, with requests signed as another server signs them.

spec: server-server-api "Request Authentication", "Server Access Control Lists", "Joining rooms".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from federation import api
from federation.request_auth import authorization_header
from federation.service import Federation, FederationSettings
from homeserver.api.http import Router
from homeserver.config import RateLimit, RateLimits
from homeserver.errors import MatrixError
from homeserver.protocol.signing import encode_verify_key
from homeserver.ratelimit import RateLimiter
from homeserver.rooms.federation_reads import FederationReads
from storage.server_keys import ServerKeyStore, StoredKey
from tests.rooms.remote import ALICE_R, BOB_L, LOCAL, RESIDENT, Pair, only

DENIED: set[str] = set()


class Answers:
    def profile(self, user_id: str, field: str | None) -> dict[str, Any] | None:
        if user_id != ALICE_R:
            return None
        profile = {"displayname": "Alice"}
        return {field: profile[field]} if field in profile else profile if field is None else {}

    def alias(self, alias: str) -> tuple[str, list[str]] | None:
        return None

    def openid_user(self, token: str) -> str | None:
        return ALICE_R if token == "good" else None

    def check_invite(self, inviter: str, invitee: str, room_id: str) -> None:
        raise MatrixError(404, "M_NOT_FOUND", "no such user")


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    p = Pair(tmp_path)
    yield p
    p.close()


@pytest.fixture
async def client(pair: Pair) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async for c in serve(pair):
        yield c


async def serve(
    pair: Pair, rate_limit: Callable[[str], None] = lambda origin: None
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    res = pair.resident
    reads = FederationReads(res.db, RESIDENT)
    fed = Federation(
        FederationSettings(),
        RESIDENT,
        res.identity.key_id,
        res.identity.signing_key,
        res.db.store,
        res.db.caches,
        res.pipe,
        reads,
        servers_in_room=lambda room_id: reads.servers_in_room(reads.room_version(room_id)[0]),
        acl_allows=lambda room_id, server: server not in DENIED,
        local=Answers(),
        edu_handlers={},
        rate_limit=rate_limit,
    )
    # the key of our server (the requesting one) is known to the resident, as if fetched
    ours = pair.local.identity
    batch = res.db.store.batch()
    with batch:
        key = StoredKey(encode_verify_key(ours.signing_key), 2**62, None, 0)
        ServerKeyStore(res.db.store).put(LOCAL, {ours.key_id: key}, batch)
        await batch.commit()
    router = Router()
    api.register(router, fed, "test")
    app = web.Application()
    router.install(app)
    c = TestClient(TestServer(app))
    await c.start_server()
    yield c
    await c.close()
    await fed.close()
    DENIED.clear()


def signed_headers(
    pair: Pair, method: str, path: str, content: Any = None, *, destination: str = RESIDENT
) -> dict[str, str]:
    ours = pair.local.identity
    path = URL(path).raw_path_qs  # what the test client sends (yarl's normal form of the path)
    header = authorization_header(LOCAL, destination, ours.key_id, ours.signing_key, method, path, content)
    return {"Authorization": header}


async def call(client: Any, pair: Pair, method: str, path: str, content: Any = None) -> tuple[int, Any]:
    data = orjson.dumps(content) if content is not None else None
    resp = await client.request(method, path, data=data, headers=signed_headers(pair, method, path, content))
    return resp.status, await resp.json()


async def test_public_endpoints(client: Any, pair: Pair) -> None:
    resp = await client.get("/_matrix/federation/v1/version")
    assert resp.status == 200 and (await resp.json())["server"]["name"]
    resp = await client.get("/_matrix/key/v2/server")
    body = await resp.json()
    assert body["server_name"] == RESIDENT and pair.resident.identity.key_id in body["verify_keys"]
    resp = await client.post("/_matrix/key/v2/query", json={"server_keys": {RESIDENT: {}}})
    assert (await resp.json())["server_keys"][0]["server_name"] == RESIDENT


@pytest.mark.parametrize(
    "problem", ["none", "not x-matrix", "other destination", "bad signature", "unknown key", "other path"]
)
async def test_requests_must_be_signed_for_us(client: Any, pair: Pair, problem: str) -> None:
    path = "/_matrix/federation/v1/query/profile?user_id=" + ALICE_R.replace("@", "%40").replace(":", "%3A")
    headers = signed_headers(pair, "GET", path)
    if problem == "none":
        headers = {}
    elif problem == "not x-matrix":
        headers = {"Authorization": "Bearer abc"}
    elif problem == "other destination":
        headers = signed_headers(pair, "GET", path, destination="elsewhere.test")
    elif problem == "bad signature":
        headers = {"Authorization": headers["Authorization"][:-8] + 'AAAAAAA"'}
    elif problem == "unknown key":
        headers = {"Authorization": headers["Authorization"].replace(pair.local.identity.key_id, "ed25519:nope")}
    elif problem == "other path":
        headers = signed_headers(pair, "GET", path + "&field=displayname")
    resp = await client.get(path, headers=headers)
    assert resp.status == 401, await resp.text()
    assert (await resp.json())["errcode"] == "M_UNAUTHORIZED"
    # and signed properly it works
    status, body = await call(client, pair, "GET", path)
    assert (status, body) == (200, {"displayname": "Alice"})


async def test_a_join_over_http(client: Any, pair: Pair) -> None:
    room_id = await pair.room("10")
    user = BOB_L.replace("@", "%40").replace(":", "%3A")
    room = room_id.replace("!", "%21").replace(":", "%3A")
    status, made = await call(client, pair, "GET", f"/_matrix/federation/v1/make_join/{room}/{user}?ver=10&ver=11")
    assert status == 200 and made["room_version"] == "10"
    ours = pair.local
    event, eid = ours.pipe.sign_membership_template(made["event"], ours.rv_of_version("10"), room_id, BOB_L, "join")
    status, answer = await call(client, pair, "PUT", f"/_matrix/federation/v2/send_join/{room}/{eid}", event)
    assert status == 200 and answer["members_omitted"] is False
    joined = await ours.pipe.receive_join(
        room_id, "10", answer["event"], answer["state"], answer["auth_chain"], ours.keys
    )
    assert ours.current_state(room_id) == pair.resident.current_state(room_id)
    # now in the room: state_ids and get_missing_events answer; a body without a required key is refused
    status, ids = await call(
        client, pair, "GET", f"/_matrix/federation/v1/state_ids/{room}?event_id={joined.event_id.replace('$', '%24')}"
    )
    assert status == 200 and len(ids["pdu_ids"]) == len(answer["state"])
    status, err = await call(
        client, pair, "POST", f"/_matrix/federation/v1/get_missing_events/{room}", {"latest_events": []}
    )
    assert (status, err["errcode"]) == (400, "M_MISSING_PARAM")
    # a denied server is refused on the protected endpoints
    DENIED.add(LOCAL)
    status, err = await call(client, pair, "GET", f"/_matrix/federation/v1/make_join/{room}/{user}?ver=10")
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")


async def test_openid_userinfo_needs_no_signature(client: Any) -> None:
    resp = await client.get("/_matrix/federation/v1/openid/userinfo?access_token=good")
    assert (resp.status, await resp.json()) == (200, {"sub": ALICE_R})
    resp = await client.get("/_matrix/federation/v1/openid/userinfo?access_token=bad")
    assert resp.status == 401 and (await resp.json())["errcode"] == "M_UNKNOWN_TOKEN"


async def test_each_origin_has_a_request_budget(pair: Pair) -> None:
    limiter = RateLimiter(RateLimits(federation=RateLimit(per_second=0.001, burst=3)))
    async for client in serve(pair, lambda origin: limiter.check("federation", origin)):
        path = "/_matrix/federation/v1/query/profile?user_id=" + ALICE_R.replace("@", "%40").replace(":", "%3A")
        answers = [await call(client, pair, "GET", path) for _ in range(4)]
        assert [status for status, _ in answers] == [200, 200, 200, 429]
        assert answers[-1][1]["errcode"] == "M_LIMIT_EXCEEDED" and answers[-1][1]["retry_after_ms"] > 0


async def test_transactions_over_http(client: Any, pair: Pair) -> None:
    """PDUs in a transaction get one result each: accepted, refused (forged), or kept rejected (a
    user whose server is not in the room); a replayed transaction gets the same answer; limits hold."""
    room_id = await pair.room("10")
    ours, res = pair.local, pair.resident
    user = BOB_L.replace("@", "%40").replace(":", "%3A")
    room = room_id.replace("!", "%21").replace(":", "%3A")
    status, made = await call(client, pair, "GET", f"/_matrix/federation/v1/make_join/{room}/{user}?ver=10")
    event, eid = ours.pipe.sign_membership_template(made["event"], ours.rv_of_version("10"), room_id, BOB_L, "join")
    status, answer = await call(client, pair, "PUT", f"/_matrix/federation/v2/send_join/{room}/{eid}", event)
    await ours.pipe.receive_join(room_id, "10", answer["event"], answer["state"], answer["auth_chain"], ours.keys)
    good = await ours.pipe.send(room_id, BOB_L, "m.room.message", {"msgtype": "m.text", "body": "hello"})
    good_pdu = dict(ours.event(good.event_id))
    # a field the signature covers changed (a new event id too), the old signature kept: forged
    forged = {**good_pdu, "origin_server_ts": good_pdu["origin_server_ts"] + 1}
    outsider = pair.us.build(
        res,
        room_id,
        "@mallory:" + LOCAL,
        "m.room.message",
        {"msgtype": "m.text", "body": "not a member"},
        prev=[only(res.extremities(room_id))],
    )
    body = {"origin": LOCAL, "origin_server_ts": 1, "pdus": [good_pdu, forged, outsider]}
    status, result = await call(client, pair, "PUT", "/_matrix/federation/v1/send/t1", body)
    assert status == 200
    results = result["pdus"]
    assert results[good.event_id] == {}
    forged_id = next(k for k in results if k not in (good.event_id,) and "error" in results[k])
    assert "refused" in results[forged_id]["error"]
    assert good.event_id in res.timeline(room_id)
    outsider_id = next(k for k in results if k not in (good.event_id, forged_id))
    assert outsider_id not in res.timeline(room_id)  # stored rejected, never shown
    assert res.db.events.rejection_reason(res.short(outsider_id)) is not None
    # the same transaction again: the same answer, nothing done twice
    status, again = await call(client, pair, "PUT", "/_matrix/federation/v1/send/t1", body)
    assert (status, again) == (200, result)
    # limits
    status, err = await call(client, pair, "PUT", "/_matrix/federation/v1/send/t2", {"pdus": [good_pdu] * 51})
    assert (status, err["errcode"]) == (400, "M_TOO_LARGE")
    status, err = await call(client, pair, "PUT", "/_matrix/federation/v1/send/t3", {"pdus": "nope"})
    assert (status, err["errcode"]) == (400, "M_BAD_JSON")


@pytest.mark.parametrize("event_type", [["m.room.message"], {"m.room.message": 1}])
async def test_a_pdu_whose_type_is_not_a_string_is_refused_alone(client: Any, pair: Pair, event_type: Any) -> None:
    """A PDU in a room we are in whose `type` is a list or an object (unhashable: it once broke the
    redaction algorithm when the event id was computed, a 500 for the whole transaction) gets its own
    error, and the transaction's other PDUs their answers."""
    room_id = await pair.room("10")
    odd: dict[str, Any] = {
        "room_id": room_id,
        "sender": BOB_L,
        "type": event_type,
        "content": {"body": "odd"},
        "depth": 3,
        "prev_events": [],
        "auth_events": [],
        "origin_server_ts": 1,
        "hashes": {"sha256": "x"},
        "signatures": {},
    }
    plain = {**odd, "type": "m.room.message"}
    body = {"origin": LOCAL, "origin_server_ts": 1, "pdus": [odd, plain]}
    status, result = await call(client, pair, "PUT", "/_matrix/federation/v1/send/t-odd", body)
    assert status == 200
    assert len(result["pdus"]) == 2 and all("error" in r for r in result["pdus"].values())
