"""Strict validation of JSON-like input (request bodies, filters, the config) into typed objects.

A model is a class with annotated fields, as for a dataclass:

    class EventFilterModel(Schema, extra="allow"):
        limit: int | None = field(default=None, gt=0)
        types: list[str] | None = None

`EventFilterModel.validate(data)` checks a dict and returns an instance; `EventFilterModel(limit=5)`
does the same from keywords. Types are strict, as JSON says them: no "1" for 1, no 1.0 or true for
an integer, no 1 for a boolean (float fields take integers). Supported: str, int, float, bool, Any,
None, `X | Y`, `list[T]`, `dict[str, T]`, `Literal[...]`, nested models and `pathlib.Path` (from a
string).

Why not pydantic: importing its model machinery cost the server ~85 ms of start-up and ~10 MiB of
RSS, for the few checks we need. Here class creation only records the fields (it happens on import,
on the start path); annotations are resolved on a class's first validation and compiled into a
table of small closures, so validating a body is one loop over the keys it holds. Plain defaults
stay class attributes: an instance stores only what its input gave.

Problems are collected (all of them, in field order, then unknown keys) into one `SchemaError`;
each says where it is (`('room', 'timeline', 'limit')`), its kind and what was expected.
"""

from __future__ import annotations

import operator
import types
import typing
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any, ClassVar, Literal, NamedTuple, NoReturn, Self, Union, dataclass_transform, get_args, get_origin

Extra = Literal["allow", "ignore", "forbid"]
Check = Callable[[Any], Any]

MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
_RESERVED = frozenset({"validate", "dump", "fields_set", "extra"})


class Problem(NamedTuple):
    """One thing wrong with the input. `kind` is "missing", "unknown" (a key the model refuses),
    "type" (wrong JSON type) or "value" (right type, refused value)."""

    loc: tuple[str | int, ...]
    kind: str
    message: str

    @property
    def where(self) -> str:
        """The location as a dotted path (`room.timeline.limit`, `initial_state.0.type`)."""
        return ".".join(str(p) for p in self.loc)

    def __str__(self) -> str:
        return f"{self.where or '(top level)'}: {self.message}"


class SchemaError(ValueError):
    """The input does not match the model; `problems` says where and why."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        return "; ".join(str(p) for p in self.problems)


def _fail(kind: str, message: str) -> NoReturn:
    raise SchemaError([Problem((), kind, message)])


def _nest(problems: list[Problem] | None, error: SchemaError, at: Any) -> list[Problem]:
    out = problems if problems is not None else []
    out.extend(Problem((at, *p.loc), p.kind, p.message) for p in error.problems)
    return out


class Field:
    """A field's declaration: default, input key (`alias`), constraints and documentation."""

    __slots__ = (
        "alias", "check", "default", "default_factory", "description", "ge", "gt", "key", "le", "lt",
        "max_length", "min_length", "name",
    )  # fmt: skip

    def __init__(
        self,
        default: Any = MISSING,
        *,
        default_factory: Callable[[], Any] | None = None,
        alias: str | None = None,
        description: str | None = None,
        gt: float | None = None,
        ge: float | None = None,
        lt: float | None = None,
        le: float | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        check: Check | None = None,
    ) -> None:
        if default is not MISSING and default_factory is not None:
            raise TypeError("a field takes a default or a default_factory, not both")
        self.name = ""
        self.key = alias or ""
        self.alias = alias
        self.default = default
        self.default_factory = default_factory
        self.description = description
        self.gt, self.ge, self.lt, self.le = gt, ge, lt, le
        self.min_length, self.max_length = min_length, max_length
        self.check = check

    @property
    def required(self) -> bool:
        return self.default is MISSING and self.default_factory is None

    def get_default(self) -> Any:
        """The default value (a fresh one from `default_factory`); LookupError for a required field."""
        if self.default_factory is not None:
            return self.default_factory()
        if self.default is MISSING:
            raise LookupError(f"{self.name} is required")
        return self.default

    def __repr__(self) -> str:
        return f"Field({self.name!r}, default={self.default!r})"


def field(
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | None = None,
    alias: str | None = None,
    description: str | None = None,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
    check: Check | None = None,
) -> Any:
    """Declare a field with more than a plain default (`default=` by keyword: type checkers only
    see it so). `alias` is the key in the input (and the dump); `check` is called with the
    validated value (not with None) and may raise ValueError, whose text becomes the message."""
    return Field(
        default,
        default_factory=default_factory,
        alias=alias,
        description=description,
        gt=gt,
        ge=ge,
        lt=lt,
        le=le,
        min_length=min_length,
        max_length=max_length,
        check=check,
    )


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    return get_origin(annotation) is typing.ClassVar


