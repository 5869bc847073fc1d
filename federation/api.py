"""The federation HTTP API: routes under `/_matrix/federation/` and `/_matrix/key/v2/`.

Every federation request is authenticated before its handler runs (spec: "Request
Authentication"): a valid `X-Matrix` header for this server, signed by a key of the origin that is
valid now; anything else gets 401 `M_UNAUTHORIZED`. A request from a server also tells the sender
that server is up (its back-off is reset). Endpoints that concern a room check the room's server
ACL (spec: "Server Access Control Lists": 403 `M_FORBIDDEN`). The key endpoints are public.
Handlers are thin: parse, call `Federation` (federation/service.py), answer.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

from federation.request_auth import AuthHeaderError, parse_authorization, verify_request
from federation.service import Federation
from federation.transactions import TransactionTooLarge
from homeserver.api.http import BULK_JSON_BODY_LIMIT, JSON_BODY_LIMIT, Router, json_response, read_body, read_json
from homeserver.errors import MatrixError, forbidden
from homeserver.protocol.errors import InvalidIdentifier, ProtocolError, SignatureError
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.identifiers import parse_server_name
from homeserver.protocol.room_versions import get_room_version
from homeserver.rooms.federation_reads import NotInRoom
from homeserver.rooms.pipeline import EventRefused
from homeserver.validation import STRICT, validate

FED = "/_matrix/federation"
SERVER_NAME = "homeserver"
Authed = Callable[[web.Request, str, Any], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def unauthorized(message: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", message)


def register(router: Router, fed: Federation, version: str) -> None:
    def authed(
        handler: Authed, *, limit: int = JSON_BODY_LIMIT
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            origin, content = await authenticate(fed, request, limit)
            return await handler(request, origin, content)

        return run

    def acl(room_id: str, origin: str) -> None:
        if not fed.acl_allows(room_id, origin):
            raise forbidden(f"{origin} is denied by the server ACL of {room_id}")

    def visible(call: Callable[[], Any]) -> Any:
        try:
            return call()
        except NotInRoom as e:
            raise forbidden(str(e)) from None

    # -- public ----------------------------------------------------------------------------------

    async def server_version(request: web.Request) -> web.Response:
        return json_response({"server": {"name": SERVER_NAME, "version": version}})

    async def key_server(request: web.Request) -> web.Response:
        return json_response(fed.our_keys.response())

    router.add("GET", f"{FED}/v1/version", server_version)
    router.add("GET", "/_matrix/key/v2/server", key_server)
    router.add("GET", "/_matrix/key/v2/server/{keyId}", key_server)  # deprecated form, same answer

    # -- transactions ----------------------------------------------------------------------------

    async def send(request: web.Request, origin: str, content: Any) -> web.Response:
        if not isinstance(content, dict):
            raise MatrixError(400, "M_BAD_JSON", "the transaction must be a JSON object")
        try:
            answer = await fed.transactions.receive(origin, request.match_info["txnId"], content)
        except TransactionTooLarge as e:
            raise MatrixError(400, "M_TOO_LARGE", str(e)) from None
        except ValueError as e:
            raise MatrixError(400, "M_BAD_JSON", str(e)) from None
        return json_response(answer)

    router.add("PUT", f"{FED}/v1/send/{{txnId}}", authed(send, limit=BULK_JSON_BODY_LIMIT))

    # -- membership ------------------------------------------------------------------------------

    def make(kind: str) -> Authed:
        async def handler(request: web.Request, origin: str, content: Any) -> web.Response:
            room_id, user_id = request.match_info["roomId"], request.match_info["userId"]
            acl(room_id, origin)
            versions = request.query.getall("ver", []) if kind != "leave" else None
            if kind == "join" and not versions:
                versions = ["1"]  # spec: make_join `ver` — absent means the server supports only v1
            return json_response(fed.resident.make(origin, kind, room_id, user_id, versions))

        return handler

    async def send_join(request: web.Request, origin: str, content: Any) -> web.Response:
        room_id = request.match_info["roomId"]
        acl(room_id, origin)
        return json_response(await fed.resident.send_join(origin, room_id, request.match_info["eventId"], content))

    async def send_leave(request: web.Request, origin: str, content: Any) -> web.Response:
        room_id = request.match_info["roomId"]
        acl(room_id, origin)
        await fed.resident.send(origin, "leave", room_id, request.match_info["eventId"], content)
        return json_response({})

    async def send_knock(request: web.Request, origin: str, content: Any) -> web.Response:
        room_id = request.match_info["roomId"]
        acl(room_id, origin)
        return json_response(await fed.resident.send_knock(origin, room_id, request.match_info["eventId"], content))

    for kind in ("join", "leave", "knock"):
        router.add("GET", f"{FED}/v1/make_{kind}/{{roomId}}/{{userId}}", authed(make(kind)))
    router.add("PUT", f"{FED}/v2/send_join/{{roomId}}/{{eventId}}", authed(send_join))
    router.add("PUT", f"{FED}/v2/send_leave/{{roomId}}/{{eventId}}", authed(send_leave))
    router.add("PUT", f"{FED}/v1/send_knock/{{roomId}}/{{eventId}}", authed(send_knock))

    # -- history and state -----------------------------------------------------------------------

    def now_ms() -> int:
        return int(time.time() * 1000)

    async def event(request: web.Request, origin: str, content: Any) -> web.Response:
        pdu = visible(lambda: fed.reads.event_for(origin, request.match_info["eventId"]))
        return json_response({"origin": fed.server_name, "origin_server_ts": now_ms(), "pdus": [pdu]})

    def event_id_query(request: web.Request) -> str:
        event_id = request.query.get("event_id")
        if not event_id:
            raise MatrixError(400, "M_MISSING_PARAM", "event_id is required")
        return event_id

    async def state_ids(request: web.Request, origin: str, content: Any) -> web.Response:
        room_id = request.match_info["roomId"]
        acl(room_id, origin)
        pdu_ids, chain_ids = visible(lambda: fed.reads.state_ids_at(origin, room_id, event_id_query(request)))
        return json_response({"pdu_ids": pdu_ids, "auth_chain_ids": chain_ids})

    async def state(request: web.Request, origin: str, content: Any) -> web.Response:
        room_id = request.match_info["roomId"]
        acl(room_id, origin)
        pdus, chain = visible(lambda: fed.reads.state_at(origin, room_id, event_id_query(request)))
        return json_response({"pdus": pdus, "auth_chain": chain})

    async def event_auth(request: web.Request, origin: str, content: Any) -> web.Response:
        room_id = request.match_info["roomId"]
        acl(room_id, origin)
        chain = visible(lambda: fed.reads.auth_chain_of(origin, room_id, request.match_info["eventId"]))
        return json_response({"auth_chain": chain})

    async def backfill(request: web.Request, origin: str, content: Any) -> web.Response:
        room_id = request.match_info["roomId"]
        acl(room_id, origin)
        start = request.query.getall("v", [])
        try:
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "limit must be an integer") from None
        if not start:
            raise MatrixError(400, "M_MISSING_PARAM", "v is required")
        pdus = visible(lambda: fed.reads.backfill(origin, room_id, start, limit))
        return json_response({"origin": fed.server_name, "origin_server_ts": now_ms(), "pdus": pdus})

    async def missing_events(request: web.Request, origin: str, content: Any) -> web.Response:
        room_id = request.match_info["roomId"]
        acl(room_id, origin)
        body = validate(MissingEventsBody, content)
        earliest, latest, limit, min_depth = body.earliest_events, body.latest_events, body.limit, body.min_depth
        events = visible(lambda: fed.reads.missing_events(origin, room_id, earliest, latest, limit, min_depth))
        return json_response({"events": events})

    router.add("GET", f"{FED}/v1/event/{{eventId}}", authed(event))
    router.add("GET", f"{FED}/v1/state_ids/{{roomId}}", authed(state_ids))
    router.add("GET", f"{FED}/v1/state/{{roomId}}", authed(state))
    router.add("GET", f"{FED}/v1/event_auth/{{roomId}}/{{eventId}}", authed(event_auth))
    router.add("GET", f"{FED}/v1/backfill/{{roomId}}", authed(backfill))
    router.add("POST", f"{FED}/v1/get_missing_events/{{roomId}}", authed(missing_events))

    # -- invites ---------------------------------------------------------------------------------

    async def invite(request: web.Request, origin: str, content: Any) -> web.Response:
        room_id, event_id = request.match_info["roomId"], request.match_info["eventId"]
        acl(room_id, origin)
        body = validate(InviteBody, content)
        event = body.event
        sender, invitee = event.get("sender"), event.get("state_key")
        if not isinstance(sender, str) or sender.partition(":")[2] != origin:
            raise forbidden(f"the inviter is not a user of {origin}")
        if event.get("room_id") != room_id or not isinstance(invitee, str):
            raise MatrixError(400, "M_BAD_JSON", "the event is not an invite to this room")
        try:
            rv = get_room_version(body.room_version)
        except ProtocolError:
            raise MatrixError(
                400,
                "M_INCOMPATIBLE_ROOM_VERSION",
                f"room version {body.room_version!r} is not supported",
                room_version=body.room_version,
            ) from None
        try:
            if compute_event_id(event, rv) != event_id:
                raise MatrixError(400, "M_BAD_JSON", "the event id does not match the event")
        except ProtocolError as e:
            raise MatrixError(400, "M_BAD_JSON", f"not a valid event: {e}") from None
        fed.local.check_invite(sender, invitee, room_id)
        try:
            signed, _ = await fed.pipeline.receive_invite(
                body.room_version, event, body.invite_room_state, fed.keyring.verify_keys
            )
        except EventRefused as e:
            raise forbidden(f"the invite was refused: {e}") from None
        return json_response({"event": signed})

    router.add("PUT", f"{FED}/v2/invite/{{roomId}}/{{eventId}}", authed(invite))

    # -- queries ---------------------------------------------------------------------------------

    async def query_profile(request: web.Request, origin: str, content: Any) -> web.Response:
        user_id = request.query.get("user_id")
        if not user_id:
            raise MatrixError(400, "M_MISSING_PARAM", "user_id is required")
        if user_id.partition(":")[2] != fed.server_name:
            raise MatrixError(400, "M_INVALID_PARAM", f"{user_id} is not a user of this server")
        field = request.query.get("field")
        profile = fed.local.profile(user_id, field)
        if profile is None:
            raise MatrixError(404, "M_NOT_FOUND", "no such user")
        return json_response(profile)

    async def query_directory(request: web.Request, origin: str, content: Any) -> web.Response:
        alias = request.query.get("room_alias")
        if not alias:
            raise MatrixError(400, "M_MISSING_PARAM", "room_alias is required")
        found = fed.local.alias(alias)
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", f"room alias {alias} not found")
        return json_response({"room_id": found[0], "servers": found[1]})

    async def openid_userinfo(request: web.Request) -> web.Response:
        # spec: authenticated by the OpenID token alone, not by X-Matrix
        token = request.query.get("access_token")
        if not token:
            raise MatrixError(401, "M_MISSING_TOKEN", "access_token is required")
        user_id = fed.local.openid_user(token)
        if user_id is None:
            raise MatrixError(401, "M_UNKNOWN_TOKEN", "unknown or expired OpenID token")
        return json_response({"sub": user_id})

    async def timestamp_to_event(request: web.Request, origin: str, content: Any) -> web.Response:
        room_id = request.match_info["roomId"]
        acl(room_id, origin)
        direction = request.query.get("dir")
        if direction not in ("f", "b"):
            raise MatrixError(400, "M_INVALID_PARAM", "dir must be f or b")
        try:
            ts = int(request.query.get("ts", ""))
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "ts must be an integer") from None
        found = visible(lambda: fed.reads.event_at_time(origin, room_id, ts, forwards=direction == "f"))
        if found is None:
            raise MatrixError(404, "M_NOT_FOUND", f"no event {'after' if direction == 'f' else 'before'} {ts}")
        return json_response({"event_id": found[0], "origin_server_ts": found[1]})

    router.add("GET", f"{FED}/v1/query/profile", authed(query_profile))
    router.add("GET", f"{FED}/v1/query/directory", authed(query_directory))
    router.add("GET", f"{FED}/v1/openid/userinfo", openid_userinfo)
    router.add("GET", f"{FED}/v1/timestamp_to_event/{{roomId}}", authed(timestamp_to_event))

    # -- notary ----------------------------------------------------------------------------------

    async def key_query_one(request: web.Request) -> web.Response:
        return json_response({"server_keys": await notary(fed, [request.match_info["serverName"]])})

    async def key_query(request: web.Request) -> web.Response:
        body = validate(KeyQueryBody, await read_json(request))
        return json_response({"server_keys": await notary(fed, list(body.server_keys)[:NOTARY_MAX_SERVERS])})

    router.add("GET", "/_matrix/key/v2/query/{serverName}", key_query_one)
    router.add("POST", "/_matrix/key/v2/query", key_query)


async def notary(fed: Federation, servers: list[str]) -> list[dict[str, Any]]:
    """spec: `/_matrix/key/v2/query`: each server's own key answer, counter-signed by us (our own
    answer for us); servers whose keys we cannot get are left out."""
    out: list[dict[str, Any]] = []
    for server in dict.fromkeys(servers):
        if server == fed.server_name:
            out.append(fed.our_keys.response())
            continue
        try:
            parse_server_name(server)
        except InvalidIdentifier:
            continue
        stored = fed.keyring.stored_response(server)
        if stored is None or stored.get("valid_until_ts", 0) < int(time.time() * 1000):
            await fed.keyring.refresh(server)
            stored = fed.keyring.stored_response(server)
        if stored is not None:
            out.append(fed.our_keys.sign(stored))
    return out


async def authenticate(fed: Federation, request: web.Request, limit: int) -> tuple[str, Any]:
    """The origin of a signed request and its JSON body (None without a body); 401 otherwise."""
    header = request.headers.get("Authorization")
    if header is None:
        raise unauthorized("federation requests must carry an X-Matrix Authorization header")
    try:
        auth = parse_authorization(header)
        parse_server_name(auth.origin)
    except (AuthHeaderError, InvalidIdentifier) as e:
        raise unauthorized(str(e)) from None
    if auth.destination is not None and auth.destination != fed.server_name:
        raise unauthorized(f"this server is {fed.server_name}, not {auth.destination}")
    raw = await read_body(request, limit)
    content: Any = None
    if raw.strip():
        try:
            content = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise MatrixError(400, "M_NOT_JSON", f"the body is not JSON: {e}") from None
    keys = await fed.keyring.verify_keys(auth.origin, [auth.key], int(time.time() * 1000))
    key = keys.get(auth.key)
    if key is None:
        raise unauthorized(f"no valid key {auth.key} is known for {auth.origin}")
    try:
        verify_request(auth, request.method, request.raw_path, fed.server_name, content, key)
    except SignatureError as e:
        raise unauthorized(f"the request signature does not verify: {e}") from None
    fed.rate_limit(auth.origin)
    fed.sender.contacted(auth.origin)
    return auth.origin, content


NOTARY_MAX_SERVERS = 50


class InviteBody(BaseModel):
    model_config = STRICT

    room_version: str
    event: dict[str, Any]
    invite_room_state: list[Any] = []


class KeyQueryBody(BaseModel):
    model_config = STRICT

    server_keys: dict[str, Any]


class MissingEventsBody(BaseModel):
    model_config = STRICT

    earliest_events: list[str]
    latest_events: list[str]
    limit: int = 10
    min_depth: int = 0
