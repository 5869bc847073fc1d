"""homeserver.schema: the strict validator behind the sync filters (request bodies and the config
use pydantic through homeserver.validation: tests/unit/test_validation.py, tests/unit/test_config.py)."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, Literal

import pytest

import homeserver
from homeserver.errors import MatrixError
from homeserver.schema import Problem, Schema, SchemaError, field, fields, prepare
from homeserver.sync.filters import validate_filter


class Scalars(Schema):
    s: str | None = None
    i: int | None = None
    f: float | None = None
    b: bool | None = None
    a: Any = None
    lit: Literal["token", "open", "closed"] | None = None
    n: Literal[1, 2] | None = None
    either: int | str | None = None
    path: Path | None = None


class Leaf(Schema):
    limit: int | None = field(default=None, gt=0)
    name: str


class Branch(Schema):
    timeline: Leaf | None = None
    leaves: list[Leaf] = field(default_factory=list)


class Root(Schema):
    room: Branch | None = None
    tags: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


class Kept(Schema, extra="allow"):
    x: int = 0


class Dropped(Schema):
    x: int = 0


class Refused(Schema, extra="forbid"):
    x: int = 0
    y: int = 0


class Aliased(Schema):
    from_: str = field(alias="from")
    relates_to: dict[str, Any] | None = field(default=None, alias="m.relates_to")


class Bounded(Schema):
    gt: int = field(default=1, gt=0)
    ge: float = field(default=1.0, ge=1)
    lt: int = field(default=0, lt=10)
    le: int = field(default=0, le=10)
    text: str = field(default="ab", min_length=2, max_length=3)
    items: list[int] = field(default_factory=lambda: [1], min_length=1, max_length=2)


class Frozen(Schema, extra="forbid", frozen=True):
    x: int = 1


class Lazy(Schema):
    later: NotDefinedAnywhere  # noqa: F821  (resolved only on first use)


def problems(model: type[Schema], data: Any) -> list[tuple[tuple[str | int, ...], str, str]]:
    with pytest.raises(SchemaError) as info:
        model.validate(data)
    return [(p.loc, p.kind, p.message) for p in info.value.problems]


def one(model: type[Schema], data: Any) -> tuple[tuple[str | int, ...], str, str]:
    (found,) = problems(model, data)
    return found


# -- types -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "good", "bad", "message"),
    [
        ("s", ["", "x"], [1, 1.5, True, [], {}, b"x"], "expected a string"),
        ("i", [0, -3, 2**70], ["1", True, False, 1.0, 1.5, [], "x"], "expected an integer"),
        ("f", [0.5, -1.0], ["1.5", True, [], "x"], "expected a number"),
        ("b", [True, False], [1, 0, "true", "false", [], 1.0], "expected a boolean"),
        (
            "lit",
            ["token", "open", "closed"],
            ["Token", "", 1, True, ["token"]],
            "must be one of 'token', 'open', 'closed'",
        ),
        ("n", [1, 2], [True, 1.0, "1", 3], "must be one of 1, 2"),
        ("either", [1, "1"], [1.5, True, []], "expected an integer or a string"),
        ("path", ["/tmp/x", Path("rel")], [1, ["a"]], "expected a path (a string)"),
    ],
)
def test_scalars_are_strict(key: str, good: list[Any], bad: list[Any], message: str) -> None:
    for value in good:
        got = getattr(Scalars.validate({key: value}), key)
        if key == "path":
            assert got == Path(value) and isinstance(got, Path)
        else:
            assert got == value and type(got) is type(value), (key, value)
    for value in bad:
        assert one(Scalars, {key: value}) == ((key,), "type" if key not in ("lit", "n") else "value", message), value


def test_float_takes_integers_as_floats_and_paths_come_from_strings() -> None:
    got = Scalars.validate({"f": 10, "path": "data"})
    assert got.f == 10.0 and type(got.f) is float
    assert got.path == Path("data") and isinstance(got.path, Path)


def test_any_and_none() -> None:
    for value in (None, 1, "x", [1, {"a": None}], {"k": [True]}):
        assert Scalars.validate({"a": value}).a == value
    assert Scalars.validate({"s": None}).s is None  # `X | None` takes null
    assert one(Leaf, {"name": None}) == (("name",), "type", "expected a string")


def test_containers() -> None:
    tags = ["a", "b"]
    got = Root.validate({"tags": tags, "counts": {"x": 1}})
    assert got.tags == tags and got.tags is not tags  # the model's own list
    assert got.counts == {"x": 1}
    assert one(Root, {"tags": "ab"}) == (("tags",), "type", "expected an array")
    assert one(Root, {"tags": ["a", 1]}) == (("tags", 1), "type", "expected a string")
    assert one(Root, {"counts": []}) == (("counts",), "type", "expected an object")
    assert one(Root, {"counts": {"x": "1"}}) == (("counts", "x"), "type", "expected an integer")
    assert one(Root, {"counts": {1: 1}}) == (("counts", 1), "type", "keys must be strings")


# -- locations, missing keys, extra keys --------------------------------------------------------


def test_nested_locations() -> None:
    assert one(Root, {"room": {"timeline": {"name": "t", "limit": 0}}}) == (
        ("room", "timeline", "limit"),
        "value",
        "must be greater than 0",
    )
    assert one(Root, {"room": {"leaves": [{"name": "a"}, {}]}}) == (
        ("room", "leaves", 1, "name"),
        "missing",
        "required",
    )
    assert one(Root, {"room": 5}) == (("room",), "type", "expected an object")
    assert one(Root, []) == ((), "type", "expected an object")


def test_every_problem_is_reported_in_field_order_then_unknown_keys() -> None:
    data = {"zzz": 1, "y": "1", "x": True}
    assert problems(Refused, data) == [
        (("x",), "type", "expected an integer"),
        (("y",), "type", "expected an integer"),
        (("zzz",), "unknown", "unknown key"),
    ]
    # a missing key and a bad one: the first declared comes first, whatever the input order
    assert [p[1] for p in problems(Leaf, {"limit": -1})] == ["value", "missing"]
    assert [p[1] for p in problems(Aliased, {"m.relates_to": 1})] == ["missing", "type"]


def test_extra_keys() -> None:
    kept = Kept.validate({"x": 1, "other": {"a": None}, "gone": None})
    assert kept.extra == {"other": {"a": None}, "gone": None}
    assert kept.dump() == {"x": 1, "other": {"a": None}, "gone": None}
    assert kept.dump(exclude_none=True) == {"x": 1, "other": {"a": None}}
    assert Kept.validate({"x": 1}).extra == {}
    dropped = Dropped.validate({"x": 1, "other": 2})
    assert dropped.extra == {} and dropped.dump() == {"x": 1}
    assert one(Refused, {"x": 1, "typo": 2}) == (("typo",), "unknown", "unknown key")


def test_aliases() -> None:
    got = Aliased.validate({"from": "@a:b", "m.relates_to": {"rel_type": "m.thread"}})
    assert got.from_ == "@a:b" and got.relates_to == {"rel_type": "m.thread"}
    assert got.dump() == {"from": "@a:b", "m.relates_to": {"rel_type": "m.thread"}}
    assert one(Aliased, {"from_": "@a:b"}) == (("from",), "missing", "required")
    assert Aliased(**{"from": "x"}).from_ == "x"  # the constructor takes the input's keys


# -- constraints, defaults, instances ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"gt": 0}, "must be greater than 0"),
        ({"ge": 0.5}, "must be at least 1"),
        ({"lt": 10}, "must be less than 10"),
        ({"le": 11}, "must be at most 10"),
        ({"text": "a"}, "must be at least 2 characters long"),
        ({"text": "abcd"}, "must be at most 3 characters long"),
        ({"items": []}, "must be at least 1 items"),
        ({"items": [1, 2, 3]}, "must be at most 2 items"),
    ],
)
def test_constraints(data: dict[str, Any], message: str) -> None:
    (key,) = data
    assert one(Bounded, data) == ((key,), "value", message)


def test_constraints_pass_on_their_bounds_and_skip_null() -> None:
    Bounded.validate({"gt": 1, "ge": 1, "lt": 9, "le": 10, "text": "abc", "items": [1, 2]})
    assert Leaf.validate({"name": "x", "limit": None}).limit is None


def test_defaults_and_factories_are_not_shared() -> None:
    a, b = Root.validate({}), Root.validate({})
    a.tags.append("x")
    a.counts["k"] = 1
    assert b.tags == [] and b.counts == {} and Root.validate({}).tags == []
    assert Bounded.validate({}).items == [1] and Bounded.validate({}).items is not Bounded.validate({}).items
    assert Root.validate({}).room is None


def test_mutable_defaults_are_refused() -> None:
    with pytest.raises(TypeError, match="default_factory"):

        class Bad(Schema):
            tags: list[str] = []  # noqa: RUF012

    with pytest.raises(TypeError, match="default_factory"):

        class AlsoBad(Schema):
            leaf: Leaf = Leaf(name="x")  # not frozen: one instance would be shared by all


def test_fields_set_names_what_the_input_gave() -> None:
    assert Root.validate({"tags": []}).fields_set == {"tags"}
    assert Root.validate({}).fields_set == frozenset()
    assert Leaf.validate({"name": "x", "limit": None}).fields_set == {"name", "limit"}  # null is given too
    assert Kept.validate({"extra_key": 1}).fields_set == frozenset()


def test_dump() -> None:
    data = {"room": {"timeline": {"name": "t"}, "leaves": [{"name": "a", "limit": 2}]}, "tags": ["x"]}
    got = Root.validate(data)
    assert got.dump() == {
        "room": {"timeline": {"limit": None, "name": "t"}, "leaves": [{"limit": 2, "name": "a"}]},
        "tags": ["x"],
        "counts": {},
    }
    assert got.dump(exclude_none=True) == {
        "room": {"timeline": {"name": "t"}, "leaves": [{"limit": 2, "name": "a"}]},
        "tags": ["x"],
        "counts": {},
    }
    assert Scalars.validate({"path": "a/b"}).dump(exclude_none=True) == {"path": "a/b"}
    assert got.dump()["tags"] is not got.tags


def test_frozen() -> None:
    got = Frozen.validate({"x": 2})
    with pytest.raises(AttributeError):
        got.x = 3
    assert got == Frozen(x=2) and hash(got) == hash(Frozen(x=2)) and got != Frozen(x=3)
    with pytest.raises(TypeError):
        hash(Dropped())


def test_annotations_are_resolved_on_first_use_not_at_class_creation() -> None:
    assert fields(Lazy)["later"].required  # the class exists; its annotation was never evaluated
    with pytest.raises(NameError):
        Lazy.validate({"later": 1})


def test_validate_looked_up_before_the_first_call_keeps_working() -> None:
    class Late(Schema):
        x: int = 0

    check = Late.validate
    assert check({"x": 1}).x == 1 and check({"x": 2}).x == 2 and Late.validate({}).x == 0


def test_unsupported_types_are_named() -> None:
    class Odd(Schema):
        when: complex

    with pytest.raises(TypeError, match=r"Odd\.when: unsupported type"):
        prepare(Odd)


def test_every_model_of_the_server_compiles() -> None:
    for info in pkgutil.walk_packages(homeserver.__path__, "homeserver."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    seen = []
    todo = list(Schema.__subclasses__())
    while todo:
        model = todo.pop()
        todo.extend(model.__subclasses__())
        if model.__module__.startswith("homeserver."):
            prepare(model)
            seen.append(model.__name__)
    assert "FilterModel" in seen


# -- the sync filters, the last users of this module ------------------------------------------


def test_filter_errors() -> None:
    with pytest.raises(MatrixError) as info:
        validate_filter({"room": {"timeline": {"limit": 0}}}, "M_INVALID_PARAM")
    assert info.value.errcode == "M_INVALID_PARAM"
    assert info.value.message == "invalid filter: room.timeline.limit: must be greater than 0"
    with pytest.raises(MatrixError) as info:
        validate_filter({"room": {"timeline": {"limit": True}}})
    assert info.value.message == "invalid filter: room.timeline.limit: expected an integer"
    got = validate_filter({"room": {"timeline": {"limit": 5, "types": ["m.*"], "x-custom": 1}}})
    assert got.room is not None and got.room.timeline is not None
    assert got.room.timeline.dump(exclude_none=True)["x-custom"] == 1


def test_problem_text() -> None:
    assert str(Problem(("a", 0, "b"), "type", "expected a string")) == "a.0.b: expected a string"
    assert str(SchemaError([Problem((), "type", "expected an object")])) == "(top level): expected an object"
