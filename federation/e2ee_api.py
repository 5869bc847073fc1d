"""Federation routes for end-to-end encryption (spec: server-server-api "Device Management",
"End-to-End Encryption"): `GET /user/devices/{userId}`, `POST /user/keys/query`, `POST /user/keys/claim`.
Authenticated like every federation request (federation/api.py); answered by `LocalDeviceAnswers`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from federation.api import FED, authenticate
from federation.e2ee import LocalDeviceAnswers
from federation.service import Federation
from homeserver.api.http import BULK_JSON_BODY_LIMIT, JSON_BODY_LIMIT, Router, json_response
from homeserver.errors import MatrixError


def _body(content: Any, field: str) -> Any:
    if not isinstance(content, dict) or field not in content:
        raise MatrixError(400, "M_BAD_JSON", f"the body must be an object with {field}")
    return content[field]


def register(router: Router, fed: Federation, answers: LocalDeviceAnswers) -> None:
    async def devices(request: web.Request) -> web.Response:
        await authenticate(fed, request, JSON_BODY_LIMIT)
        return json_response(answers.devices(request.match_info["userId"]))

    async def keys_query(request: web.Request) -> web.Response:
        _, content = await authenticate(fed, request, BULK_JSON_BODY_LIMIT)
        return json_response(answers.query(_body(content, "device_keys")))

    async def keys_claim(request: web.Request) -> web.Response:
        _, content = await authenticate(fed, request, BULK_JSON_BODY_LIMIT)
        return json_response(await answers.claim(_body(content, "one_time_keys")))

    router.add("GET", f"{FED}/v1/user/devices/{{userId}}", devices)
    router.add("POST", f"{FED}/v1/user/keys/query", keys_query)
    router.add("POST", f"{FED}/v1/user/keys/claim", keys_claim)