def _first_validate(cls: type[Schema], data: Any, obj: Schema | None = None) -> Any:
    compiled = cls.__dict__["validate"]
    if isinstance(compiled, staticmethod):  # compiled since the caller looked `validate` up
        return compiled.__func__(data, obj)
    return _compile(cls)(data, obj)


@dataclass_transform(kw_only_default=True, field_specifiers=(field, Field))
class SchemaMeta(type):
    """Records a model's fields at class creation, without resolving their types (that is left to
    the first validation). Plain defaults stay class attributes, so an instance only stores what
    its input gave (and fresh `default_factory` values)."""

    def __new__(
        mcls,
        name: str,
        bases: tuple[type, ...],
        ns: dict[str, Any],
        *,
        extra: Extra | None = None,
        frozen: bool | None = None,
        **kwargs: Any,
    ) -> SchemaMeta:
        own: dict[str, Field] = {}
        for fname, annotation in ns.get("__annotations__", {}).items():
            if _is_classvar(annotation):
                continue
            if fname.startswith("_") or fname in _RESERVED:
                raise TypeError(f"{name}.{fname}: field names may not start with _ or be one of {sorted(_RESERVED)}")
            value = ns.pop(fname, MISSING)
            f = value if isinstance(value, Field) else Field(value)
            f.name = fname
            f.key = f.alias or fname
            if f.default is not MISSING:
                if isinstance(f.default, list | dict | set) or (
                    isinstance(f.default, Schema) and not f.default.__schema_frozen__
                ):
                    raise TypeError(f"{name}.{fname}: a mutable default would be shared; use default_factory")
                ns[fname] = f.default
            own[fname] = f
        ns["validate"] = classmethod(_first_validate)  # each class compiles its own, on first use
        cls = super().__new__(mcls, name, bases, ns, **kwargs)
        fields: dict[str, Field] = {}
        for base in reversed(bases):
            fields.update(getattr(base, "__schema_fields__", {}))
        fields.update(own)  # a redefined field keeps its place
        type.__setattr__(cls, "__schema_fields__", fields)
        if extra is not None:
            if extra not in ("allow", "ignore", "forbid"):
                raise TypeError(f"{name}: extra must be 'allow', 'ignore' or 'forbid'")
            type.__setattr__(cls, "__schema_extra__", extra)
        if frozen is not None:
            type.__setattr__(cls, "__schema_frozen__", frozen)
            type.__setattr__(cls, "__setattr__", _frozen_setattr if frozen else object.__setattr__)
            type.__setattr__(cls, "__delattr__", _frozen_setattr if frozen else object.__delattr__)
            type.__setattr__(cls, "__hash__", _hash if frozen else None)
        return cls

    def __init__(cls, name: str, bases: tuple[type, ...], ns: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(name, bases, ns)


def _frozen_setattr(self: Schema, name: str, value: Any = None) -> None:
    raise AttributeError(f"{type(self).__name__} is frozen: {name} cannot be changed")


def _hash(self: Schema) -> int:
    return hash((type(self), *(getattr(self, n) for n in self.__schema_fields__)))


class Schema(metaclass=SchemaMeta):
    """Base of the models. Class keywords: `extra` ("ignore" by default: unknown keys are dropped;
    "allow": kept in `.extra` and in dumps; "forbid": refused) and `frozen`."""

    __schema_fields__: ClassVar[dict[str, Field]]
    __schema_extra__: ClassVar[Extra] = "ignore"
    __schema_frozen__: ClassVar[bool] = False
    # set on an instance only when there is something to say
    _extra: ClassVar[dict[str, Any] | None] = None
    _defaulted: ClassVar[list[str] | tuple[()]] = ()  # fields filled by their default_factory

    def __init__(self, **data: Any) -> None:
        type(self).validate(data, self)  # type: ignore[call-arg]

    @classmethod
    def validate(cls, data: Any) -> Self:
        """Check `data` (a dict, as decoded from JSON or TOML) and build an instance; SchemaError if bad.
        (Each class gets its own compiled version: see `_compile`.)"""
        return _first_validate(cls, data)  # type: ignore[no-any-return]

    @property
    def fields_set(self) -> frozenset[str]:
        """The names of the fields the input gave (the others hold their defaults)."""
        given = self.__dict__
        return frozenset(n for n in self.__schema_fields__ if n in given and n not in self._defaulted)

    @property
    def extra(self) -> dict[str, Any]:
        """Input keys the model does not declare, when the class keeps them (`extra="allow"`)."""
        extra = self.__dict__.get("_extra")
        if extra is None:
            extra = self.__dict__["_extra"] = {}
        return extra

    def dump(self, exclude_none: bool = False) -> dict[str, Any]:
        """Plain JSON-able data (nested models dumped, paths as strings), keyed as the input is."""
        out: dict[str, Any] = {}
        for f in self.__schema_fields__.values():
            value = getattr(self, f.name)
            if value is None and exclude_none:
                continue
            out[f.key] = _plain(value, exclude_none)
        if self._extra:
            for k, value in self._extra.items():
                if value is None and exclude_none:
                    continue
                out[k] = _plain(value, exclude_none)
        return out

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Schema)
        same = all(getattr(self, n) == getattr(other, n) for n in self.__schema_fields__)
        return same and (self._extra or {}) == (other._extra or {})

    __hash__ = None  # type: ignore[assignment]  # mutable unless frozen (SchemaMeta)

    def __repr__(self) -> str:
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__schema_fields__)
        return f"{type(self).__name__}({args})"


