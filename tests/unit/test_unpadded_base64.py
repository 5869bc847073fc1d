from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeserver.protocol import unpadded_base64
from homeserver.protocol.errors import Base64Error

from .vectors import load

CASES = load("unpadded_base64.json")["cases"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["input_utf8"] or "empty")
def test_spec_vectors(case: dict[str, str]) -> None:
    raw = case["input_utf8"].encode()
    assert unpadded_base64.encode(raw) == case["expected"]
    assert unpadded_base64.decode(case["expected"]) == raw
    # spec: decoders SHOULD accept padded input too
    padded = case["expected"] + "=" * (-len(case["expected"]) % 4)
    assert unpadded_base64.decode(padded) == raw


def test_urlsafe_alphabet() -> None:
    raw = bytes([0xFB, 0xFF, 0xBF])
    assert unpadded_base64.encode(raw) == "+/+/"
    assert unpadded_base64.encode_urlsafe(raw) == "-_-_"
    assert unpadded_base64.decode_urlsafe("-_-_") == raw


@pytest.mark.parametrize("bad", ["a", "ab$c", "-_", "Zg==="])
def test_invalid_input(bad: str) -> None:
    with pytest.raises(Base64Error):
        unpadded_base64.decode(bad)


@given(st.binary(max_size=100))
def test_round_trip(data: bytes) -> None:
    assert unpadded_base64.decode(unpadded_base64.encode(data)) == data
    assert unpadded_base64.decode_urlsafe(unpadded_base64.encode_urlsafe(data)) == data
    assert "=" not in unpadded_base64.encode(data)
