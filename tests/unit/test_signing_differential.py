"""Differential test: our fast canonical JSON, hashes, event ids and signatures against the reference
libraries (canonicaljson, signedjson), on generated JSON values and events. Every byte must agree.

Only redaction is ours on both sides (its rules are checked against the spec's vectors elsewhere);
what it keeps is then encoded, hashed and signed by each implementation independently.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import canonicaljson
import signedjson.key
import signedjson.sign
import unpaddedbase64
from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.protocol import canonical_json
from homeserver.protocol.event_ids import event_id
from homeserver.protocol.event_signing import add_hashes_and_signatures
from homeserver.protocol.hashes import content_hash, reference_hash
from homeserver.protocol.redaction import redact
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS, EventFormat, get_room_version
from homeserver.protocol.signing import sign_json, verify_json

# Any text UTF-8 can carry (lone surrogates cannot be encoded, by either side), control characters,
# quotes, backslashes and astral characters included.
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
KEY = st.one_of(st.sampled_from(["a", "b", "body", "A", "é", "\u0000", "\U0001f600", "ab", "a\\b", '"']), TEXT)
SAFE_INT = st.integers(min_value=canonical_json.MIN_SAFE_INTEGER, max_value=canonical_json.MAX_SAFE_INTEGER)
SCALAR = st.one_of(st.none(), st.booleans(), SAFE_INT, st.integers(-300, 300), TEXT)
JSON = st.recursive(
    SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEY, inner, max_size=5)),
    max_leaves=25,
)
OBJECT = st.dictionaries(KEY, JSON, max_size=6)

SERVER = "hs.test"
KEY_VERSION = "a_Diff"
# signedjson's keys are nacl keys carrying `alg` and `version`: one key serves both sides
SIGNING_KEY = signedjson.key.generate_signing_key(KEY_VERSION)
KEY_ID = f"ed25519:{KEY_VERSION}"
VERIFY_KEY = signedjson.key.get_verify_key(SIGNING_KEY)


def reference_b64(data: bytes, urlsafe: bool = False) -> str:
    return unpaddedbase64.encode_base64(data, urlsafe=urlsafe)


@st.composite
def events(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    version = draw(st.sampled_from(sorted(KNOWN_ROOM_VERSIONS)))
    rv = get_room_version(version)
    event_type = draw(
        st.sampled_from(
            ["m.room.message", "m.room.member", "m.room.power_levels", "m.room.join_rules", "m.room.create", "x.y"]
        )
    )
    content = draw(OBJECT)
    if event_type == "m.room.member":
        content["membership"] = draw(st.sampled_from(["join", "invite", "leave", "ban", "knock"]))
    if event_type == "m.room.power_levels":
        content["users"] = draw(st.dictionaries(st.just("@u:hs.test") | TEXT, st.integers(-100, 100), max_size=3))
    event: dict[str, Any] = {
        "type": event_type,
        "sender": "@u:hs.test",
        "content": content,
        "origin_server_ts": draw(st.integers(0, 2**48)),
        "depth": draw(st.integers(1, 2**40)),
        "unsigned": draw(OBJECT),
    }
    if not rv.room_id_from_create_event or event_type != "m.room.create":
        event["room_id"] = "!room:hs.test"
    if event_type != "m.room.message" and draw(st.booleans()):
        event["state_key"] = draw(TEXT)
    if rv.event_format is EventFormat.V1:
        event["event_id"] = f"${draw(st.text('abcdef0123', min_size=1, max_size=8))}:hs.test"
        refs = [["$p:hs.test", {"sha256": "aGFzaA"}]]
    else:
        refs = ["$" + "A" * 43]
    event["prev_events"] = refs
    event["auth_events"] = refs
    if draw(st.booleans()):
        event.update(draw(st.dictionaries(st.sampled_from(["origin", "membership", "extra", "prev_state"]), JSON)))
    return event, version


@given(JSON)
@settings(max_examples=300)
def test_canonical_json_is_byte_identical(value: Any) -> None:
    assert canonical_json.encode(value) == canonicaljson.encode_canonical_json(value)
    assert canonical_json.encode_trusted(value) == canonicaljson.encode_canonical_json(value)


@given(
    st.recursive(
        SCALAR | st.integers() | st.floats(allow_nan=False, allow_infinity=False),
        lambda i: st.lists(i, max_size=3) | st.dictionaries(KEY, i, max_size=3),
        max_leaves=10,
    )
)
def test_lenient_encoding_is_the_reference_one(value: Any) -> None:
    # rooms v1–v5: out-of-range integers and floats are encoded as the reference encoder does
    assert canonical_json.encode_lenient(value) == canonicaljson.encode_canonical_json(value)


@given(OBJECT)
def test_json_signatures_are_byte_identical(obj: dict[str, Any]) -> None:
    ours = sign_json(copy.deepcopy(obj), SERVER, KEY_ID, SIGNING_KEY)
    theirs = signedjson.sign.sign_json(copy.deepcopy(obj), SERVER, SIGNING_KEY)
    assert canonical_json.encode(ours) == canonicaljson.encode_canonical_json(theirs)
    signedjson.sign.verify_signed_json(ours, SERVER, VERIFY_KEY)
    verify_json(theirs, SERVER, KEY_ID, VERIFY_KEY)


@given(events())
@settings(max_examples=200)
def test_event_hashes_ids_and_signatures_are_byte_identical(case: tuple[dict[str, Any], str]) -> None:
    event, version = case
    rv = get_room_version(version)

    # content hash: the event without unsigned, signatures and hashes
    stripped = {k: v for k, v in event.items() if k not in ("unsigned", "signatures", "hashes")}
    expected_hash = hashlib.sha256(canonicaljson.encode_canonical_json(stripped)).digest()
    assert content_hash(event, rv) == expected_hash

    # reference hash and event id: the redacted event without signatures and unsigned (and event_id)
    pruned = {k: v for k, v in redact(event, rv).items() if k not in ("signatures", "unsigned")}
    if rv.uses_reference_hash_ids:
        pruned.pop("event_id", None)
    expected_reference = hashlib.sha256(canonicaljson.encode_canonical_json(pruned)).digest()
    assert reference_hash(event, rv) == expected_reference
    if rv.event_format is EventFormat.V1:
        assert event_id(event, rv) == event["event_id"]
    else:
        urlsafe = rv.event_format is not EventFormat.V2
        assert event_id(event, rv) == "$" + reference_b64(expected_reference, urlsafe=urlsafe)

    # hashes and signatures: ours on the full event, signedjson's on the redacted one
    ours = add_hashes_and_signatures(copy.deepcopy(event), rv, SERVER, KEY_ID, SIGNING_KEY)
    assert ours["hashes"] == {"sha256": reference_b64(expected_hash)}
    theirs = signedjson.sign.sign_json(redact({**event, "hashes": ours["hashes"]}, rv), SERVER, SIGNING_KEY)
    assert ours["signatures"] == theirs["signatures"]
    signedjson.sign.verify_signed_json(redact(ours, rv), SERVER, VERIFY_KEY)