def fields(model: type[Schema]) -> dict[str, Field]:
    """The model's fields by attribute name, in declaration order (inherited ones first)."""
    return dict(model.__schema_fields__)


def prepare(model: type[Schema]) -> None:
    """Resolve and compile the model now rather than on its first validation (tests use it to catch
    an unsupported annotation early)."""
    if not isinstance(model.__dict__["validate"], staticmethod):
        _compile(model)


def _plain(value: Any, exclude_none: bool) -> Any:
    if isinstance(value, Schema):
        return value.dump(exclude_none)
    if isinstance(value, list):
        return [_plain(v, exclude_none) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v, exclude_none) for k, v in value.items()}
    if isinstance(value, PurePath):
        return str(value)
    return value


# -- compilation ---------------------------------------------------------------------------------


def _compile(cls: type[Schema]) -> Callable[[Any, Schema | None], Any]:
    """Resolve the annotations and build the class's `validate`: one pass over the input's keys, each
    looked up in a table of (attribute, shortcut type, check, position, required)."""
    hints = typing.get_type_hints(cls)
    table: dict[Any, tuple[str, type | None, Check, int, bool]] = {}
    required: list[tuple[int, str]] = []
    factories: list[tuple[str, str, Callable[[], Any]]] = []
    for index, (name, f) in enumerate(cls.__schema_fields__.items()):
        try:
            check, fast, _ = _field_check(hints[name], f)
        except TypeError as e:
            raise TypeError(f"{cls.__qualname__}.{name}: {e}") from None
        table[f.key] = (name, fast, check, index, f.required)
        if f.required:
            required.append((index, f.key))
        elif f.default_factory is not None:
            factories.append((f.key, name, f.default_factory))
    n_required = len(required)
    n_fields = len(table)
    mode = cls.__schema_extra__
    new = cls.__new__

    def validate(data: Any, obj: Schema | None = None) -> Any:
        if not isinstance(data, dict):
            _fail("type", "expected an object")
        if obj is None:
            obj = new(cls)
        values = obj.__dict__
        problems: list[tuple[int, Problem]] | None = None
        extra: dict[str, Any] | None = None
        given_required = 0
        for key, value in data.items():
            entry = table.get(key)
            if entry is None:
                if mode == "allow":
                    if extra is None:
                        extra = {key: value}
                    else:
                        extra[key] = value
                elif mode == "forbid":
                    problems = problems if problems is not None else []
                    problems.append((n_fields, Problem((key,), "unknown", "unknown key")))
                continue
            name, fast, check, index, is_required = entry
            if is_required:
                given_required += 1
            if type(value) is not fast:
                try:
                    value = check(value)
                except SchemaError as e:
                    problems = problems if problems is not None else []
                    problems.extend((index, Problem((key, *p.loc), p.kind, p.message)) for p in e.problems)
                    continue
            values[name] = value
        if given_required != n_required:
            problems = problems if problems is not None else []
            problems.extend((i, Problem((k,), "missing", "required")) for i, k in required if k not in data)
        if problems:
            problems.sort(key=_first)  # in field order, as the class declares them; unknown keys last
            raise SchemaError([p for _, p in problems])
        if factories:
            defaulted = []
            for key, name, factory in factories:
                if key not in data:
                    values[name] = factory()
                    defaulted.append(name)
            if defaulted:
                values["_defaulted"] = defaulted
        if extra is not None:
            values["_extra"] = extra
        return obj

    type.__setattr__(cls, "validate", staticmethod(validate))
    return validate


