from __future__ import annotations

import json

import canonicaljson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeserver.protocol import canonical_json
from homeserver.protocol.errors import CanonicalJSONError

from .vectors import load

CASES = load("canonical_json.json")["cases"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["expected_canonical"][:30])
def test_spec_vectors(case: dict[str, str]) -> None:
    value = json.loads(case["input_json_text"])
    assert canonical_json.encode(value) == case["expected_canonical"].encode("utf-8")


@pytest.mark.parametrize("bad", [1.5, float("nan"), float("inf"), 2**53, -(2**53), {"a": [0.1]}])
def test_rejects_floats_and_out_of_range_integers(bad: object) -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json.encode(bad)


def test_range_edges_are_allowed() -> None:
    assert canonical_json.encode([2**53 - 1, -(2**53) + 1]) == b"[9007199254740991,-9007199254740991]"


def test_check_refuses_any_float_even_integral() -> None:
    canonical_json.check({"a": [1, "x", None, True]})
    with pytest.raises(CanonicalJSONError):
        canonical_json.check({"a": 1.0})


def test_non_string_keys_and_unknown_types_are_refused() -> None:
    with pytest.raises(CanonicalJSONError):
        canonical_json.encode({1: "a"})
    with pytest.raises(CanonicalJSONError):
        canonical_json.encode({"a": object()})


def test_deep_nesting_is_refused_cleanly() -> None:
    deep: object = "x"
    for _ in range(canonical_json.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(CanonicalJSONError):
        canonical_json.encode(deep)


def test_lenient_encoding_keeps_what_old_rooms_carry() -> None:
    # spec: rooms v1–v5 must tolerate out-of-range integers and floats.
    assert canonical_json.encode_lenient({"big": 2**60}) == b'{"big":1152921504606846976}'
    assert canonical_json.encode_lenient({"f": 1.5}) == b'{"f":1.5}'
    assert canonical_json.encode_lenient({"b": 1, "a": "é"}) == '{"a":"é","b":1}'.encode()


def test_control_characters_and_surrogate_pairs() -> None:
    assert canonical_json.encode({"a": "\u0000\n\x1f\u2028"}) == b'{"a":"\\u0000\\n\\u001f\xe2\x80\xa8"}'
    assert canonical_json.encode({"a": "\U0001f600"}) == '{"a":"\U0001f600"}'.encode()


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(alphabet=st.characters(blacklist_categories=["Cs"])),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(alphabet=st.characters(blacklist_categories=["Cs"])), children, max_size=5)
    ),
    max_leaves=30,
)


@given(json_values)
def test_matches_the_reference_encoder(value: object) -> None:
    # The reference is the spec's own Python: json.dumps(sort_keys, ensure_ascii=False, compact).
    reference = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
    assert canonical_json.encode(value) == reference
    assert canonical_json.encode(value) == canonicaljson.encode_canonical_json(value)


@given(json_values)
def test_round_trip(value: object) -> None:
    assert canonical_json.decode(canonical_json.encode(value)) == value
