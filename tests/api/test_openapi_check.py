"""The OpenAPI response checker itself: routing, schema choice, and that it catches what it should."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from .conftest import Harness
from .openapi_check import OpenAPIChecker, OpenAPIMismatch, checker


@pytest.fixture(scope="module")
def oa() -> OpenAPIChecker:
    return checker()


def _spec_examples(oa: OpenAPIChecker) -> Iterator[tuple[str, str, int, Any]]:
    for key, item in oa.doc["paths"].items():
        for method in ("get", "put", "post", "delete"):
            op = item.get(method)
            for code, response in (op or {}).get("responses", {}).items():
                media = (response.get("content") or {}).get("application/json") or {}
                values = [media["example"]] if "example" in media else []
                values += [e["value"] for e in (media.get("examples") or {}).values() if "value" in e]
                for value in values:
                    yield method, key.strip(), int(code), value


def test_every_spec_example_passes(oa: OpenAPIChecker) -> None:
    """The spec's own response examples are known-good bodies for their schemas."""
    examples = list(_spec_examples(oa))
    assert len(examples) > 200
    for method, path, status, body in examples:
        oa.check(method, path, status, "application/json", body)


def test_known_good_bodies_pass(oa: OpenAPIChecker) -> None:
    oa.check("GET", "/_matrix/client/versions", 200, "application/json", {"versions": ["v1.11"]})
    oa.check("GET", "/_matrix/client/v3/account/whoami", 200, "application/json", {"user_id": "@a:hs.test"})
    oa.check(
        "PUT",
        "/_matrix/client/v3/rooms/!r:hs.test/send/m.room.message/txn1?x=1",
        200,
        "application/json",
        {"event_id": "$abc"},
    )


def test_wrong_type_fails_naming_endpoint_and_schema_path(oa: OpenAPIChecker) -> None:
    with pytest.raises(OpenAPIMismatch) as exc:
        oa.check("GET", "/_matrix/client/versions", 200, "application/json", {"versions": "v1.11"})
    text = str(exc.value)
    assert "GET /_matrix/client/versions -> 200" in text and "getVersions" in text
    assert "$.versions" in text and "'v1.11' is not of type 'array'" in text
    assert "/paths/~1_matrix~1client~1versions/get/responses/200/content/application~1json/schema" in text
    assert "properties/versions/type" in text


def test_missing_required_field_fails(oa: OpenAPIChecker) -> None:
    with pytest.raises(OpenAPIMismatch, match="'event_id' is a required property"):
        oa.check("PUT", "/_matrix/client/v3/rooms/!r:hs.test/send/m.room.message/t", 200, "application/json", {})


def test_routing(oa: OpenAPIChecker) -> None:
    def ids(method: str, path: str) -> list[str]:
        return [op.operation_id for op in oa.operations(method, path)]

    assert ids("GET", "/_matrix/client/r0/sync") == ["sync"]  # r0 is served as v3
    assert ids("GET", "/_matrix/client/v3/rooms/%21r%3Ahs.test/state") == ["getRoomState"]
    # An empty state key: with (js-sdk) and without (nio) the trailing slash.
    assert ids("PUT", "/_matrix/client/v3/rooms/!r:hs.test/state/m.room.topic/") == ["setRoomStateWithKey"]
    assert ids("PUT", "/_matrix/client/v3/rooms/!r:hs.test/state/m.room.topic") == ["setRoomStateWithKey"]
    # Literal paths win over templates.
    assert ids("GET", "/_matrix/client/v3/pushrules/global/") == ["getPushRulesGlobal"]
    # The two keys with a trailing space: both operations of the pair are candidates.
    assert sorted(ids("POST", "/_matrix/client/v3/rooms/!r:hs.test/invite")) == ["inviteBy3PID", "inviteUser"]
    assert sorted(ids("GET", "/_matrix/client/v3/events")) == ["getEvents", "peekEvents"]
    assert ids("GET", "/_matrix/client/v3/no/such/thing") == []
    assert ids("PATCH", "/_matrix/client/v3/sync") == []


def test_undocumented_paths_and_statuses(oa: OpenAPIChecker) -> None:
    oa.check("GET", "/_matrix/client/unstable/org.example/thing", 200, "application/json", [1, 2])
    oa.check("GET", "/_matrix/client/v3/account/whoami", 204, "application/json", "anything")
    # An undocumented error status still has to be a standard error body.
    oa.check("GET", "/_matrix/client/v3/account/whoami", 500, "application/json", {"errcode": "M_UNKNOWN"})
    with pytest.raises(OpenAPIMismatch, match="errcode"):
        oa.check("GET", "/_matrix/client/v3/account/whoami", 500, "application/json", {"error": "oops"})


def test_undocumented_interactive_auth_401(oa: OpenAPIChecker) -> None:
    # /keys/device_signing/upload uses interactive auth but documents no 401: the flows body is allowed.
    path = "/_matrix/client/v3/keys/device_signing/upload"
    oa.check("POST", path, 401, "application/json", {"flows": [{"stages": ["m.login.password"]}], "session": "s"})
    oa.check("POST", path, 401, "application/json", {"errcode": "M_UNKNOWN_TOKEN", "error": "who?"})
    with pytest.raises(OpenAPIMismatch):
        oa.check("POST", path, 401, "application/json", {"session": "s"})


def test_token_errors_on_interactive_auth_endpoints(oa: OpenAPIChecker) -> None:
    # /delete_devices documents its 401 as the interactive-auth flows; a bad token is a plain error.
    oa.check("POST", "/_matrix/client/v3/delete_devices", 401, "application/json", {"errcode": "M_MISSING_TOKEN"})
    with pytest.raises(OpenAPIMismatch, match="flows"):
        oa.check("POST", "/_matrix/client/v3/delete_devices", 401, "application/json", {"session": "x"})


def test_content_types(oa: OpenAPIChecker) -> None:
    # Media bodies are not JSON and not checked; a JSON-only response sent as something else fails.
    oa.check("GET", "/_matrix/client/v1/media/download/hs.test/abc", 200, "image/png", b"\x89PNG")
    with pytest.raises(OpenAPIMismatch, match="text/plain"):
        oa.check("GET", "/_matrix/client/versions", 200, "text/plain", b"v1.11")


LyingClient = TestClient[web.Request, web.Application]


@pytest_asyncio.fixture
async def lying_server() -> AsyncIterator[LyingClient]:
    async def versions(request: web.Request) -> web.Response:
        return web.json_response({"versions": "v1.11"})  # a string where the spec says an array

    app = web.Application()
    app.router.add_get("/_matrix/client/versions", versions)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.asyncio
async def test_harness_requests_are_checked(lying_server: LyingClient, harness: Harness) -> None:
    status, body = await harness.request("GET", "/_matrix/client/versions")  # the real server: passes
    assert status == 200 and isinstance(body["versions"], list)
    lying = Harness(harness.hs, lying_server)
    with pytest.raises(OpenAPIMismatch, match="getVersions"):
        await lying.request("GET", "/_matrix/client/versions")
