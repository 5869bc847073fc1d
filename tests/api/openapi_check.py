"""Validate the server's JSON responses against the spec's OpenAPI description (client-server v1.19).

`check_response(method, path, status, content_type, body)` finds the documented operation for a
concrete request path, picks the response schema for the status (or `default`), and validates the
body with JSON Schema Draft 2020-12 (`$ref`s resolve within the bundled document). Undocumented
error statuses are held to the spec's standard error shape (`errcode` is a string); an undocumented
401 may also be an interactive-auth challenge (`flows`), and a 401 for a missing or unknown token is
a plain error even where the spec documents the interactive-auth 401. Formats (the spec's `mx-*`
ones and the rest) are not checked. Paths under `r0` are matched as `v3`; `HEAD`/`OPTIONS`, paths
the spec does not document and non-JSON bodies (media) are not checked, except that a JSON-only
documented response sent as another content type is a mismatch.

Validators are compiled once per process and cached by (operation, status): routing costs ~30 µs,
validating a typical body well under a millisecond (a large /sync body ~2 ms).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SPEC_FILE = Path(__file__).resolve().parents[1] / "openapi" / "client-server.json"
BASE_URI = "urn:matrix:client-server-v1.19"
METHODS = ("get", "put", "post", "delete", "patch")

# spec: client-server-api "Standard error response": every error body carries an `errcode`.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["errcode"],
    "properties": {"errcode": {"type": "string"}, "error": {"type": "string"}},
}

# spec: client-server-api "Using access tokens": any authenticated endpoint may answer these with 401.
_TOKEN_ERRORS = frozenset({"M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"})

# Answers the server gives on purpose where the schema has no room for them: (operationId, status)
# whose body may be exactly `{}`. GET /voip/turnServer without a TURN server: the spec defines only
# 200 and 429, its 200 schema describes credentials; `{}` is Synapse's answer and what matrix-js-sdk
# takes as "no TURN" (homeserver/api/client/voip.py).
_EMPTY_OBJECT_ALLOWED = frozenset({("getTurnServer", 200)})

_UIA_SCHEMA_POINTER = "/paths/~1_matrix~1client~1v3~1delete_devices/post/responses/401/content/application~1json/schema"

# Older or alternative version prefixes that serve the same operations as the documented one.
_PREFIX_ALIASES = (
    (re.compile(r"^/_matrix/client/(?:r0|v1|v3)/"), ("/_matrix/client/v3/", "/_matrix/client/v1/")),
    (re.compile(r"^/_matrix/media/(?:r0|v1|v3)/"), ("/_matrix/media/v3/", "/_matrix/media/v1/")),
)


class OpenAPIMismatch(AssertionError):
    """A response body does not match its documented schema."""


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    template: str  # the documented path, trailing space removed
    key: str  # the key in `paths` (may carry the trailing space)
    operation_id: str
    deprecated: bool

    @property
    def pointer(self) -> str:
        """JSON pointer to the operation in the document."""
        return "/paths/" + _escape(self.key) + "/" + self.method.lower()


@dataclass
class _Route:
    pattern: re.Pattern[str]
    literal_chars: int  # more literal text = more specific; tried first
    operations: dict[str, list[Operation]] = field(default_factory=dict)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _compile_template(template: str) -> tuple[re.Pattern[str], int]:
    parts = re.split(r"(\{[^}]+\})", template)
    regex = "".join("[^/]*" if p.startswith("{") else re.escape(p) for p in parts)
    literal = sum(len(p) for p in parts if not p.startswith("{"))
    return re.compile(f"^{regex}$"), literal


class OpenAPIChecker:
    """Routes concrete requests to documented operations and validates their response bodies."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self._registry: Registry[Any] = Registry().with_resource(BASE_URI, DRAFT202012.create_resource(doc))
        self._validators: dict[tuple[str, str], tuple[Draft202012Validator, str] | None] = {}
        routes: dict[str, _Route] = {}
        for key, item in doc["paths"].items():
            template = key.strip()
            route = routes.get(template)
            if route is None:
                pattern, literal = _compile_template(template)
                route = routes[template] = _Route(pattern, literal)
            for method in METHODS:
                op = item.get(method)
                if op is None:
                    continue
                operation = Operation(
                    method.upper(), template, key, op.get("operationId", ""), bool(op.get("deprecated", False))
                )
                route.operations.setdefault(method.upper(), []).append(operation)
        # Indexed by segment count (a parameter never spans a `/`); literal paths win over templated
        # ones (`/pushrules/global/` before `/pushrules/{x}/`).
        self._routes: dict[int, list[_Route]] = {}
        for template, route in routes.items():
            self._routes.setdefault(template.count("/"), []).append(route)
        for bucket in self._routes.values():
            bucket.sort(key=lambda r: -r.literal_chars)
        self._error_validator = Draft202012Validator(ERROR_SCHEMA)
        # spec: client-server-api "User-interactive authentication API": any endpoint that uses it may
        # answer 401 with the flows, documented or not; the schema is the spec's own (from /delete_devices).
        self._unauthorized_validator = Draft202012Validator(
            {"anyOf": [ERROR_SCHEMA, {"$ref": f"{BASE_URI}#{_UIA_SCHEMA_POINTER}"}]}, registry=self._registry
        )

    # -- routing ---------------------------------------------------------------------------------

    def _candidate_paths(self, path: str) -> Iterator[str]:
        path = urlsplit(path).path
        yield path
        for pattern, targets in _PREFIX_ALIASES:
            if pattern.match(path):
                rest = pattern.sub("", path, count=1)
                for t in targets:
                    yield t + rest
        # Clients differ on trailing slashes (`state/m.room.topic/` vs `state/m.room.topic`).
        yield path[:-1] if path.endswith("/") else path + "/"

    def operations(self, method: str, path: str) -> list[Operation]:
        """The documented operations for a concrete request (two when the spec documents a pair)."""
        method = method.upper()
        for candidate in self._candidate_paths(path):
            for route in self._routes.get(candidate.count("/"), ()):
                if route.pattern.match(candidate) or route.pattern.match(unquote(candidate)):
                    ops = route.operations.get(method)
                    if ops:
                        return ops
        return []

    # -- schemas ---------------------------------------------------------------------------------

    def response_schema_pointer(self, op: Operation, status: int) -> str | None:
        """JSON pointer of the JSON schema documented for this status (or `default`), if any."""
        responses = self.doc["paths"][op.key][op.method.lower()].get("responses", {})
        for code in (str(status), f"{str(status)[0]}XX", "default"):
            response = responses.get(code)
            if response is None:
                continue
            media = (response.get("content") or {}).get("application/json")
            if media is None or "schema" not in media:
                return None
            return f"{op.pointer}/responses/{code}/content/application~1json/schema"
        return None

    def documented_content_types(self, op: Operation, status: int) -> list[str]:
        responses = self.doc["paths"][op.key][op.method.lower()].get("responses", {})
        response = responses.get(str(status)) or responses.get("default") or {}
        return list((response.get("content") or {}).keys())

    def _validator(self, op: Operation, status: int) -> tuple[Draft202012Validator, str] | None:
        cache_key = (op.pointer, str(status))
        if cache_key not in self._validators:
            pointer = self.response_schema_pointer(op, status)
            if pointer is None:
                self._validators[cache_key] = None
            else:
                schema = {"$ref": f"{BASE_URI}#{pointer}"}
                self._validators[cache_key] = (Draft202012Validator(schema, registry=self._registry), pointer)
        return self._validators[cache_key]

    # -- checking --------------------------------------------------------------------------------

    def errors(self, op: Operation, status: int, body: Any) -> tuple[list[ValidationError], str | None]:
        """Validation errors of `body` against the schema for (op, status), and that schema's pointer."""
        if body == {} and (op.operation_id, status) in _EMPTY_OBJECT_ALLOWED:
            return [], None
        compiled = self._validator(op, status)
        if status == 401 and isinstance(body, dict) and body.get("errcode") in _TOKEN_ERRORS:
            compiled = None  # a missing or bad token, not the documented (interactive-auth) 401
        if compiled is not None:
            validator, pointer = compiled
            return list(validator.iter_errors(body)), pointer
        if status == 401:
            return list(self._unauthorized_validator.iter_errors(body)), "(standard error or interactive-auth 401)"
        if status >= 400:
            return list(self._error_validator.iter_errors(body)), "(standard error response)"
        return [], None

    def check(self, method: str, path: str, status: int, content_type: str | None, body: Any) -> None:
        """Raise `OpenAPIMismatch` if a documented endpoint answered with a body its schema forbids."""
        ops = self.operations(method, path)
        if not ops:
            return
        is_json = content_type is None or content_type == "application/json"
        if not is_json:
            documented = {ct for op in ops for ct in self.documented_content_types(op, status)}
            if documented == {"application/json"}:
                raise OpenAPIMismatch(
                    f"{_describe(ops, method, path, status)}: the spec documents an application/json body, "
                    f"the server sent {content_type}"
                )
            return
        failures: list[tuple[Operation, str | None, list[ValidationError]]] = []
        for op in ops:
            errs, pointer = self.errors(op, status, body)
            if not errs:
                return  # matches one of the documented operations
            failures.append((op, pointer, errs))
        raise OpenAPIMismatch(_format_failures(method, path, status, body, failures))