def _first(item: tuple[int, Problem]) -> int:
    return item[0]


# A compiled type is (check, fast, expected): `check(value)` returns the value to keep or raises
# SchemaError; a value whose type is exactly `fast` is known good and kept without calling `check`;
# `expected` describes the type for messages ("an integer").
Compiled = tuple[Check, type | None, str]


def _field_check(tp: Any, f: Field) -> Compiled:
    check, fast, expected = _type_check(tp)
    if any(c is not None for c in (f.gt, f.ge, f.lt, f.le)) and not _is_numeric(tp):
        raise TypeError("gt/ge/lt/le need an int or float field")
    sized = _has_length(tp)
    if (f.min_length is not None or f.max_length is not None) and sized is None:
        raise TypeError("min_length/max_length need a str, list or dict field")
    unit = "characters long" if sized == "str" else "items"
    # (compare, limit, by length, message): the value passes when compare(value or its length, limit)
    tests: list[tuple[Callable[[Any, Any], bool], Any, bool, str]] = []
    if f.gt is not None:
        tests.append((operator.gt, f.gt, False, f"must be greater than {f.gt}"))
    if f.ge is not None:
        tests.append((operator.ge, f.ge, False, f"must be at least {f.ge}"))
    if f.lt is not None:
        tests.append((operator.lt, f.lt, False, f"must be less than {f.lt}"))
    if f.le is not None:
        tests.append((operator.le, f.le, False, f"must be at most {f.le}"))
    if f.min_length is not None:
        tests.append((operator.ge, f.min_length, True, f"must be at least {f.min_length} {unit}"))
    if f.max_length is not None:
        tests.append((operator.le, f.max_length, True, f"must be at most {f.max_length} {unit}"))
    custom = f.check
    if not tests and custom is None:
        return check, fast, expected
    inner = check

    def constrained(value: Any) -> Any:
        value = inner(value)
        if value is None:
            return None
        for compare, limit, by_length, message in tests:
            if not compare(len(value) if by_length else value, limit):
                _fail("value", message)
        if custom is not None:
            try:
                value = custom(value)
            except SchemaError:
                raise
            except ValueError as e:
                _fail("value", str(e))
        return value

    return constrained, None, expected  # no shortcut: every value goes through the constraints


def _non_none(tp: Any) -> list[Any]:
    if get_origin(tp) in (Union, types.UnionType):
        return [a for a in get_args(tp) if a is not type(None)]
    return [tp]


def _is_numeric(tp: Any) -> bool:
    return all(a in (int, float) for a in _non_none(tp))


def _has_length(tp: Any) -> str | None:
    kinds = {"str" if a is str else "container" if get_origin(a) in (list, dict) else None for a in _non_none(tp)}
    return kinds.pop() if len(kinds) == 1 and None not in kinds else None


def _identity(value: Any) -> Any:
    return value


def _check_str(value: Any) -> Any:
    if isinstance(value, str):
        return value
    _fail("type", "expected a string")


