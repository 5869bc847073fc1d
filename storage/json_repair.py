"""Schema 2 -> 3: take out stored client JSON nested deeper than the request-body limit.

Before the nesting rule at the JSON edge (`homeserver/api/http.py`, MAX_DEPTH levels, as for events),
a client could store values nested up to ~250 levels. They are re-encoded later inside bigger answers
(`/sync`, `/keys/query`, GET routes), and past orjson's 255-level limit every such answer failed with
500, after a restart too: one user's to-device message broke another user's `/sync` for good.

This step finds every value the edge would now refuse and removes it, one log line each (user and
kind); everything else stays as it was:

- account data, global and per room: the entry goes (with its stream log entry); for `m.tag` only
  the too-deep tags go and the room's other tags stay;
- to-device messages waiting in an inbox;
- push rules (user rules and changed default rules, one by one), pushers;
- filters: keys holding too-deep values are dropped, so the filter id a client syncs with stays valid;
- end-to-end keys (device, one-time, fallback, cross-signing) and key backup versions and sessions.

Receipts, presence and profiles store only checked fields; events were always depth-checked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson

from homeserver.protocol.canonical_json import MAX_DEPTH, nested_deeper_than
from storage.account_data import ACCOUNT_DATA, ACCOUNT_DATA_STREAM
from storage.codec import SEP, u64
from storage.cross_signing import CROSS_SIGNING_KEYS
from storage.device_keys import DEVICE_KEYS
from storage.engine import Batch, Store, Table
from storage.filters import FILTERS
from storage.key_backup import BACKUP_KEYS, BACKUP_VERSIONS
from storage.one_time_keys import FALLBACK_KEYS, ONE_TIME_KEYS
from storage.push import PUSH_RULES, PUSHERS, PUSHERS_BY_KEY
from storage.to_device import TO_DEVICE

log = logging.getLogger(__name__)


def too_deep(value: Any) -> bool:
    return nested_deeper_than(value, MAX_DEPTH)


def _user(key: bytes) -> str:
    """Every table scanned here starts its key with the user id."""
    return key.split(SEP, 1)[0].decode(errors="replace")


def _removed(key: bytes, kind: str) -> None:
    log.warning("repair: removed %s of %s, nested deeper than %d levels", kind, _user(key), MAX_DEPTH)


def remove_unencodable_json(store: Store, batch: Batch) -> None:
    _account_data(store, batch)
    _whole_rows(store, batch, TO_DEVICE, "a to-device message", lambda m: m.get("content"))
    _push_rules(store, batch)
    _pushers(store, batch)
    _filters(store, batch)
    for table, kind in (
        (DEVICE_KEYS, "device keys"),
        (ONE_TIME_KEYS, "a one-time key"),
        (FALLBACK_KEYS, "a fallback key"),
        (CROSS_SIGNING_KEYS, "a cross-signing key"),
        (BACKUP_VERSIONS, "a key backup version"),
        (BACKUP_KEYS, "a backed-up room key"),
    ):
        _whole_rows(store, batch, table, kind, lambda v: v)


def _whole_rows(store: Store, batch: Batch, table: Table, kind: str, part: Callable[[Any], Any]) -> None:
    """Delete each row whose client-given `part` is too deep."""
    for key, raw in store.iterate(table):
        if too_deep(part(orjson.loads(raw))):
            batch.delete(table, key)
            _removed(key, kind)


def _account_data(store: Store, batch: Batch) -> None:
    for key, raw in store.iterate(ACCOUNT_DATA):
        record = orjson.loads(raw)
        content = record.get("content")
        if not too_deep(content):
            continue
        _, room, data_type = key.split(SEP, 2)
        tags = content.get("tags") if data_type == b"m.tag" and room and isinstance(content, dict) else None
        if isinstance(tags, dict):
            # each tag was its own request body: keep the room's good tags, at the entry's position
            kept = {name: tag for name, tag in tags.items() if not too_deep(tag)}
            if len(kept) < len(tags):
                batch.put(ACCOUNT_DATA, key, orjson.dumps({**record, "content": {**content, "tags": kept}}))
                _removed(key, f"{len(tags) - len(kept)} tag(s) in {room.decode(errors='replace')}")
            continue
        batch.delete(ACCOUNT_DATA, key)
        batch.delete(ACCOUNT_DATA_STREAM, key.split(SEP, 1)[0] + SEP + u64(int(record["stream"])))
        where = f" in {room.decode(errors='replace')}" if room else ""
        _removed(key, f"account data {data_type.decode(errors='replace')}{where}")


def _push_rules(store: Store, batch: Batch) -> None:
    for key, raw in store.iterate(PUSH_RULES):
        record = orjson.loads(raw)
        # each rule, and each change to a default rule, was its own request body
        old_rules: dict[str, list[Any]] = record.get("rules") or {}
        old_defaults: dict[str, Any] = record.get("defaults") or {}
        rules = {kind: [r for r in listed if not too_deep(r)] for kind, listed in old_rules.items()}
        defaults = {rule_id: d for rule_id, d in old_defaults.items() if not too_deep(d)}
        dropped = sum(map(len, old_rules.values())) - sum(map(len, rules.values())) + len(old_defaults) - len(defaults)
        if dropped:
            batch.put(PUSH_RULES, key, orjson.dumps({**record, "rules": rules, "defaults": defaults}))
            _removed(key, f"{dropped} push rule(s)")


def _pushers(store: Store, batch: Batch) -> None:
    for key, raw in store.iterate(PUSHERS):
        if too_deep(orjson.loads(raw)):
            user, app_id, pushkey = key.split(SEP, 2)
            batch.delete(PUSHERS, key)
            batch.delete(PUSHERS_BY_KEY, SEP.join((app_id, pushkey, user)))
            _removed(key, "a pusher")


def _filters(store: Store, batch: Batch) -> None:
    for key, raw in store.iterate(FILTERS):
        definition = orjson.loads(raw)
        if too_deep(definition) and isinstance(definition, dict):
            kept = {k: v for k, v in definition.items() if not nested_deeper_than(v, MAX_DEPTH - 1)}
            batch.put(FILTERS, key, orjson.dumps(kept))
            _removed(key, f"part of filter ({', '.join(sorted(set(definition) - set(kept)))})")
