"""The pipeline's one-encoding signing path gives exactly what the protocol functions give."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from homeserver.protocol.canonical_json import encode_for_room
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.event_signing import add_hashes_and_signatures
from homeserver.protocol.hashes import reference_hash
from homeserver.protocol.room_versions import EventFormat, get_room_version
from homeserver.protocol.signing import generate_signing_key
from homeserver.rooms.signing import hash_and_sign

KEY_ID, KEY = generate_signing_key("t")
MAX_SAFE = 2**53 - 1

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE, MAX_SAFE) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
event_types = st.sampled_from(
    [
        "m.room.message",
        "m.room.member",
        "m.room.power_levels",
        "m.room.create",
        "m.room.join_rules",
        "m.room.redaction",
        "x.ünï",
    ]
)


@settings(max_examples=100, deadline=None)
@given(
    version=st.sampled_from([str(v) for v in range(1, 13)]),
    event_type=event_types,
    content=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    state_key=st.none() | st.text(max_size=10),
    depth=st.integers(1, MAX_SAFE),
)
def test_hash_and_sign_matches_the_protocol(
    version: str, event_type: str, content: dict[str, Any], state_key: str | None, depth: int
) -> None:
    rv = get_room_version(version)
    event: dict[str, Any] = {
        "room_id": "!r:hs.test",
        "sender": "@a:hs.test",
        "type": event_type,
        "content": content,
        "origin_server_ts": 1_700_000_000_123,
        "depth": depth,
        "prev_events": [["$p:hs.test", {"sha256": "abc"}]] if rv.event_format is EventFormat.V1 else ["$p"],
        "auth_events": [],
    }
    if state_key is not None:
        event["state_key"] = state_key
    if rv.event_format is EventFormat.V1:
        event["event_id"] = "$e:hs.test"
    expected = copy.deepcopy(event)
    add_hashes_and_signatures(expected, rv, "hs.test", KEY_ID, KEY)
    signed = hash_and_sign(event, rv, "hs.test", KEY_ID, KEY)
    assert event == expected
    assert signed.event_id == compute_event_id(expected, rv)
    assert signed.encoded == encode_for_room(expected, rv.strict_canonical_json)
    assert signed.reference_hash == reference_hash(expected, rv)
