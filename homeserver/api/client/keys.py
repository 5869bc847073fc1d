"""End-to-end encryption routes: keys, cross-signing, to-device, key backup.

spec: modules/end_to_end_encryption.md (key management API), send_to_device.md, and the
room_keys API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import Field

from homeserver.api.auth import CROSS_SIGNING_RESET
from homeserver.api.bodies import Body, read
from homeserver.api.http import BULK_JSON_BODY_LIMIT, Router, json_object, json_response
from homeserver.errors import MatrixError
from homeserver.rooms.tokens import parse_stream_token
from homeserver.validation import validate

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def _stream_token(raw: str | None, name: str) -> int:
    """A position from a sync token (`next_batch`), range-checked like sync's `since`."""
    if raw is None:
        raise MatrixError(400, "M_MISSING_PARAM", f"{name} is required")
    return parse_stream_token(raw, name)


# The envelopes; what is inside (keys, signatures, messages, sessions) is checked by the e2ee service.


REMOTE_TIMEOUT_MS = 10_000  # spec: /keys/query and /keys/claim `timeout`, "Defaults to 10000"
MAX_REMOTE_TIMEOUT_MS = 60_000


class QueryBody(Body):
    device_keys: dict[str, Any] = Field(default_factory=dict)
    timeout: int = Field(default=REMOTE_TIMEOUT_MS, ge=0)


class ClaimBody(Body):
    one_time_keys: dict[str, Any] = Field(default_factory=dict)
    timeout: int = Field(default=REMOTE_TIMEOUT_MS, ge=0)


class ToDeviceBody(Body):
    messages: dict[str, Any] = Field(default_factory=dict)


class BackupKeysBody(Body):
    rooms: dict[str, Any] = Field(default_factory=dict)


def register(router: Router, hs: HomeServer) -> None:
    e2ee = hs.e2ee

    async def upload(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        body = await json_object(request, limit=BULK_JSON_BODY_LIMIT)
        counts = await e2ee.keys.upload(req.user_id, req.device_id, body)
        return json_response({"one_time_key_counts": counts})

    async def query(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        body = await read(request, QueryBody, limit=BULK_JSON_BODY_LIMIT)
        timeout_s = min(body.timeout, MAX_REMOTE_TIMEOUT_MS) / 1000
        return json_response(await e2ee.keys.query_everywhere(req.user_id, body.device_keys, timeout_s))

    async def claim(request: web.Request) -> web.Response:
        hs.auth.requester(request)
        body = await read(request, ClaimBody, limit=BULK_JSON_BODY_LIMIT)
        timeout_s = min(body.timeout, MAX_REMOTE_TIMEOUT_MS) / 1000
        return json_response(await e2ee.keys.claim_everywhere(body.one_time_keys, timeout_s))

    async def changes(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        after = _stream_token(request.query.get("from"), "from")
        upto = _stream_token(request.query.get("to"), "to")
        # spec: GET /keys/changes — the same answer as /sync's device_lists between those tokens
        return json_response(e2ee.device_lists.for_sync(req.user_id, after, upto))

    async def device_signing(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        body = await json_object(request)
        if e2ee.keys.cross_signing_needs_auth(req.user_id, body):
            # spec: replacing cross-signing keys needs user-interactive auth (password or single sign-on)
            await hs.auth.require(request, req, body, CROSS_SIGNING_RESET, "cross_signing")
        await e2ee.keys.upload_cross_signing(req.user_id, {k: v for k, v in body.items() if k != "auth"})
        return json_response({})

    async def signatures(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        body = await json_object(request, limit=BULK_JSON_BODY_LIMIT)
        return json_response(await e2ee.keys.upload_signatures(req.user_id, body))

    async def send_to_device(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        body = await read(request, ToDeviceBody, limit=BULK_JSON_BODY_LIMIT)
        await e2ee.to_device.send(
            req.user_id, req.device_id, request.match_info["eventType"], request.match_info["txnId"], body.messages
        )
        return json_response({})

    # key backup
    async def version_current(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        return json_response(e2ee.backup.describe(req.user_id, None))

    async def version_get(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        return json_response(e2ee.backup.describe(req.user_id, request.match_info["version"]))

    async def version_create(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        return json_response({"version": await e2ee.backup.create(req.user_id, await json_object(request))})

    async def version_update(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        await e2ee.backup.update(req.user_id, request.match_info["version"], await json_object(request))
        return json_response({})

    async def version_delete(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        await e2ee.backup.delete(req.user_id, request.match_info["version"])
        return json_response({})

    async def keys_put(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        body = await json_object(request, limit=BULK_JSON_BODY_LIMIT)
        room_id = request.match_info.get("roomId")
        session_id = request.match_info.get("sessionId")
        rooms: dict[str, Any]
        if session_id is not None and room_id is not None:
            rooms = {room_id: {"sessions": {session_id: body}}}
        elif room_id is not None:
            rooms = {room_id: body}
        else:
            rooms = validate(BackupKeysBody, body).rooms
        return json_response(await e2ee.backup.put_keys(req.user_id, request.query.get("version"), rooms))

    async def keys_get(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        return json_response(
            e2ee.backup.get_keys(
                req.user_id,
                request.query.get("version"),
                request.match_info.get("roomId"),
                request.match_info.get("sessionId"),
            )
        )

    async def keys_delete(request: web.Request) -> web.Response:
        req = hs.auth.requester(request)
        return json_response(
            await e2ee.backup.delete_keys(
                req.user_id,
                request.query.get("version"),
                request.match_info.get("roomId"),
                request.match_info.get("sessionId"),
            )
        )

    # spec: guest access — guests may upload, query and claim keys and send to-device messages
    router.client("POST", "/keys/upload", upload, guests=True)
    router.client("POST", "/keys/query", query, guests=True)
    router.client("POST", "/keys/claim", claim, guests=True)
    router.client("GET", "/keys/changes", changes)
    router.client("POST", "/keys/device_signing/upload", device_signing)
    router.add("POST", "/_matrix/client/unstable/keys/device_signing/upload", device_signing)
    router.client("POST", "/keys/signatures/upload", signatures)
    router.add("POST", "/_matrix/client/unstable/keys/signatures/upload", signatures)
    router.client("PUT", "/sendToDevice/{eventType}/{txnId}", send_to_device, guests=True)
    router.client("GET", "/room_keys/version", version_current)
    router.client("POST", "/room_keys/version", version_create)
    router.client("GET", "/room_keys/version/{version}", version_get)
    router.client("PUT", "/room_keys/version/{version}", version_update)
    router.client("DELETE", "/room_keys/version/{version}", version_delete)
    for path in ("/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId}"):
        router.client("PUT", path, keys_put)
        router.client("GET", path, keys_get)
        router.client("DELETE", path, keys_delete)
