"""Input validation with pydantic v2, answered with the spec's error codes.

spec: client-server-api "Common error codes": a missing required key is `M_MISSING_PARAM`; a key of
the wrong type is `M_BAD_JSON` (some endpoints say `M_INVALID_PARAM`: pass `bad=`). The message
names the location (`room.timeline.limit: must be greater than 0`). Every request body, sync filter,
the config and federation input go through here, so the same mistake always gets the same answer.

Models should be strict (`model_config = STRICT`): JSON types as JSON says them, no "1" for 1.
Build them lazily (`defer_build=True` is in STRICT): most models are never used by a given run.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from homeserver.errors import MatrixError

STRICT = ConfigDict(strict=True, extra="allow", defer_build=True)
STRICT_CLOSED = ConfigDict(strict=True, extra="forbid", defer_build=True)

M = TypeVar("M", bound=BaseModel)

# pydantic's error types said as a JSON user reads them (what was expected, in JSON's words)
_EXPECTED = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "bool_type": "expected a boolean",
    "none_required": "expected null",
    "list_type": "expected an array",
    "dict_type": "expected an object",
    "model_type": "expected an object",
    "model_attributes_type": "expected an object",
    "path_type": "expected a path (a string)",
    "missing": "required",
    "extra_forbidden": "unknown key",
}
_BOUNDS = {
    "greater_than": ("gt", "must be greater than {}"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than": ("lt", "must be less than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "string_too_short": ("min_length", "must be at least {} characters long"),
    "string_too_long": ("max_length", "must be at most {} characters long"),
    "too_short": ("min_length", "must have at least {} items"),
    "too_long": ("max_length", "must have at most {} items"),
}


def where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def _number(value: Any) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def describe(error: ErrorDetails) -> str:
    """What is wrong, in a few words (the location is said separately)."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in _EXPECTED:
        return _EXPECTED[kind]
    if kind in _BOUNDS:
        key, text = _BOUNDS[kind]
        return text.format(_number(ctx.get(key)))
    if kind == "literal_error":
        return "must be one of " + str(ctx.get("expected", "")).replace(" or ", ", ")
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])  # our own check's message, as it wrote it
    return error["msg"]


def problems(e: ValidationError) -> list[str]:
    """Every problem as `location: what is wrong`, in the model's field order."""
    return [f"{where(tuple(d['loc']))}: {describe(d)}" for d in e.errors(include_url=False, include_input=False)]


def error_for(e: ValidationError, *, bad: str = "M_BAD_JSON", what: str = "request body") -> MatrixError:
    """The Matrix error for the first problem pydantic found."""
    first = e.errors(include_url=False, include_input=False)[0]
    loc = where(tuple(first["loc"]))
    if first["type"] == "missing":
        return MatrixError(400, "M_MISSING_PARAM", f"{loc} is required")
    if first["type"] == "extra_forbidden":
        return MatrixError(400, bad, f"{loc}: unknown key in {what}")
    return MatrixError(400, bad, f"{loc}: {describe(first)}")


def validate(model: type[M], data: Any, *, bad: str = "M_BAD_JSON", what: str = "request body") -> M:
    if not isinstance(data, dict):
        raise MatrixError(400, "M_BAD_JSON", f"{what} must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise error_for(e, bad=bad, what=what) from None