def _describe(ops: Iterable[Operation], method: str, path: str, status: int) -> str:
    names = " / ".join(f"{op.operation_id} ({op.method} {op.template})" for op in ops)
    return f"{method.upper()} {urlsplit(path).path} -> {status}, documented as {names}"


def _json_path(error: ValidationError) -> str:
    out = "$"
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if re.fullmatch(r"\w+", part) else f"[{part!r}]"
    return out


def _schema_path(pointer: str | None, error: ValidationError) -> str:
    # The validator's root is a `$ref` to `pointer`; drop that first hop from the error's schema path.
    parts = [str(p) for p in error.absolute_schema_path]
    if parts and parts[0] == "$ref":
        parts = parts[1:]
    return "/".join([pointer or "", *(_escape(p) for p in parts)])


def _format_failures(
    method: str, path: str, status: int, body: Any, failures: list[tuple[Operation, str | None, list[ValidationError]]]
) -> str:
    lines = [f"OpenAPI mismatch: {_describe([f[0] for f in failures], method, path, status)}"]
    for op, pointer, errs in failures:
        best = best_match(errs)
        shown = [best, *[e for e in errs if e is not best][:2]]
        for err in shown:
            lines.append(f"  [{op.operation_id}] at {_json_path(err)}: {err.message}")
            lines.append(f"      schema: {_schema_path(pointer, err)}")
        if len(errs) > len(shown):
            lines.append(f"  [{op.operation_id}] … and {len(errs) - len(shown)} more")
    text = json.dumps(body, default=str)
    lines.append("  body: " + (text if len(text) <= 600 else text[:600] + "…"))
    return "\n".join(lines)


@functools.cache
def checker() -> OpenAPIChecker:
    """The process-wide checker (the document is parsed and routes compiled once)."""
    with SPEC_FILE.open(encoding="utf-8") as f:
        return OpenAPIChecker(json.load(f))


def check_response(method: str, path: str, status: int, content_type: str | None, body: Any) -> None:
    """Validate one response; a no-op for paths the spec does not document, and for HEAD/OPTIONS."""
    if method.upper() in ("HEAD", "OPTIONS"):
        return
    checker().check(method, path, status, content_type, body)


__all__ = ["OpenAPIChecker", "OpenAPIMismatch", "Operation", "check_response", "checker"]
