"""The redaction algorithm for every room version.

spec: rooms/fragments/v1-redactions (v1–v5), v6-redactions (v6–v7), rooms/v8 "Redactions",
v9-redactions (v9–v10), v11-redactions (v11–v12); client-server-api "Redactions".
Redaction keeps what the auth rules and signatures need and drops the rest; the result is what
gets signed and what the reference hash covers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.protocol.room_versions import RedactionRules, RoomVersion, get_room_version

# Top-level keys kept by every algorithm.
_KEYS_ALWAYS = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
)
# spec: v11-redactions — `origin`, `membership` and `prev_state` are no longer protected.
_KEYS_BEFORE_V11 = _KEYS_ALWAYS | {"origin", "membership", "prev_state"}

_POWER_LEVEL_KEYS = frozenset(
    {"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
)

# Content keys kept per event type, per algorithm. `None` means "keep all of content".
_ContentRules = Mapping[str, frozenset[str] | None]

_CONTENT_V1: _ContentRules = {
    "m.room.member": frozenset({"membership"}),
    "m.room.create": frozenset({"creator"}),
    "m.room.join_rules": frozenset({"join_rule"}),
    "m.room.power_levels": _POWER_LEVEL_KEYS,
    "m.room.aliases": frozenset({"aliases"}),
    "m.room.history_visibility": frozenset({"history_visibility"}),
}
# spec: rooms/v6 — m.room.aliases loses its special meaning.
_CONTENT_V6: _ContentRules = {k: v for k, v in _CONTENT_V1.items() if k != "m.room.aliases"}
# spec: rooms/v8 — join_rules keeps `allow`.
_CONTENT_V8: _ContentRules = {**_CONTENT_V6, "m.room.join_rules": frozenset({"join_rule", "allow"})}
# spec: rooms/v9 — member keeps `join_authorised_via_users_server`.
_CONTENT_V9: _ContentRules = {
    **_CONTENT_V8,
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
}
# spec: v11-redactions — create keeps everything, power levels keep `invite`, redaction keeps `redacts`;
# member additionally keeps `third_party_invite.signed` (handled below).
_CONTENT_V11: _ContentRules = {
    **_CONTENT_V9,
    "m.room.create": None,
    "m.room.power_levels": _POWER_LEVEL_KEYS | {"invite"},
    "m.room.redaction": frozenset({"redacts"}),
}

_RULES: dict[RedactionRules, tuple[frozenset[str], _ContentRules]] = {
    RedactionRules.V1: (_KEYS_BEFORE_V11, _CONTENT_V1),
    RedactionRules.V6: (_KEYS_BEFORE_V11, _CONTENT_V6),
    RedactionRules.V8: (_KEYS_BEFORE_V11, _CONTENT_V8),
    RedactionRules.V9: (_KEYS_BEFORE_V11, _CONTENT_V9),
    RedactionRules.V11: (_KEYS_ALWAYS, _CONTENT_V11),
}


def redact(event: Mapping[str, Any], room_version: str | RoomVersion) -> dict[str, Any]:
    """Return a new dict holding only what the room version's redaction algorithm keeps.

    The input is not modified. Nested values are shared with the input, not copied.
    """
    rules = get_room_version(room_version).redaction
    keep_keys, content_rules = _RULES[rules]
    out = {k: v for k, v in event.items() if k in keep_keys}

    event_type = event.get("type")
    content = event.get("content")
    if not isinstance(content, Mapping):
        # Malformed content is dropped; format checks reject such events elsewhere.
        out["content"] = {}
        return out
    # A `type` that is not a string (a list, an object: unhashable) keeps no content, like an unknown type.
    allowed = content_rules.get(event_type, frozenset()) if isinstance(event_type, str) else frozenset()
    if allowed is None:
        out["content"] = dict(content)
        return out
    new_content = {k: v for k, v in content.items() if allowed and k in allowed}
    if rules is RedactionRules.V11 and event_type == "m.room.member":
        # spec: v11-redactions — keep only `signed` inside `third_party_invite`.
        tpi = content.get("third_party_invite")
        if isinstance(tpi, Mapping) and "signed" in tpi:
            new_content["third_party_invite"] = {"signed": tpi["signed"]}
    out["content"] = new_content
    return out
