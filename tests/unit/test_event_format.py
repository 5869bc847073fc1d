"""PDU format checks (spec: server-server-api.md "Checks performed on receipt of a PDU", step 1)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homeserver.protocol import canonical_json
from homeserver.protocol.errors import EventFormatError, UnknownRoomVersion
from homeserver.protocol.event_format import (
    MAX_AUTH_EVENTS,
    MAX_PDU_BYTES,
    MAX_PREV_EVENTS,
    check_pdu_format,
    pdu_size,
)
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS, get_room_version

from .vectors import load

Pdu = dict[str, Any]

# Event ids in the shape the spec prints for each format (rooms/v1, rooms/v3, rooms/fragments/v4-event-ids).
V1_IDS = ["$af232176:example.org", "$bf232176:example.org"]
V3_IDS = ["$CD66HAED5npg6074c6pDtLKalHjVfYb2q4Q3LZgrW6o", "$8yif6p8EqgoSten2BLje9ntKm720NyFLWQv9tn8memc"]
V4_IDS = ["$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", "$70O_oKlXzFbkfu0KE88USi98DjSWrOELrPj-8tisl8I"]
V12_ROOM_ID = "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"
HASH = {"sha256": "ThisHashCoversAllFieldsInCaseThisIsRedacted"}


def _ids(version: str) -> list[str]:
    fmt = get_room_version(version).event_format.value
    return {1: V1_IDS, 2: V3_IDS, 3: V4_IDS}[fmt]


def make_pdu(version: str, **overrides: Any) -> Pdu:
    """A well-formed message PDU for `version` (pdu_v1 / pdu_v3 / pdu_v4 / pdu_v6 / pdu_v11 / pdu_v12)."""
    rv = get_room_version(version)
    ids = _ids(version)
    refs: list[Any] = [[i, dict(HASH)] for i in ids] if rv.event_id_in_event else list(ids)
    pdu: Pdu = {
        "auth_events": copy.deepcopy(refs),
        "content": {"body": "hello", "msgtype": "m.text"},
        "depth": 12,
        "hashes": dict(HASH),
        "origin_server_ts": 1234567890,
        "prev_events": copy.deepcopy(refs[:1]),
        "room_id": V12_ROOM_ID if rv.room_id_from_create_event else "!abc123:matrix.org",
        "sender": "@someone:matrix.org",
        "signatures": {"matrix.org": {"ed25519:key_version": "86BytesOfSignatureOfTheRedactedEvent"}},
        "type": "m.room.message",
        "unsigned": {"age": 4612},
    }
    if rv.event_id_in_event:
        pdu["event_id"] = "$a4ecee13e2accdadf56c1025:example.com"
    pdu.update(overrides)
    return pdu


ALL_VERSIONS = sorted(KNOWN_ROOM_VERSIONS, key=int)
# one version per PDU schema: pdu_v1, pdu_v3, pdu_v4, pdu_v6, pdu_v11, pdu_v12
FAMILIES = ["1", "3", "4", "6", "11", "12"]


def _bad(pdu: Pdu, version: str, match: str, **kwargs: Any) -> None:
    with pytest.raises(EventFormatError, match=match):
        check_pdu_format(pdu, version, **kwargs)


def _without(pdu: Pdu, key: str) -> Pdu:
    return {k: v for k, v in pdu.items() if k != key}


# --- valid events ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_valid_message_pdu(version: str) -> None:
    check_pdu_format(make_pdu(version), version)
    check_pdu_format(make_pdu(version), get_room_version(version))


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_valid_state_pdu_and_optional_keys(version: str) -> None:
    pdu = make_pdu(version, type="m.room.topic", state_key="", content={"topic": "x"})
    del pdu["unsigned"]
    check_pdu_format(pdu, version)


def test_v12_create_event_from_the_signing_vectors() -> None:
    create = load("signing.json")["v12_room_id_derived"]["create_event_signed"]
    assert "room_id" not in create
    check_pdu_format(create, "12")


def test_event_signing_vector_is_a_valid_v1_to_v10_pdu() -> None:
    # the spec's first event-signing vector is a full PDU apart from the room-version-specific keys
    signed = load("signing.json")["event_signing"]["cases"][0]["expected_signed"]
    for version in ("4", "6", "10", "11"):
        check_pdu_format(signed, version)


def test_historical_sender_is_accepted() -> None:
    # spec: appendices.md "Historical User IDs" — MUST be accepted over federation
    check_pdu_format(make_pdu("11", sender="@Ünïcode User:matrix.org"), "11")


def test_extra_top_level_keys_are_allowed() -> None:
    check_pdu_format(make_pdu("10", origin="matrix.org", prev_state=[], membership="join"), "10")


def test_v3_plus_ignore_a_stray_event_id() -> None:
    # spec: rooms/v3 "Event format" — the receiver computes the event id itself
    check_pdu_format(make_pdu("4", event_id="anything"), "4")


def test_unknown_room_version() -> None:
    with pytest.raises(UnknownRoomVersion):
        check_pdu_format(make_pdu("11"), "99")


def test_not_an_object() -> None:
    _bad([], "11", "JSON object")  # type: ignore[arg-type]


# --- required keys and JSON types ---------------------------------------------------------------

REQUIRED = ["auth_events", "content", "depth", "hashes", "origin_server_ts", "prev_events", "room_id"]
REQUIRED += ["sender", "signatures", "type"]


@pytest.mark.parametrize("version", FAMILIES)
@pytest.mark.parametrize("key", REQUIRED)
def test_missing_required_key(version: str, key: str) -> None:
    _bad(_without(make_pdu(version), key), version, f"missing required key '{key}'")


@pytest.mark.parametrize("version", ["1", "2"])
def test_event_id_required_in_v1_v2(version: str) -> None:
    _bad(_without(make_pdu(version), "event_id"), version, "'event_id'")


WRONG_TYPES: list[tuple[str, Any, str]] = [
    ("content", [], "'content' must be an object"),
    ("content", "text", "'content' must be an object"),
    ("type", 1, "'type' must be a string"),
    ("state_key", None, "'state_key' must be a string"),
    ("state_key", 0, "'state_key' must be a string"),
    ("sender", ["@a:b"], "'sender' must be a string"),
    ("room_id", 5, "'room_id' must be a string"),
    ("origin_server_ts", "1234", "'origin_server_ts' must be an integer"),
    ("origin_server_ts", True, "'origin_server_ts' must be an integer"),
    ("depth", True, "'depth' must be an integer"),
    ("depth", "12", "'depth' must be an integer"),
    ("depth", None, "'depth' must be an integer"),
    ("hashes", "abc", "'hashes' must be an object"),
    ("hashes", {}, "'hashes' has no 'sha256'"),
    ("hashes", {"sha256": 5}, "'hashes.sha256' must be a string"),
    ("signatures", [], "'signatures' must be an object"),
    ("signatures", {"matrix.org": "sig"}, "'signatures.matrix.org' must be an object"),
    ("signatures", {"matrix.org": {"ed25519:1": 1}}, "'signatures.matrix.org.ed25519:1' must be a string"),
    ("unsigned", [], "'unsigned' must be an object"),
    ("prev_events", {}, "'prev_events' must be an array"),
    ("auth_events", "$a:b", "'auth_events' must be an array"),
]


@pytest.mark.parametrize("version", FAMILIES)
@pytest.mark.parametrize(("key", "value", "match"), WRONG_TYPES, ids=lambda x: repr(x)[:30])
def test_wrong_json_type(version: str, key: str, value: Any, match: str) -> None:
    _bad(make_pdu(version, **{key: value}), version, match)


def test_float_depth_is_refused_even_in_lenient_rooms() -> None:
    _bad(make_pdu("1", depth=12.0), "1", "'depth' must be an integer")
    _bad(make_pdu("5", origin_server_ts=1.5), "5", "'origin_server_ts' must be an integer")


# --- depth and timestamps ----------------------------------------------------------------------


@pytest.mark.parametrize("version", FAMILIES)
def test_negative_depth(version: str) -> None:
    _bad(make_pdu(version, depth=-1), version, "'depth' -1 is outside")


def test_depth_limits_per_version() -> None:
    # spec: pdu_v1/v3/v4 `depth` ≤ 2^63 - 1; rooms/v6 (depth_v6) ≤ 2^53 - 1
    check_pdu_format(make_pdu("5", depth=2**63 - 1), "5")
    _bad(make_pdu("5", depth=2**63), "5", "'depth'")
    check_pdu_format(make_pdu("6", depth=2**53 - 1), "6")
    _bad(make_pdu("6", depth=2**53), "6", "'depth'")
    check_pdu_format(make_pdu("1", depth=0), "1")


def test_origin_server_ts_is_int64() -> None:
    check_pdu_format(make_pdu("3", origin_server_ts=2**63 - 1), "3")
    _bad(make_pdu("3", origin_server_ts=2**63), "3", "'origin_server_ts' is outside the int64 range")


# --- identifiers and per-key sizes -------------------------------------------------------------


@pytest.mark.parametrize("version", FAMILIES)
@pytest.mark.parametrize("sender", ["someone:matrix.org", "@someone", "@a\x00:matrix.org", "@a:bad_host"])
def test_bad_sender(version: str, sender: str) -> None:
    _bad(make_pdu(version, sender=sender), version, "'sender' is not a valid user ID")


def test_sender_longer_than_255_bytes() -> None:
    _bad(make_pdu("11", sender="@" + "a" * 250 + ":matrix.org"), "11", "'sender'.*255 bytes")


def test_type_and_state_key_at_most_255_bytes() -> None:
    # spec: client-server-api "Size limits"
    check_pdu_format(make_pdu("11", type="t" * 255, state_key="s" * 255), "11")
    _bad(make_pdu("11", type="t" * 256), "11", "'type' is longer than 255 bytes")
    _bad(make_pdu("11", state_key="é" * 128), "11", "'state_key' is longer than 255 bytes")


@pytest.mark.parametrize(
    ("version", "room_id"),
    [
        ("1", "abc:matrix.org"),
        ("1", "!abc"),
        ("4", V12_ROOM_ID),
        ("11", "!abc:bad_host"),
        ("11", "!" + "a" * 250 + ":matrix.org"),
        ("12", "!abc123:matrix.org"),
        ("12", V12_ROOM_ID + "A"),
    ],
)
def test_bad_room_id(version: str, room_id: str) -> None:
    _bad(make_pdu(version, room_id=room_id), version, "'room_id' is not a valid room ID")


def test_v12_create_event_must_not_have_a_room_id() -> None:
    create = make_pdu("12", type="m.room.create", state_key="", content={}, prev_events=[], auth_events=[])
    _bad(create, "12", "'room_id' must be absent")
    check_pdu_format(_without(create, "room_id"), "12")


def test_create_events_before_v12_need_a_room_id() -> None:
    create = make_pdu("11", type="m.room.create", state_key="", content={}, prev_events=[], auth_events=[])
    check_pdu_format(create, "11")
    _bad(_without(create, "room_id"), "11", "missing required key 'room_id'")


def test_v12_non_create_event_needs_a_room_id() -> None:
    _bad(_without(make_pdu("12"), "room_id"), "12", "missing required key 'room_id'")


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("event_id", [V4_IDS[0], "$abc", "a:b", "$" + "a" * 250 + ":example.org", "$x\x00:a"])
def test_bad_event_id_in_v1_v2(version: str, event_id: str) -> None:
    _bad(make_pdu(version, event_id=event_id), version, "'event_id' is not a valid event ID")


def test_non_string_event_id_in_v1() -> None:
    _bad(make_pdu("1", event_id=1), "1", "'event_id' must be a string")


# --- prev_events and auth_events ---------------------------------------------------------------


@pytest.mark.parametrize("version", FAMILIES)
def test_reference_count_limits(version: str) -> None:
    # spec: PDU schemas — prev_events ≤ 20, auth_events ≤ 10
    pdu = make_pdu(version)
    many_prev = pdu["prev_events"] * MAX_PREV_EVENTS
    many_auth = pdu["prev_events"] * MAX_AUTH_EVENTS
    check_pdu_format(make_pdu(version, prev_events=many_prev, auth_events=many_auth), version)
    too_many_prev = make_pdu(version, prev_events=many_prev + pdu["prev_events"])
    too_many_auth = make_pdu(version, auth_events=many_auth + pdu["prev_events"])
    _bad(too_many_prev, version, "'prev_events' has 21 entries, more than the limit of 20")
    _bad(too_many_auth, version, "'auth_events' has 11 entries, more than the limit of 10")
    # spec: server-server-api GET /backfill — these limits MUST NOT be applied to backfill
    check_pdu_format(too_many_prev, version, enforce_reference_limits=False)
    check_pdu_format(too_many_auth, version, enforce_reference_limits=False)


@pytest.mark.parametrize(
    ("ref", "match"),
    [
        (V1_IDS[0], r"'prev_events\[0\]' must be an \[event_id, hashes\] pair"),
        ([V1_IDS[0]], "pair"),
        ([V1_IDS[0], HASH, HASH], "pair"),
        ([V1_IDS[0], "hash"], r"'prev_events\[0\]\[1\]' must be an object"),
        ([V1_IDS[0], {"sha256": 1}], r"'prev_events\[0\]\[1\].sha256' must be a string"),
        ([1, HASH], r"'prev_events\[0\]\[0\]' must be an event ID string"),
        ([V4_IDS[0], HASH], r"'prev_events\[0\]\[0\]' is not a valid event ID"),
    ],
)
def test_v1_reference_shape(ref: Any, match: str) -> None:
    _bad(make_pdu("1", prev_events=[ref]), "1", match)


def test_v1_reference_hash_object_may_be_empty() -> None:
    # deliberate leniency: the sha256 inside a v1 reference is not checked by anyone downstream
    check_pdu_format(make_pdu("2", auth_events=[[V1_IDS[0], {}]]), "2")


@pytest.mark.parametrize(
    ("version", "event_id"),
    [
        ("3", V4_IDS[0]),  # URL-safe alphabet in a v3 room
        ("3", V1_IDS[0]),
        ("4", "$" + "a+/" * 14 + "a"),  # standard alphabet in a v4+ room
        ("4", V1_IDS[0]),
        ("12", V4_IDS[0][:-1]),
        ("12", "!" + V4_IDS[0][1:]),
    ],
)
def test_v3_plus_reference_format(version: str, event_id: str) -> None:
    _bad(make_pdu(version, auth_events=[event_id]), version, r"'auth_events\[0\]' is not a valid event ID")


@pytest.mark.parametrize("version", ["3", "4", "12"])
def test_v3_plus_references_are_plain_strings(version: str) -> None:
    _bad(make_pdu(version, prev_events=[[_ids(version)[0], HASH]]), version, r"'prev_events\[0\]' must be an event ID")


# --- redacts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [str(v) for v in range(1, 11)])
def test_top_level_redacts_before_v11(version: str) -> None:
    target = _ids(version)[0]
    check_pdu_format(make_pdu(version, type="m.room.redaction", content={}, redacts=target), version)
    # a redacted redaction has lost `redacts` (spec: rooms/fragments/v1-redactions) and is still well-formed
    check_pdu_format(make_pdu(version, type="m.room.redaction", content={}), version)
    _bad(make_pdu(version, type="m.room.redaction", content={}, redacts=5), version, "'redacts' must be an event ID")
    _bad(make_pdu(version, type="m.room.redaction", redacts="abc"), version, "'redacts' must be an event ID")


@pytest.mark.parametrize("version", ["11", "12"])
def test_content_redacts_from_v11(version: str) -> None:
    target = V4_IDS[0]
    check_pdu_format(make_pdu(version, type="m.room.redaction", content={"redacts": target}), version)
    _bad(make_pdu(version, type="m.room.redaction", content={}, redacts=target), version, "no 'content.redacts'")
    _bad(make_pdu(version, type="m.room.redaction", content={"redacts": 1}), version, "'content.redacts' must be")
    _bad(make_pdu(version, type="m.room.redaction", content={"redacts": "x"}), version, "'content.redacts' must be")
    # `redacts` means nothing outside m.room.redaction, and at the top level from v11
    check_pdu_format(make_pdu(version, content={"redacts": 1}, redacts=1), version)


# --- canonical JSON and size --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["6", "10", "11", "12"])
@pytest.mark.parametrize(
    ("key", "value"),
    [("content", {"n": 1.5}), ("content", {"n": 2**53}), ("unsigned", {"age": -(2**53)}), ("extra", [0.0])],
)
def test_strict_canonical_json_from_v6(version: str, key: str, value: Any) -> None:
    # spec: rooms/fragments/v6-canonical-json — discard events that are not canonical JSON
    _bad(make_pdu(version, **{key: value}), version, f"'{key}' is not canonical JSON")


@pytest.mark.parametrize("version", ["1", "3", "5"])
def test_lenient_json_before_v6(version: str) -> None:
    # spec: rooms/fragments/v1-canonical-json — servers MUST NOT strictly enforce it
    pdu = make_pdu(version, content={"n": 1.5, "big": 2**60})
    check_pdu_format(pdu, version)
    assert pdu_size(pdu, version) == len(canonical_json.encode_lenient(pdu))


@pytest.mark.parametrize("version", FAMILIES)
def test_size_limit(version: str) -> None:
    # spec: client-server-api "Size limits" — 65536 bytes of canonical JSON, signatures included
    pdu = make_pdu(version, content={"body": ""})
    room = MAX_PDU_BYTES - pdu_size(pdu, version)
    pdu["content"]["body"] = "x" * room
    assert pdu_size(pdu, version) == MAX_PDU_BYTES
    check_pdu_format(pdu, version)
    pdu["signatures"]["matrix.org"]["ed25519:key_version"] += "y"
    _bad(pdu, version, "65537 bytes of canonical JSON, above the 65536 limit")


def test_pdu_size_is_the_canonical_length() -> None:
    pdu = make_pdu("11", content={"body": "é ü"})
    assert pdu_size(pdu, "11") == len(canonical_json.encode(pdu))


def test_unencodable_value_in_a_lenient_room() -> None:
    _bad(make_pdu("1", content={"n": float("nan")}), "1", "canonical JSON")


# --- properties -------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_keys = st.sampled_from([*REQUIRED, "event_id", "state_key", "unsigned", "redacts", "hashes", "signatures", "extra"])


@given(st.sampled_from(ALL_VERSIONS), _keys, _json, st.booleans())
def test_any_field_value_raises_only_event_format_error(version: str, key: str, value: Any, redaction: bool) -> None:
    pdu = make_pdu(version, **({"type": "m.room.redaction"} if redaction else {}))
    pdu[key] = value
    with contextlib.suppress(EventFormatError):
        check_pdu_format(pdu, version)


@given(st.sampled_from(ALL_VERSIONS), st.sampled_from(REQUIRED))
def test_every_required_key_is_required(version: str, key: str) -> None:
    with pytest.raises(EventFormatError):
        check_pdu_format(_without(make_pdu(version), key), version)


_MUTATIONS: list[Callable[[Pdu], None]] = [
    lambda p: p["prev_events"].append(p["prev_events"][0]),
    lambda p: p["content"].update(nested={"deep": [1, 2, {"x": "y"}]}),
    lambda p: p.update(state_key="@someone:matrix.org"),
]


@given(st.sampled_from(ALL_VERSIONS), st.sampled_from(_MUTATIONS))
def test_harmless_mutations_stay_valid(version: str, mutate: Callable[[Pdu], None]) -> None:
    pdu = make_pdu(version)
    mutate(pdu)
    check_pdu_format(pdu, version)
