"""Canonical JSON (spec: appendices.md "Canonical JSON").

The shortest UTF-8 encoding with keys sorted by code point; numbers are integers in
[-(2**53)+1, 2**53-1] without exponent or fraction, and `-0` never appears.

`encode` follows the spec exactly and accepts integral floats (a parser turns `1e10` and `-0`
into floats) by writing them as integers. orjson does the encoding: it is byte-identical to the
reference encoder for every value the spec allows, and several times faster.
`encode_lenient` serves rooms v1–v5, whose events may hold floats and out-of-range integers
(spec: rooms/fragments/v1-canonical-json): it encodes them as the reference Python encoder does.
"""

from __future__ import annotations

from typing import Any

import canonicaljson
import orjson

from homeserver.protocol.errors import CanonicalJSONError

MAX_SAFE_INTEGER = 2**53 - 1
MIN_SAFE_INTEGER = -(2**53) + 1
# Deeper values are refused rather than risk the encoder's recursion limit; no real event nests this far.
MAX_DEPTH = 100

_ORJSON_OPTS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER


def _normalise(value: Any, depth: int) -> tuple[Any, bool]:
    """Return `(value', changed)`: integral floats turned into ints, everything else checked."""
    if depth > MAX_DEPTH:
        raise CanonicalJSONError(f"JSON nested deeper than {MAX_DEPTH} levels")
    t = type(value)
    if t is str or t is bool or value is None:
        return value, False
    if t is int:
        if not MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"integer {value} is outside the canonical JSON range")
        return value, False
    if t is float:
        if value != value or value in (float("inf"), float("-inf")) or not value.is_integer():
            raise CanonicalJSONError(f"float {value!r} is not allowed in canonical JSON")
        as_int = int(value)
        if not MIN_SAFE_INTEGER <= as_int <= MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"integer {as_int} is outside the canonical JSON range")
        return as_int, True
    if t is dict:
        out: dict[str, Any] | None = None
        for k, v in value.items():
            if type(k) is not str:
                raise CanonicalJSONError(f"object key {k!r} is not a string")
            nv, changed = _normalise(v, depth + 1)
            if changed:
                if out is None:
                    out = dict(value)
                out[k] = nv
        return (out, True) if out is not None else (value, False)
    if t is list or t is tuple:
        items: list[Any] | None = None
        for i, v in enumerate(value):
            nv, changed = _normalise(v, depth + 1)
            if changed:
                if items is None:
                    items = list(value)
                items[i] = nv
        return (items, True) if items is not None else (value, False)
    # Subclasses (IntEnum, StrEnum, dict subclasses): encode as their base type.
    if isinstance(value, bool):
        return bool(value), True
    if isinstance(value, int):
        return _normalise(int(value), depth)[0], True
    if isinstance(value, float):
        return _normalise(float(value), depth)[0], True
    if isinstance(value, str):
        return str(value), True
    if isinstance(value, dict):
        return _normalise(dict(value), depth)[0], True
    if isinstance(value, list | tuple):
        return _normalise(list(value), depth)[0], True
    raise CanonicalJSONError(f"value of type {t.__name__} cannot be encoded as JSON")


def check(value: Any) -> None:
    """Raise `CanonicalJSONError` unless `value` is valid strict canonical JSON as it stands.

    Stricter than `encode`: floats are refused even when integral, as they are when an
    event arrives (spec: rooms/fragments/v6-canonical-json).
    """
    _check_strict(value, 0)


def _check_strict(value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise CanonicalJSONError(f"JSON nested deeper than {MAX_DEPTH} levels")
    t = type(value)
    if t is str or t is bool or value is None:
        return
    if t is int:
        if not MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalJSONError(f"integer {value} is outside the canonical JSON range")
        return
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise CanonicalJSONError(f"object key {k!r} is not a string")
            _check_strict(v, depth + 1)
        return
    if t is list:
        for v in value:
            _check_strict(v, depth + 1)
        return
    if t is float:
        raise CanonicalJSONError(f"float {value!r} is not allowed")
    raise CanonicalJSONError(f"value of type {t.__name__} is not JSON")


def nested_deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether some value inside `value` sits more than `limit` levels below it, counted as `check`
    counts (the value itself is level 0). Only containers are visited, and the walk stops at
    `limit`, so its recursion is bounded whatever the input."""
    t = type(value)
    if t is dict:
        children: Any = value.values()
    elif t is list:
        children = value
    else:
        return False
    if not children:
        return False
    if limit <= 0:
        return True
    for child in children:
        tc = type(child)
        if (tc is dict or tc is list) and nested_deeper_than(child, limit - 1):
            return True
    return False


def encode(value: Any) -> bytes:
    """The canonical JSON bytes of `value` (spec: appendices.md "Canonical JSON")."""
    normalised, _ = _normalise(value, 0)
    try:
        return orjson.dumps(normalised, option=_ORJSON_OPTS)
    except (orjson.JSONEncodeError, TypeError) as e:  # pragma: no cover - _normalise catches these first
        raise CanonicalJSONError(str(e)) from None


def encode_trusted(value: Any) -> bytes:
    """Canonical JSON of a value already known to be valid (checked at ingress): no tree walk.

    Integers out of range still raise; a float would be written as a float, so callers must only
    pass values that went through `check` or were built by this server.
    """
    try:
        return orjson.dumps(value, option=_ORJSON_OPTS)
    except (orjson.JSONEncodeError, TypeError) as e:
        raise CanonicalJSONError(str(e)) from None


def encode_lenient(value: Any) -> bytes:
    """Canonical JSON as rooms v1–v5 tolerate it: out-of-range integers and floats kept as they are.

    spec: rooms/fragments/v1-canonical-json — servers must not strictly enforce the format there.
    The reference Python encoder defines the bytes of such values, so it is used for them.
    """
    try:
        return encode_trusted(value) if _is_strict_safe(value, 0) else canonicaljson.encode_canonical_json(value)
    except ValueError as e:
        raise CanonicalJSONError(str(e)) from None


def _is_strict_safe(value: Any, depth: int) -> bool:
    try:
        _check_strict(value, depth)
    except CanonicalJSONError:
        return False
    return True


def encode_for_room(value: Any, strict: bool) -> bytes:
    """Encode with the room version's strictness (`RoomVersion.strict_canonical_json`)."""
    return encode(value) if strict else encode_lenient(value)


def decode(data: bytes | str) -> Any:
    """Parse JSON text (any formatting). Raises `CanonicalJSONError` on malformed input."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CanonicalJSONError(f"invalid JSON: {e}") from None
