"""homeserver.validation: pydantic models checked with the spec's error codes and the key's location."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from homeserver.errors import MatrixError
from homeserver.validation import STRICT, STRICT_CLOSED, validate


class Inner(BaseModel):
    model_config = STRICT
    limit: int = Field(default=10, gt=0)
    types: list[str] | None = None


class Outer(BaseModel):
    model_config = STRICT
    name: str
    flag: bool = False
    ratio: float = 1.0
    kind: Literal["a", "b"] = "a"
    inner: Inner = Field(default_factory=Inner)
    items: list[Inner] = Field(default_factory=list)
    anything: Any = None


class Closed(BaseModel):
    model_config = STRICT_CLOSED
    name: str


def error(model: type[BaseModel], data: Any, **kw: Any) -> MatrixError:
    with pytest.raises(MatrixError) as e:
        validate(model, data, **kw)
    return e.value


def test_valid_input_and_unknown_keys_kept() -> None:
    out = validate(Outer, {"name": "x", "ratio": 2, "inner": {"limit": 3}, "extra": [1]})
    assert out.name == "x" and out.ratio == 2.0 and isinstance(out.ratio, float) and out.inner.limit == 3
    assert out.model_extra == {"extra": [1]}
    assert out.model_fields_set == {"name", "ratio", "inner", "extra"}


def test_missing_key_is_missing_param_with_location() -> None:
    e = error(Outer, {})
    assert (e.status, e.errcode) == (400, "M_MISSING_PARAM") and "name" in e.message
    e = error(Outer, {"name": "x", "items": [{}, {"limit": 1}, {"types": None, "limit": "2"}]})
    assert e.errcode == "M_BAD_JSON" and e.message.startswith("items.2.limit:")


@pytest.mark.parametrize(
    "data",
    [
        {"name": 1},
        {"name": "x", "flag": 1},  # no 1 for true
        {"name": "x", "flag": "true"},
        {"name": "x", "ratio": True},
        {"name": "x", "ratio": "1.5"},
        {"name": "x", "inner": {"limit": "3"}},  # no "3" for 3
        {"name": "x", "inner": {"limit": 3.0}},
        {"name": "x", "inner": {"limit": True}},
        {"name": "x", "inner": {"limit": 0}},  # constraint
        {"name": "x", "inner": {"types": ["a", 1]}},
        {"name": "x", "inner": []},
        {"name": "x", "kind": "c"},
    ],
)
def test_wrong_type_or_value_is_bad_json(data: dict[str, Any]) -> None:
    e = error(Outer, data)
    assert (e.status, e.errcode) == (400, "M_BAD_JSON")
    bad = error(Outer, data, bad="M_INVALID_PARAM")  # the admin API's code for the same problem
    assert bad.errcode == "M_INVALID_PARAM" and bad.message == e.message


def test_not_an_object() -> None:
    for data in ([], "x", None, 1):
        e = error(Outer, data)
        assert e.errcode == "M_BAD_JSON" and "JSON object" in e.message


def test_closed_model_refuses_unknown_keys() -> None:
    e = error(Closed, {"name": "x", "nmae": "y"}, what="config")
    assert e.errcode == "M_BAD_JSON" and e.message == "nmae: unknown key in config"


def test_models_are_built_lazily() -> None:
    class Lazy(BaseModel):
        model_config = STRICT
        a: int

    assert Lazy.__pydantic_complete__ is False  # defer_build: nothing compiled at import
    assert validate(Lazy, {"a": 1}).a == 1
    assert Lazy.__pydantic_complete__ is True
