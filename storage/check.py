"""Does every index agree with the events? A consistency check of a whole store.

Used by the crash tests and by `python -m homeserver inspect check`. It reads the tables as they
are (no caches trusted) and returns a list of problems in words; an empty list means the store is
consistent. It checks what the storage layer promises, not the Matrix rules that chose the data:

- short ids: each forward entry (name -> id) has the matching reverse entry and vice versa;
- events: `event_json` and `event_meta` hold the same events, each with a known event id and room;
  the snapshots named in the metadata exist; state events have a stored auth chain of stored events;
- timeline: every live event's stream position is its timeline key and the other way round; no
  rejected, soft-failed or outlier event is in the timeline; no position is beyond the counter;
- rooms: the forward extremities are exactly the timeline events no timeline event names as a prev
  event; `room_state` equals the room's current snapshot (and the state after its only extremity);
  `room_members`, `user_rooms` and `room_servers` match the member events of the current state;
- room indexes: no event is listed in `index_failures` (the room service's index hook failed on it
  and its relations, search and transaction-id entries were left out);
- snapshots: parents exist one layer down; hash entries point at snapshots with that hash; with
  `full=True` every snapshot's stored hash is recomputed from its state (costly on big stores).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from storage.codec import SEP, read_u64, u64
from storage.database import Database
from storage.engine import META
from storage.events import (
    AUTH_CHAIN,
    BACKFILLED,
    EVENT_JSON,
    EVENT_META,
    OUTLIER,
    REJECTED,
    SOFT_FAILED,
    STATE,
    EventMeta,
)
from storage.rooms import (
    LIVE_BASE,
    MEMBERSHIPS,
    ROOM_EXTREMITIES,
    ROOM_INFO,
    ROOM_MEMBERS,
    ROOM_SERVERS,
    ROOM_STATE,
    TIMELINE,
    USER_ROOMS,
)
from storage.shortids import (
    EVENT_TO_SHORT,
    ROOM_TO_SHORT,
    SHORT_TO_EVENT,
    SHORT_TO_ROOM,
    SHORT_TO_STATEKEY,
    STATEKEY_TO_SHORT,
)
from storage.state_snapshots import SNAPSHOT, SNAPSHOT_BY_HASH, _Record, state_hash

MAX_PROBLEMS = 200  # a badly broken store would otherwise print millions of lines
_MEMBER_TYPE = b"m.room.member"


class _Problems(list[str]):
    def add(self, message: str) -> None:
        if len(self) < MAX_PROBLEMS:
            self.append(message)
        elif len(self) == MAX_PROBLEMS:
            self.append("... more problems not shown")


def check_consistency(db: Database, *, full: bool = False) -> list[str]:
    """Every disagreement between the tables of `db`, in words (empty: consistent)."""
    problems = _Problems()
    _check_short_ids(db, problems)
    metas = _check_events(db, problems)
    _check_timeline(db, metas, problems)
    _check_snapshots(db, problems, full=full)
    for room_key, raw in db.store.iterate(ROOM_INFO):
        _check_room(db, read_u64(room_key), raw, metas, problems)
    _check_user_rooms(db, problems)
    for short, failure in db.rooms.index_failures():
        problems.add(
            f"event {short} ({failure.get('event_id')} in {failure.get('room_id')}): its room indexes "
            f"(relations, search, transaction ids...) were not written: {failure.get('error')}"
        )
    return list(problems)


# -- short ids -------------------------------------------------------------------------------------


def _check_short_ids(db: Database, problems: _Problems) -> None:
    store = db.store
    for forward, reverse in (
        (EVENT_TO_SHORT, SHORT_TO_EVENT),
        (STATEKEY_TO_SHORT, SHORT_TO_STATEKEY),
        (ROOM_TO_SHORT, SHORT_TO_ROOM),
    ):
        for name, raw in store.iterate(forward):
            if len(raw) != 8:
                problems.add(f"{forward.name}: {name!r} maps to a value of {len(raw)} bytes")
                continue
            back = store.get(reverse, raw)
            if back != name:
                problems.add(f"{forward.name}: {name!r} -> {read_u64(raw)}, but {reverse.name} has {back!r}")
        for raw, name in store.iterate(reverse):
            there = store.get(forward, name)
            if there != raw:
                short = read_u64(raw) if len(raw) == 8 else raw.hex()
                problems.add(f"{reverse.name}: {short} -> {name!r}, but {forward.name} has no such entry")


# -- events ----------------------------------------------------------------------------------------


def _check_events(db: Database, problems: _Problems) -> dict[int, EventMeta]:
    store = db.store
    metas: dict[int, EventMeta] = {}
    high = _counter(db)
    for key, raw in store.iterate(EVENT_META):
        short = read_u64(key)
        try:
            meta = EventMeta.decode(raw)
        except Exception as e:  # a damaged record is a problem to report, not a crash
            problems.add(f"event_meta {short}: cannot decode ({e})")
            continue
        metas[short] = meta
        if store.get(EVENT_JSON, key) is None:
            problems.add(f"event {short}: metadata but no JSON")
        if store.get(SHORT_TO_EVENT, key) is None:
            problems.add(f"event {short}: no event id (short_eventid)")
        if store.get(SHORT_TO_ROOM, u64(meta.room)) is None:
            problems.add(f"event {short}: unknown room {meta.room}")
        if meta.flags & BACKFILLED:
            if not 0 < meta.stream < LIVE_BASE:  # a backfilled event keeps its timeline order there
                problems.add(f"event {short}: backfilled at order {meta.stream}, not below the live timeline")
        elif meta.stream > high:
            problems.add(f"event {short}: stream position {meta.stream} beyond the counter {high}")
        if not meta.flags & OUTLIER:
            for what, sid in (("state_before", meta.state_before), ("state_after", meta.state_after)):
                if sid and store.get(SNAPSHOT, u64(sid)) is None:
                    problems.add(f"event {short}: {what} snapshot {sid} does not exist")
            if not meta.state_after and meta.flags & STATE and not meta.flags & REJECTED:
                problems.add(f"event {short}: accepted state event without a state_after snapshot")
        if meta.flags & STATE and not meta.state_key:
            problems.add(f"event {short}: state event without a short state key")
        if meta.state_key and store.get(SHORT_TO_STATEKEY, u64(meta.state_key)) is None:
            problems.add(f"event {short}: unknown short state key {meta.state_key}")
    for key, raw in store.iterate(EVENT_JSON):
        short = read_u64(key)
        if short not in metas:
            problems.add(f"event {short}: JSON but no metadata")
        try:
            orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            problems.add(f"event {short}: stored JSON does not parse ({e})")
    for short, meta in metas.items():
        if not meta.flags & STATE or meta.flags & OUTLIER:
            continue
        chain_raw = store.get(AUTH_CHAIN, u64(short))
        if chain_raw is None:
            problems.add(f"state event {short}: no stored auth chain")
            continue
        for i in range(0, len(chain_raw), 8):
            member = read_u64(chain_raw, i)
            if member not in metas:
                problems.add(f"state event {short}: auth chain names unknown event {member}")
    return metas


def _counter(db: Database) -> int:
    raw = db.store.get(META, b"stream_counter")
    return read_u64(raw) if raw and len(raw) == 8 else 0


def _check_timeline(db: Database, metas: dict[int, EventMeta], problems: _Problems) -> None:
    store = db.store
    for key, raw in store.iterate(TIMELINE):
        room, order, short = read_u64(key), read_u64(key, 8), read_u64(raw)
        meta = metas.get(short)
        if meta is None:
            problems.add(f"timeline room {room} order {order}: event {short} is not stored")
            continue
        if meta.room != room:
            problems.add(f"timeline room {room}: event {short} belongs to room {meta.room}")
        if order < LIVE_BASE and (not meta.flags & BACKFILLED or meta.stream != order):
            problems.add(
                f"timeline room {room}: event {short} at backfill order {order}, but it is not backfilled there"
            )
        if order >= LIVE_BASE and (meta.flags & BACKFILLED or meta.stream != order - LIVE_BASE):
            problems.add(f"timeline room {room}: event {short} at {order - LIVE_BASE}, but its stream is {meta.stream}")
        if meta.flags & (REJECTED | SOFT_FAILED | OUTLIER):
            problems.add(f"timeline room {room}: event {short} is rejected, soft-failed or an outlier")
    for short, meta in metas.items():
        order = meta.stream if meta.flags & BACKFILLED else LIVE_BASE + meta.stream  # rooms/tokens.order_of
        if meta.stream and store.get(TIMELINE, u64(meta.room) + u64(order)) != u64(short):
            problems.add(f"event {short}: stream {meta.stream} but not at that place in room {meta.room}'s timeline")


# -- snapshots -------------------------------------------------------------------------------------


def _check_snapshots(db: Database, problems: _Problems, *, full: bool) -> None:
    store = db.store
    records: dict[int, _Record] = {}
    for key, raw in store.iterate(SNAPSHOT):
        sid = read_u64(key)
        try:
            records[sid] = _Record.decode(raw)
        except Exception as e:
            problems.add(f"snapshot {sid}: cannot decode ({e})")
    for sid, rec in records.items():
        if rec.layer:
            parent = records.get(rec.parent)
            if parent is None:
                problems.add(f"snapshot {sid}: parent {rec.parent} does not exist")
            elif parent.layer != rec.layer - 1:
                problems.add(f"snapshot {sid}: layer {rec.layer} on a parent of layer {parent.layer}")
        elif rec.removed or rec.parent:
            problems.add(f"snapshot {sid}: a root with a parent or removed entries")
        if full:
            try:
                actual = state_hash(db.snapshots.load(sid))
            except KeyError as e:
                problems.add(f"snapshot {sid}: cannot be loaded ({e})")
                continue
            if actual != rec.hash:
                problems.add(f"snapshot {sid}: stored hash does not match its state")
    for key, raw in store.iterate(SNAPSHOT_BY_HASH):
        sid = read_u64(raw)
        found = records.get(sid)
        if found is None:
            problems.add(f"state_snapshot_hash {key.hex()[:16]}: snapshot {sid} does not exist")
        elif found.hash.to_bytes(32, "big") != key:
            problems.add(f"state_snapshot_hash {key.hex()[:16]}: snapshot {sid} has another hash")


# -- rooms -----------------------------------------------------------------------------------------


def _prev_ids(event: dict[str, Any]) -> Iterator[str]:
    refs = event.get("prev_events")
    if isinstance(refs, list):
        for ref in refs:
            if isinstance(ref, str):
                yield ref
            elif isinstance(ref, list) and ref and isinstance(ref[0], str):
                yield ref[0]  # rooms v1-v2: [event_id, hashes]


def _check_room(db: Database, room: int, raw_info: bytes, metas: dict[int, EventMeta], problems: _Problems) -> None:
    store = db.store
    name = f"room {room}"
    try:
        info = orjson.loads(raw_info)
        state_sid = int(info["state"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        problems.add(f"{name}: room_info does not decode ({e})")
        return
    if store.get(SHORT_TO_ROOM, u64(room)) is None:
        problems.add(f"{name}: room_info for a room without an id")
    if int(info.get("stream", 0)) > _counter(db):
        problems.add(f"{name}: room_info stream {info.get('stream')} beyond the counter")

    # the current state: room_state == the room's snapshot
    try:
        snapshot = dict(db.snapshots.load(state_sid)) if state_sid else {}
    except KeyError:
        problems.add(f"{name}: current state snapshot {state_sid} does not exist")
        snapshot = {}
    table = {read_u64(k, 8): read_u64(v) for k, v in store.iterate(ROOM_STATE, u64(room))}
    for sk in sorted(snapshot.keys() | table.keys()):
        if snapshot.get(sk) != table.get(sk):
            problems.add(f"{name}: room_state[{sk}] = {table.get(sk)}, the current snapshot has {snapshot.get(sk)}")
    for sk, ev in snapshot.items():
        meta = metas.get(ev)
        if meta is None or meta.room != room or meta.state_key != sk:
            problems.add(f"{name}: current state names event {ev} for state key {sk}, which is not that event")

    # forward extremities: the timeline events no timeline event follows
    timeline = [read_u64(v) for _, v in store.iterate(TIMELINE, u64(room))]
    followed: set[int] = set()
    for short in timeline:
        event = _json(db, short)
        for prev in _prev_ids(event or {}):
            raw = store.get(EVENT_TO_SHORT, prev.encode())
            if raw is None:
                problems.add(f"{name}: event {short} follows {prev}, which is not stored")
            else:
                followed.add(read_u64(raw))
    expected = set(timeline) - followed
    extremities = {read_u64(k, 8) for k in store.keys(ROOM_EXTREMITIES, u64(room))}
    for ev in sorted(extremities - expected):
        meta = metas.get(ev)
        why = "not stored" if meta is None else "followed by a later event or not in the timeline"
        problems.add(f"{name}: forward extremity {ev} is {why}")
    for ev in sorted(expected - extremities):
        problems.add(f"{name}: timeline event {ev} has no successor but is not a forward extremity")
    if timeline and not extremities:
        problems.add(f"{name}: no forward extremities")
    if len(extremities) == 1:
        (only,) = extremities
        meta = metas.get(only)
        if meta is not None and meta.state_after != state_sid:
            problems.add(f"{name}: current state {state_sid} is not the state after its only extremity")

    # membership indexes: from the member events of the current state
    members: dict[bytes, tuple[str, int]] = {}
    for sk, ev in snapshot.items():
        key = store.get(SHORT_TO_STATEKEY, u64(sk))
        if key is None or not key.startswith(_MEMBER_TYPE + SEP):
            continue
        user = key[len(_MEMBER_TYPE) + 1 :]
        membership = ((_json(db, ev) or {}).get("content") or {}).get("membership")
        if membership in MEMBERSHIPS:
            members[user] = (membership, ev)
    indexed: dict[bytes, tuple[str, int]] = {}
    for k, v in store.iterate(ROOM_MEMBERS, u64(room)):
        membership_b, _, user = k[8:].partition(SEP)
        if user in indexed:
            problems.add(f"{name}: room_members lists {user.decode()} twice")
        indexed[user] = (membership_b.decode(), read_u64(v))
    for user in sorted(members.keys() | indexed.keys()):
        if members.get(user) != indexed.get(user):
            problems.add(
                f"{name}: room_members has {user.decode()} as {indexed.get(user)}, the state as {members.get(user)}"
            )
    for user, (membership, ev) in members.items():
        raw = store.get(USER_ROOMS, user + SEP + u64(room))
        if raw is None or len(raw) != 17:
            problems.add(f"{name}: user_rooms has no entry for {user.decode()}")
            continue
        if MEMBERSHIPS[raw[0]] != membership or read_u64(raw, 9) != ev:
            problems.add(
                f"{name}: user_rooms has {user.decode()} as {MEMBERSHIPS[raw[0]]} by event {read_u64(raw, 9)}, "
                f"the state as {membership} by {ev}"
            )
    joined_by_server = {
        user.partition(b":")[2] + SEP + user for user, (membership, _) in members.items() if membership == "join"
    }
    servers = {k[8:] for k in store.keys(ROOM_SERVERS, u64(room))}
    for entry in sorted(joined_by_server ^ servers):
        server, _, user = entry.partition(SEP)
        where = "room_servers" if entry in servers else "the state"
        problems.add(f"{name}: only {where} has {user.decode()} joined from {server.decode()}")


def _check_user_rooms(db: Database, problems: _Problems) -> None:
    """Every user_rooms entry belongs to a member of that room (the other direction is in _check_room)."""
    store = db.store
    for key, _ in store.iterate(USER_ROOMS):
        user, room_raw = key[:-9], key[-8:]
        if key[-9:-8] != SEP:
            problems.add(f"user_rooms: malformed key {key!r}")
            continue
        found = any(store.get(ROOM_MEMBERS, room_raw + m.encode() + SEP + user) is not None for m in MEMBERSHIPS)
        if not found:
            problems.add(f"user_rooms: {user.decode()} in room {read_u64(room_raw)}, but room_members disagrees")


def _json(db: Database, short: int) -> dict[str, Any] | None:
    raw = db.store.get(EVENT_JSON, u64(short))
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
