"""The HTTP edge shared by every route: errors, CORS, JSON bodies, access tokens, routing helpers.

One middleware renders every `MatrixError`; handlers never build error JSON by hand.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute, UrlMappingMatchInfo
from pydantic import BaseModel, ValidationError
from yarl import URL

from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from aiohttp.web_urldispatcher import _InfoDict

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)

CLIENT_PREFIX = "/_matrix/client"
# Element and the SDKs call v3; r0 is kept for older clients, as Synapse does.
CLIENT_VERSIONS = ("v3", "r0")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Origin, X-Requested-With, Content-Type, Accept, Authorization, Date",
    "Access-Control-Expose-Headers": "ETag, Content-Disposition, Content-Length, Content-Type, Retry-After",
}


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(err: MatrixError) -> web.Response:
    headers = None
    retry = err.extra.get("retry_after_ms")
    if err.status == 429 and isinstance(retry, int):
        headers = {"Retry-After": str(max(1, (retry + 999) // 1000))}
    return json_response(err.to_json(), status=err.status, headers=headers)


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer every OPTIONS preflight and add CORS headers to every response (browsers need both)."""
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
    else:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            response = e
    for k, v in CORS_HEADERS.items():
        response.headers.setdefault(k, v)
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except MatrixError as e:
        return error_response(e)
    except web.HTTPNotFound:
        return error_response(MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request"))
    except web.HTTPMethodNotAllowed:
        return error_response(MatrixError(405, "M_UNRECOGNIZED", "Unrecognized request: method not allowed"))
    except web.HTTPRequestEntityTooLarge:
        return error_response(MatrixError(413, "M_TOO_LARGE", "request body is too large"))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("error handling %s %s", request.method, request.path)
        return error_response(MatrixError(500, "M_UNKNOWN", "Internal server error"))


async def read_json(request: web.Request, *, allow_empty: bool = False) -> Any:
    """The request body parsed as JSON; `M_NOT_JSON` if it is not JSON."""
    raw = await request.read()
    if not raw.strip():
        if allow_empty:
            return {}
        raise MatrixError(400, "M_NOT_JSON", "request body is empty, expected JSON")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise MatrixError(400, "M_NOT_JSON", f"request body is not valid JSON: {e}") from None


async def json_object(request: web.Request, *, allow_empty: bool = False) -> dict[str, Any]:
    body = await read_json(request, allow_empty=allow_empty)
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "request body must be a JSON object")
    return body


def validate(model: type[M], data: Any) -> M:
    """Validate `data` against a pydantic model; `M_BAD_JSON` naming the field on failure."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise MatrixError(400, "M_BAD_JSON", f"{where}: {err['msg']}") from None


async def parse_body(request: web.Request, model: type[M], *, allow_empty: bool = False) -> M:
    return validate(model, await read_json(request, allow_empty=allow_empty))


def query_int(request: web.Request, name: str, default: int | None = None, *, minimum: int = 0) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer") from None
    if value < minimum:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be at least {minimum}")
    return value


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return default
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be true or false")


def access_token(request: web.Request) -> str | None:
    """The access token from `Authorization: Bearer` or the deprecated `access_token` query parameter."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MatrixError(401, "M_MISSING_TOKEN", "Authorization header must be 'Bearer <token>'")
        return token.strip()
    return request.query.get("access_token")


@dataclass(slots=True)
class Route:
    method: str
    path: str
    handler: Handler


class Router:
    """Collects routes; `client()` adds a client-server path under each supported version prefix."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        self.routes.append(Route(method, path, handler))

    def client(self, method: str, path: str, handler: Handler, versions: Iterable[str] = CLIENT_VERSIONS) -> None:
        for v in versions:
            self.add(method, f"{CLIENT_PREFIX}/{v}{path}", handler)

    def install(self, app: web.Application) -> None:
        seen: set[tuple[str, str]] = set()
        legacy: list[Route] = []
        for r in self.routes:
            if (r.method, r.path) in seen:
                continue
            seen.add((r.method, r.path))
            if r.path.startswith(LEGACY_PREFIX + "/"):
                legacy.append(r)
            else:
                app.router.add_route(r.method, r.path, r.handler)
        if legacy:
            app.router.register_resource(LazyRoutes(LEGACY_PREFIX, legacy))


LEGACY_PREFIX = f"{CLIENT_PREFIX}/r0"


class LazyRoutes(web.AbstractResource):
    """The routes under one path prefix, put in a router of their own on the first request there.

    aiohttp compiles a regular expression for every route as it is added; the `r0` copies of the
    client API (half the routes, which today's clients do not call) would cost start-up time and
    memory. The router finds this resource for any path under the prefix and it resolves the path
    as the main router would have (same order, same 404/405 answers).
    """

    def __init__(self, prefix: str, routes: list[Route]) -> None:
        super().__init__()
        self._prefix = prefix
        self._routes = routes
        self._router: web.UrlDispatcher | None = None

    def _inner(self) -> web.UrlDispatcher:
        if self._router is None:
            router = web.UrlDispatcher()
            for r in self._routes:
                router.add_route(r.method, r.path, r.handler)
            router.freeze()
            self._router = router
        return self._router

    @property
    def canonical(self) -> str:
        return self._prefix

    async def resolve(self, request: web.Request) -> tuple[UrlMappingMatchInfo | None, set[str]]:
        if not request.rel_url.path_safe.startswith(self._prefix + "/"):
            return None, set()
        match = await self._inner().resolve(request)
        error = match.http_exception
        if error is None:
            return match, set()
        if isinstance(error, web.HTTPMethodNotAllowed):
            return None, set(error.allowed_methods)
        return None, set()

    def raw_match(self, path: str) -> bool:
        return path == self._prefix

    def url_for(self, **kwargs: str) -> URL:
        return URL.build(path=self._prefix)

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("lazily installed routes cannot move under a prefix")

    def get_info(self) -> _InfoDict:
        return {"prefix": self._prefix}

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[AbstractRoute]:
        return iter(self._inner().routes())
