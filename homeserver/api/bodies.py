"""Request bodies as pydantic models, read and checked in one step (`homeserver.validation`).

spec: client-server-api "Common error codes": a missing required key is `M_MISSING_PARAM`; a key of
the wrong type (strict: no "1" for 1, no 1 for true) is `M_BAD_JSON`; not JSON is `M_NOT_JSON`.
Size and nesting are checked first, by `read_json` (one policy for every body).
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel

from homeserver.api.http import JSON_BODY_LIMIT, json_object
from homeserver.validation import STRICT, validate

M = TypeVar("M", bound=BaseModel)


class Body(BaseModel):
    """A request body: strict types, unknown keys kept (clients send extra fields). Built on first
    use (`defer_build`): most bodies are never seen by a given server run."""

    model_config = STRICT


async def read(
    request: web.Request,
    model: type[M],
    *,
    allow_empty: bool = False,
    limit: int = JSON_BODY_LIMIT,
    bad: str = "M_BAD_JSON",
) -> M:
    """The body as `model`; `bad` is the errcode for wrong types and values (Synapse's admin API
    uses `M_INVALID_PARAM`)."""
    return validate(model, await json_object(request, allow_empty=allow_empty, limit=limit), bad=bad)


def client_ip(request: web.Request) -> str | None:
    """The peer address (rate limits and device "last seen"); proxies are not trusted blindly."""
    return request.remote
