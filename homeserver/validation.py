"""Input validation with pydantic v2, answered with the spec's error codes.

spec: client-server-api "Common error codes": a missing required key is `M_MISSING_PARAM`; a key of
the wrong type is `M_BAD_JSON` (some endpoints say `M_INVALID_PARAM`: pass `bad=`). The message
names the location (`room.timeline.limit: ...`). Every request body, sync filter and federation
input goes through `validate`, so the same mistake always gets the same answer.

Models should be strict (`model_config = STRICT`): JSON types as JSON says them, no "1" for 1.
Build them lazily (`defer_build=True` is in STRICT): most models are never used by a given run.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from homeserver.errors import MatrixError

STRICT = ConfigDict(strict=True, extra="allow", defer_build=True)
STRICT_CLOSED = ConfigDict(strict=True, extra="forbid", defer_build=True)

M = TypeVar("M", bound=BaseModel)


def where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def error_for(e: ValidationError, *, bad: str = "M_BAD_JSON", what: str = "request body") -> MatrixError:
    """The Matrix error for the first problem pydantic found."""
    first = e.errors(include_url=False, include_input=False)[0]
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "missing":
        return MatrixError(400, "M_MISSING_PARAM", f"{where(loc)} is required")
    if first.get("type") == "extra_forbidden":
        return MatrixError(400, bad, f"{where(loc)}: unknown key in {what}")
    return MatrixError(400, bad, f"{where(loc)}: {first.get('msg', 'invalid')}")


def validate(model: type[M], data: Any, *, bad: str = "M_BAD_JSON", what: str = "request body") -> M:
    if not isinstance(data, dict):
        raise MatrixError(400, "M_BAD_JSON", f"{what} must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise error_for(e, bad=bad, what=what) from None
