"""Request bodies as strict models (`homeserver.schema`), with the spec's error codes.

spec: client-server-api "Common error codes": a missing required key is `M_MISSING_PARAM`; a key of
the wrong type (strict: no "1" for 1, no 1 for true) is `M_BAD_JSON`; not JSON is `M_NOT_JSON`.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web

from homeserver.api.http import JSON_BODY_LIMIT, json_object
from homeserver.errors import MatrixError
from homeserver.schema import Schema, SchemaError

M = TypeVar("M", bound=Schema)


class Body(Schema, extra="allow"):
    """A request body: strict types, unknown keys kept (clients send extra fields). Like every
    model, compiled on first use: most bodies are never seen by a given server run."""


def parse(model: type[M], data: Any, *, bad: str = "M_BAD_JSON") -> M:
    """Validate `data`; `bad` is the errcode for wrong types and values (Synapse's admin API uses
    `M_INVALID_PARAM`)."""
    if not isinstance(data, dict):
        raise MatrixError(400, "M_BAD_JSON", "request body must be a JSON object")
    try:
        return model.validate(data)
    except SchemaError as e:
        problem = e.problems[0]
        where = problem.where or "body"
        if problem.kind == "missing":
            raise MatrixError(400, "M_MISSING_PARAM", f"{where} is required") from None
        raise MatrixError(400, bad, f"{where}: {problem.message}") from None


async def read(request: web.Request, model: type[M], *, allow_empty: bool = False, limit: int = JSON_BODY_LIMIT) -> M:
    """The body as `model`; nesting and size are checked by `read_json` (one policy for all bodies)."""
    return parse(model, await json_object(request, allow_empty=allow_empty, limit=limit))


def client_ip(request: web.Request) -> str | None:
    """The peer address (rate limits and device "last seen"); proxies are not trusted blindly."""
    return request.remote