def _check_int(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    _fail("type", "expected an integer")


def _check_float(value: Any) -> Any:
    if isinstance(value, float):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    _fail("type", "expected a number")


def _check_bool(value: Any) -> Any:
    if value is True or value is False:
        return value
    _fail("type", "expected a boolean")


def _check_none(value: Any) -> Any:
    if value is None:
        return None
    _fail("type", "expected null")


def _check_path(value: Any) -> Any:
    if isinstance(value, PurePath):
        return Path(value)
    if isinstance(value, str):
        return Path(value)
    _fail("type", "expected a path (a string)")


_SCALARS: dict[Any, Compiled] = {
    str: (_check_str, str, "a string"),
    int: (_check_int, int, "an integer"),
    float: (_check_float, float, "a number"),
    bool: (_check_bool, bool, "a boolean"),
    type(None): (_check_none, type(None), "null"),
    Any: (_identity, None, "anything"),
    Path: (_check_path, None, "a path (a string)"),
}


def _type_check(tp: Any) -> Compiled:
    known = _SCALARS.get(tp)
    if known is not None:
        return known
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _union_check(get_args(tp))
    if origin is Literal:
        return _literal_check(get_args(tp))
    if origin is list:
        (item,) = get_args(tp) or (Any,)
        return _list_check(item)
    if origin is dict:
        key, item = get_args(tp) or (str, Any)
        if key is not str:
            raise TypeError(f"dict keys must be str, not {key!r}")
        return _dict_check(item)
    if isinstance(tp, type) and issubclass(tp, Schema):
        return _model_check(tp)
    raise TypeError(f"unsupported type {tp!r}")


def _model_check(model: type[Schema]) -> Compiled:
    def check(value: Any) -> Any:
        if isinstance(value, dict):
            return model.validate(value)
        if isinstance(value, model):
            return value
        _fail("type", "expected an object")

    return check, model, "an object"


def _literal_check(values: tuple[Any, ...]) -> Compiled:
    message = "must be one of " + ", ".join(repr(v) for v in values)
    expected = "one of " + ", ".join(repr(v) for v in values)
    if all(type(v) is str for v in values):
        allowed = frozenset(values)

        def check_str(value: Any) -> Any:
            if isinstance(value, str) and value in allowed:
                return value
            _fail("value", message)

        return check_str, None, expected

    def check(value: Any) -> Any:
        for v in values:  # by type too: True is not 1 here
            if type(value) is type(v) and value == v:
                return value
        _fail("value", message)

    return check, None, expected


def _list_check(item: Any) -> Compiled:
    check, fast, _ = _type_check(item)
    if check is _identity:

        def check_any(value: Any) -> Any:
            if isinstance(value, list):
                return list(value)
            _fail("type", "expected an array")

        return check_any, None, "an array"

    def check_list(value: Any) -> Any:
        if not isinstance(value, list):
            _fail("type", "expected an array")
        for v in value:
            if type(v) is not fast:
                break
        else:
            return list(value)
        out = []
        problems = None
        for i, v in enumerate(value):
            if type(v) is not fast:
                try:
                    v = check(v)
                except SchemaError as e:
                    problems = _nest(problems, e, i)
                    continue
            out.append(v)
        if problems:
            raise SchemaError(problems)
        return out

    return check_list, None, "an array"


def _dict_check(item: Any) -> Compiled:
    check, fast, _ = _type_check(item)

    def check_dict(value: Any) -> Any:
        if not isinstance(value, dict):
            _fail("type", "expected an object")
        out = {}
        problems = None
        for k, v in value.items():
            if type(k) is not str:
                problems = problems if problems is not None else []
                problems.append(Problem((k,), "type", "keys must be strings"))
                continue
            if type(v) is not fast:
                try:
                    v = check(v)
                except SchemaError as e:
                    problems = _nest(problems, e, k)
                    continue
            out[k] = v
        if problems:
            raise SchemaError(problems)
        return out

    return check_dict, None, "an object"


def _union_check(members: tuple[Any, ...]) -> Compiled:
    nullable = type(None) in members
    compiled = [_type_check(m) for m in members if m is not type(None)]
    if len(compiled) == 1:  # X | None: the common case, kept cheap
        inner, fast, expected = compiled[0]
        if not nullable:
            return compiled[0]

        def check_optional(value: Any) -> Any:
            if value is None:
                return None
            return inner(value)

        return check_optional, fast, expected
    expected = " or ".join(e for _, _, e in compiled)
    fasts = tuple(f for _, f, _ in compiled if f is not None)
    checks = [c for c, _, _ in compiled]

    def check_union(value: Any) -> Any:
        if value is None and nullable:
            return None
        if type(value) in fasts:
            return value
        deeper: SchemaError | None = None
        for check in checks:  # left to right: the first member that accepts the value wins
            try:
                return check(value)
            except SchemaError as e:
                # a member that took the type but refused what is inside says more than "expected"
                if deeper is None and not (len(e.problems) == 1 and e.problems[0][:2] == ((), "type")):
                    deeper = e
        if deeper is not None:
            raise deeper
        _fail("type", f"expected {expected}")

    return check_union, None, expected


__all__ = [
    "MISSING",
    "Field",
    "Problem",
    "Schema",
    "SchemaError",
    "field",
    "fields",
    "prepare",
]
