"""Routing at the HTTP edge: the segment trie, its agreement with aiohttp's own router, and the
answers every request gets without middlewares (errors as Matrix JSON, CORS headers, 404/405/OPTIONS).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_urldispatcher import UrlMappingMatchInfo
from yarl import URL

from homeserver.api.http import CORS_HEADERS, Handler, Router, json_response
from homeserver.api.routing import PathRoute, PathTrie, TrieResource, decode_value
from homeserver.server import HomeServer

from .conftest import Harness, make_config
from .rooms_helpers import create_room, put_state, q

R = "/_matrix/client/v3/rooms/{roomId}"
Client = TestClient[web.Request, web.Application]


def assert_cors(headers: Any) -> None:
    for name, value in CORS_HEADERS.items():
        assert headers.get(name) == value, name


# -- the trie alone --------------------------------------------------------------------------------


def trie(*templates: str) -> PathTrie[str]:
    t: PathTrie[str] = PathTrie()
    for template in templates:
        method, _, path = template.partition(" ")
        assert t.add(method, path, template)
    return t


def test_literal_param_and_tail_segments() -> None:
    t = trie(
        "GET /sync",
        f"PUT {R}/send/{{eventType}}/{{txnId}}",
        f"GET {R}/state/{{eventType}}",
        f"GET {R}/state/{{eventType}}/",
        f"GET {R}/state/{{eventType}}/{{stateKey:.+}}",
    )
    room = "/_matrix/client/v3/rooms/!r:hs.test"
    assert t.lookup("GET", "/sync") == ("GET /sync", {}, frozenset())
    value, variables, _ = t.lookup("PUT", f"{room}/send/m.room.message/t1")
    assert value == f"PUT {R}/send/{{eventType}}/{{txnId}}"
    assert variables == {"roomId": "!r:hs.test", "eventType": "m.room.message", "txnId": "t1"}
    assert t.lookup("GET", f"{room}/state/m.room.name")[1] == {"roomId": "!r:hs.test", "eventType": "m.room.name"}
    value, variables, _ = t.lookup("GET", f"{room}/state/m.room.name/")
    assert value == f"GET {R}/state/{{eventType}}/"
    assert variables == {"roomId": "!r:hs.test", "eventType": "m.room.name"}
    # the tail takes the rest of the path, slashes and empty segments included
    for key in ("@a:hs.test", "a/b/c", "a//b", "/x", "x/"):
        value, variables, _ = t.lookup("GET", f"{room}/state/m.room.member/{key}")
        assert value == f"GET {R}/state/{{eventType}}/{{stateKey:.+}}", key
        assert variables["stateKey"] == key


def test_no_match_and_wrong_method() -> None:
    t = trie("GET /a/{x}", "PUT /a/{y}", "POST /a/static")
    assert t.lookup("GET", "/b") == (None, {}, set())
    assert t.lookup("GET", "/a") == (None, {}, set())
    assert t.lookup("GET", "/a/") == (None, {}, set())  # a variable takes one non-empty segment
    assert t.lookup("GET", "/a/x/y") == (None, {}, set())
    assert t.lookup("PUT", "/a/v") == ("PUT /a/{y}", {"y": "v"}, frozenset())  # names are per template
    # a literal without the method falls back to the variable; a path with none gets every method it has
    assert t.lookup("GET", "/a/static") == ("GET /a/{x}", {"x": "static"}, frozenset())
    assert t.lookup("DELETE", "/a/static") == (None, {}, {"GET", "PUT", "POST"})
    assert t.lookup("HEAD", "/a/v") == (None, {}, {"GET", "PUT"})


def test_search_backtracks_from_a_literal_dead_end() -> None:
    t = trie("GET /a/static/b", "GET /a/{v}/c", "GET /t/static/x", "GET /t/{rest:.+}")
    assert t.lookup("GET", "/a/static/c") == ("GET /a/{v}/c", {"v": "static"}, frozenset())
    assert t.lookup("GET", "/t/static/y") == ("GET /t/{rest:.+}", {"rest": "static/y"}, frozenset())
    assert t.lookup("GET", "/t/static/x")[0] == "GET /t/static/x"


def test_characters_refused_like_aiohttp() -> None:
    # aiohttp's patterns: `{name}` is `[^{}/]+` and `{name:.+}` does not take a newline
    t = trie("GET /a/{x}", "GET /b/{x}/{rest:.+}")
    assert t.lookup("GET", "/a/{x}")[0] is None
    assert t.lookup("GET", "/a/x}")[0] is None
    assert t.lookup("GET", "/a/x\ny") == ("GET /a/{x}", {"x": "x\ny"}, frozenset())
    assert t.lookup("GET", "/b/x/{y}") == ("GET /b/{x}/{rest:.+}", {"x": "x", "rest": "{y}"}, frozenset())
    assert t.lookup("GET", "/b/x/y\nz")[0] is None


def test_values_are_decoded_of_what_path_safe_keeps() -> None:
    assert decode_value("$abc%2Fdef") == "$abc/def"
    assert decode_value("%25") == "%"
    assert decode_value("%252F") == "%2F"
    assert decode_value("%25%2F") == "%/"
    assert decode_value("%zz") == "%zz"
    t = trie("GET /e/{eventId}", "GET /s/{key:.+}")
    assert t.lookup("GET", "/e/$abc%2Fdef")[1] == {"eventId": "$abc/def"}
    assert t.lookup("GET", "/s/a%2Fb/c%25")[1] == {"key": "a/b/c%"}


def test_first_route_wins_and_bad_templates_are_refused() -> None:
    t: PathTrie[int] = PathTrie()
    assert t.add("GET", "/a/{x}", 1)
    assert not t.add("GET", "/a/{x}", 2)
    assert t.lookup("GET", "/a/v")[0] == 1
    for bad in ("a/b", "/a/{x:[0-9]+}", "/a/{x}y", "/a/x{y}", "/a/{rest:.+}/b", "/a/{1x}"):
        with pytest.raises(ValueError):
            t.add("GET", bad, 3)


# -- the trie against aiohttp's router, over every route the server registers -----------------------

# raw path segments, as clients send them; some contain `/` and so shift the segments after them
SEGMENTS = (
    "!r:hs.test",
    "%21r%3Ahs.test",
    "%23a%3Ab",
    "$abc%2Fdef",
    "$abc+def",
    "%25",
    "%252F",
    "a%2Fb%2Fc",
    "%7Bx%7D",
    "new",
    "global",
    "state",
    "send",
    "actions",
    "",
    "a/b",
    "x%0Ay",
    "%E2%82%AC",
    "%zz",
)
METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")  # HEAD: one no route has


def server_routes(tmp_path: Path) -> list[tuple[str, str, Handler]]:
    hs = HomeServer(make_config(tmp_path))
    try:
        router = hs.routes()
    finally:
        hs.close()
    seen: set[tuple[str, str]] = set()
    routes = []
    for r in router.routes:
        if (r.method, r.path) not in seen:
            seen.add((r.method, r.path))
            routes.append((r.method, r.path, r.handler))
    return routes


def sample_paths(templates: set[str]) -> list[str]:
    """Each template with every sample in each variable, and with a segment more or less."""
    paths: set[str] = set()
    for template in templates:
        segments = template.split("/")
        for k in range(len(SEGMENTS)):
            filled = [SEGMENTS[(k + i) % len(SEGMENTS)] if s.startswith("{") else s for i, s in enumerate(segments)]
            path = "/".join(filled)
            paths.update((path, path + "/", path + "/x", path.rpartition("/")[0] or "/"))
    return sorted(paths)


def fake_request(method: str, path: str) -> web.Request:
    # both routers read only these two attributes
    return cast(web.Request, SimpleNamespace(method=method, rel_url=URL(path, encoded=True)))


async def test_trie_resolves_every_server_route_as_aiohttp_does(tmp_path: Path) -> None:
    routes = server_routes(tmp_path)
    reference = web.UrlDispatcher()
    refusals: dict[Handler, frozenset[str]] = {}

    def refusal(allowed: Any) -> Handler:
        async def refuse(request: web.Request) -> web.StreamResponse:
            raise AssertionError("not called")

        refusals[refuse] = frozenset(allowed)
        return refuse

    async def not_found(request: web.Request) -> web.StreamResponse:
        raise AssertionError("not called")

    resource = TrieResource(not_found=not_found, not_allowed=refusal)
    for method, path, handler in routes:
        reference.add_route(method, path, handler)
        assert resource.add_route(method, path, handler) is not None
    assert len(resource) == len(routes) == len(reference.routes())

    def ours(match: UrlMappingMatchInfo) -> tuple[Any, ...]:
        handler = match.route.handler
        if handler is not_found:
            return (404,)
        if handler in refusals:
            return 405, refusals[handler]
        return cast(PathRoute, match.route).path.replace(":.+}", "}"), dict(match)

    def theirs(match: UrlMappingMatchInfo) -> tuple[Any, ...]:
        error = match.http_exception
        if isinstance(error, web.HTTPMethodNotAllowed):
            return 405, frozenset(error.allowed_methods)
        if error is not None:
            return (error.status,)
        assert match.route.resource is not None
        return match.route.resource.canonical, dict(match)

    checked = 0
    for path in sample_paths({path for _, path, _ in routes}):
        for method in METHODS:
            request = fake_request(method, path)
            match, _ = await resource.resolve(request)
            assert match is not None
            assert ours(match) == theirs(await reference.resolve(request)), (method, path)
            checked += 1
    assert checked > 40_000


# -- over the wire: match_info as aiohttp gives it ------------------------------------------------

ECHO_TEMPLATES = (
    ("PUT", "/rooms/{roomId}/send/{eventType}/{txnId}"),
    ("GET", "/rooms/{roomId}/event/{eventId}"),
    ("GET", "/rooms/{roomId}/state/{eventType}"),
    ("GET", "/rooms/{roomId}/state/{eventType}/"),
    ("GET", "/rooms/{roomId}/state/{eventType}/{stateKey:.+}"),
    ("GET", "/directory/room/{roomAlias}"),
    ("GET", "/pushrules"),
    ("GET", "/pushrules/"),
    ("GET", "/pushrules/global/{kind}/{ruleId}"),
)
ECHO_PATHS = (
    ("PUT", "rooms/%21r%3Ahs.test/send/m.room.message/txn%2B1"),
    ("PUT", "rooms/!r:hs.test/send/m.room.message/a+b"),
    ("PUT", "rooms/!r:hs.test/send/m.room.message/a%2Fb"),
    ("GET", "rooms/!r:hs.test/event/$abc%2Fdef"),
    ("GET", "rooms/!r:hs.test/event/%24abc%2Bdef"),
    ("GET", "rooms/!r:hs.test/event/$a%25b"),
    ("GET", "rooms/!r:hs.test/event/%E2%82%AC"),
    ("GET", "rooms/!r:hs.test/state/m.room.name"),
    ("GET", "rooms/!r:hs.test/state/m.room.name/"),
    ("GET", "rooms/!r:hs.test/state/m.room.member/%40a%3Ahs.test"),
    ("GET", "rooms/!r:hs.test/state/m.room.member/a/b/c"),
    ("GET", "rooms/!r:hs.test/state/m.room.member/a%2Fb"),
    ("GET", "rooms/!r:hs.test/state/m.room.member/a//b/"),
    ("GET", "directory/room/%23a%3Ab"),
    ("GET", "directory/room/#a:b"),
    ("GET", "pushrules"),
    ("GET", "pushrules/"),
    ("GET", "pushrules/global/override/.m.rule.master"),
    ("GET", "pushrules/global/override/%2Em.rule%2Fx"),
    ("GET", "rooms//send/x/y"),
    ("GET", "nothing/here"),
    ("GET", "rooms/!r:hs.test/send/m.room.message/t"),
)


def echo(template: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return json_response({"template": template, "match": dict(request.match_info)})

    return handler


@pytest_asyncio.fixture
async def echo_clients() -> AsyncIterator[tuple[Client, Client]]:
    ours, reference = web.Application(), web.Application()
    router = Router()
    for method, template in ECHO_TEMPLATES:
        router.client(method, template, echo(template))
        for v in ("v3", "r0"):
            reference.router.add_route(method, f"/_matrix/client/{v}{template}", echo(template))
    router.install(ours)
    clients = (TestClient(TestServer(ours)), TestClient(TestServer(reference)))
    for c in clients:
        await c.start_server()
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


async def test_match_info_over_http_is_aiohttps(echo_clients: tuple[Client, Client]) -> None:
    ours, reference = echo_clients
    for method, path in ECHO_PATHS:
        for version in ("v3", "r0"):
            url = URL(f"/_matrix/client/{version}/{path}", encoded=True)
            mine, theirs = await ours.request(method, url), await reference.request(method, url)
            assert mine.status == theirs.status, (method, path)
            assert_cors(mine.headers)
            if theirs.status == 200:
                assert await mine.json() == await theirs.json(), (method, path)
            else:
                assert (await mine.json())["errcode"] == "M_UNRECOGNIZED"


async def test_http_errors_raised_by_handlers() -> None:
    async def conflict(request: web.Request) -> web.StreamResponse:
        raise web.HTTPConflict(text="taken")

    async def not_found(request: web.Request) -> web.StreamResponse:
        raise web.HTTPNotFound()

    async def stream(request: web.Request) -> web.StreamResponse:
        return web.StreamResponse(status=202)

    app = web.Application()
    router = Router()
    router.add("GET", "/conflict", conflict)
    router.add("GET", "/gone", not_found)
    router.add("GET", "/stream", stream)
    router.install(app)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/conflict")
        assert resp.status == 409 and await resp.text() == "taken"  # passed through, as aiohttp renders it
        assert_cors(resp.headers)
        resp = await client.get("/gone")
        assert resp.status == 404 and (await resp.json())["errcode"] == "M_UNRECOGNIZED"
        assert_cors(resp.headers)
        resp = await client.get("/stream")
        assert resp.status == 202
        assert_cors(resp.headers)


# -- the server's answers ------------------------------------------------------------------------------


async def test_no_middlewares_and_every_route_listed(tmp_path: Path) -> None:
    hs = HomeServer(make_config(tmp_path))
    try:
        app = hs.build_app()
        assert not app.middlewares
        routes = list(app.router.routes())
        assert len(routes) == len(server_routes(tmp_path / "again"))
        send = next(r for r in routes if r.get_info().get("formatter") == f"{R}/send/{{eventType}}/{{txnId}}")
        url = send.url_for(roomId="!r:hs.test", eventType="m.room.message", txnId="a/b")
        assert url.raw_path == "/_matrix/client/v3/rooms/!r:hs.test/send/m.room.message/a%2Fb"
    finally:
        hs.close()


async def test_unknown_path_wrong_method_and_preflight(harness: Harness) -> None:
    for version in ("v3", "r0"):
        base = f"/_matrix/client/{version}"
        resp = await harness.client.get(f"{base}/no/such/thing")
        assert resp.status == 404
        assert await resp.json() == {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}
        assert_cors(resp.headers)

        resp = await harness.client.get(f"{base}/rooms/%21r%3Ahs.test/send/m.room.message/t1")
        assert resp.status == 405 and (await resp.json())["errcode"] == "M_UNRECOGNIZED"
        assert resp.headers["Allow"] == "PUT"
        assert_cors(resp.headers)

        resp = await harness.client.request("OPTIONS", f"{base}/no/such/thing")
        assert resp.status == 204 and await resp.read() == b""
        assert_cors(resp.headers)

    # HEAD is not added to GET routes (aiohttp's add_route does not either)
    resp = await harness.client.head("/_matrix/client/versions")
    assert resp.status == 405 and resp.headers["Allow"] == "GET"
    assert_cors(resp.headers)
    resp = await harness.client.get("/")
    assert resp.status == 404
    assert_cors(resp.headers)


async def test_r0_and_v3_reach_the_same_handlers(harness: Harness) -> None:
    alice = await harness.user("alice")
    for version in ("v3", "r0"):
        status, body = await harness.request("GET", f"/_matrix/client/{version}/account/whoami", alice)
        assert status == 200 and body["user_id"] == alice.user_id


async def test_encoded_ids_and_state_keys_with_slashes(harness: Harness) -> None:
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice)
    for key in ("a/b", "a/b/", "with space", "%2F", "€"):
        await put_state(harness, alice, room_id, "m.test", {"key": key}, state_key=key)
        status, body = await harness.request("GET", f"rooms/{q(room_id)}/state/m.test/{q(key)}", alice)
        assert status == 200 and body == {"key": key}, key
    status, body = await harness.request("GET", f"/_matrix/client/r0/rooms/{q(room_id)}/state/m.test/a/b", alice)
    assert status == 200 and body == {"key": "a/b"}  # slashes sent as they are
    # the empty state key, with and without the trailing slash
    status, with_slash = await harness.request("GET", f"rooms/{q(room_id)}/state/m.room.create/", alice)
    assert status == 200 and with_slash["room_version"]
    assert await harness.request("GET", f"rooms/{q(room_id)}/state/m.room.create", alice) == (200, with_slash)
    status, body = await harness.request("PUT", f"directory/room/{q('#a:hs.test')}", alice, json={"room_id": room_id})
    assert status == 200, body
    status, body = await harness.request("GET", f"directory/room/{q('#a:hs.test')}")
    assert status == 200 and body["room_id"] == room_id
    status, body = await harness.request("GET", f"rooms/{q(room_id)}/event/{q('$abc/def+x')}", alice)
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


async def test_unexpected_exception_is_a_logged_500(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(request: web.Request) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(harness.hs.auth, "requester", boom)
    with caplog.at_level(logging.ERROR, logger="homeserver.api.http"):
        resp = await harness.client.get("/_matrix/client/v3/account/whoami")
    assert resp.status == 500
    assert await resp.json() == {"errcode": "M_UNKNOWN", "error": "Internal server error"}
    assert_cors(resp.headers)
    assert "error handling GET /_matrix/client/v3/account/whoami" in caplog.text
    assert "RuntimeError: boom" in caplog.text


@pytest.mark.parametrize("harness", [{"max_upload_size": 1024}], indirect=True)
async def test_too_large_body(harness: Harness) -> None:
    alice = await harness.user("alice")
    body = b'{"name": "' + b"x" * (1024 + 64 * 1024) + b'"}'
    resp = await harness.client.post(
        "/_matrix/client/v3/createRoom", data=body, headers={**alice.headers, "Content-Type": "application/json"}
    )
    assert resp.status == 413
    assert (await resp.json())["errcode"] == "M_TOO_LARGE"
    assert_cors(resp.headers)


async def test_media_files_get_cors_headers(harness: Harness) -> None:
    alice = await harness.user("alice")
    resp = await harness.client.post(
        "/_matrix/media/v3/upload", data=b"hello", headers={**alice.headers, "Content-Type": "text/plain"}
    )
    assert resp.status == 200
    media_id = (await resp.json())["content_uri"].rsplit("/", 1)[1]
    for path in (f"download/hs.test/{media_id}", f"download/hs.test/{media_id}/a%2Fb.txt"):
        resp = await harness.client.get(f"/_matrix/client/v1/media/{path}", headers=alice.headers)
        assert resp.status == 200 and await resp.read() == b"hello"
        assert_cors(resp.headers)
