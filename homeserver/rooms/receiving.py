"""Events from other servers: the receiving half of the one event pipeline.

spec: server-server-api "Checks performed on receipt of a PDU": format, signatures, content hash,
then the auth rules against the event's own auth events (reject), the state before it (reject) and
the room's current state (soft-fail). The writing is `EventPipeline.write_event`, shared with
local events.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError
from homeserver.protocol import canonical_json
from homeserver.protocol.auth_rules import auth_events_map, check_auth, check_auth_events_field
from homeserver.protocol.errors import AuthError, EventFormatError, HashMismatch, ProtocolError, SignatureError
from homeserver.protocol.event_format import check_pdu_format
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.event_ids import room_id_from_create_event
from homeserver.protocol.event_signing import add_hashes_and_signatures, required_signers, verify_event_signature
from homeserver.protocol.hashes import check_content_hash
from homeserver.protocol.redaction import redact
from homeserver.protocol.room_versions import EventFormat, RoomVersion, get_room_version
from homeserver.rooms.pipeline import (
    EventRefused,
    KeyLookup,
    MissingEventsError,
    MissingStateError,
    PersistedEvent,
    RoomContext,
)
from homeserver.rooms.stripped_state import stripped_state
from homeserver.state.event_source import reference_ids
from storage.engine import Batch
from storage.events import OUTLIER, REDACTED, SOFT_FAILED, STATE, EventMeta
from storage.rooms import LIVE_BASE

if TYPE_CHECKING:
    from homeserver.rooms.pipeline import EventPipeline

# events of a send_join answer checked or stored between two turns of the event loop (~10-20 ms)
JOIN_YIELD_EVERY = 100
# state entries read into a snapshot between two turns of the event loop (~10-20 ms)
STATE_YIELD_EVERY = 500


async def receive(
    pipe: EventPipeline, pdu: dict[str, Any], keys: KeyLookup, *, outlier: bool = False
) -> PersistedEvent:
    """Accept a PDU from another server into a room we are in.

    Raises `EventRefused` when it is dropped (format, signatures), `MissingEventsError` when its
    prev or auth events are unknown, `MissingStateError` when a prev event is an outlier (the state
    before the event is unknown here). A PDU that fails the auth rules is stored as rejected and
    one that the current state does not allow is stored soft-failed; both are returned. An
    `outlier` is checked against its own auth events only (its prev events are not needed) and
    stored outside the timeline and the state.
    spec: server-server-api "Checks performed on receipt of a PDU".
    """
    return await _receive(pipe, pdu, keys, outlier=outlier)


async def receive_after_gap(
    pipe: EventPipeline, pdu: dict[str, Any], keys: KeyLookup, states_after: Mapping[str, Sequence[str]]
) -> PersistedEvent:
    """Accept a PDU for the timeline whose prev events are missing here (or outliers), given the state
    after each such prev event as another server reported it (`/state_ids` at the prev, plus the
    prev itself when it is a state event).

    The state before the PDU is the resolution of those states with the states after its prev
    events that are known here (spec: server-server-api "Checks performed on receipt of a PDU":
    the state before an event is the resolution of the states after its prev events). Every event
    named must be stored (outliers are fine), or `MissingEventsError` names those that are not.
    """
    states = [list(ids) for ids in states_after.values()]
    return await _receive(pipe, pdu, keys, prev_states=states)


async def receive_with_state(
    pipe: EventPipeline, pdu: dict[str, Any], keys: KeyLookup, state_ids: Sequence[str]
) -> PersistedEvent:
    """Accept a PDU for the timeline with the state before it given by another server (the answer of
    `/state_ids` at the event, when its prev events are missing or outliers here).

    Every event of `state_ids` must be stored (outliers are fine: fetch them first), or
    `MissingEventsError` names those that are not; rejected ones are left out of the state. The prev
    events need not be known: those that are stop being forward extremities, the others are gaps
    that backfill may fill later. Then the checks are those of `receive`: auth events, the state
    before (the supplied one), the current state (soft fail).
    """
    return await _receive(pipe, pdu, keys, state_ids=list(state_ids))


async def receive_backfilled(
    pipe: EventPipeline, pdu: dict[str, Any], keys: KeyLookup, order: int, state_ids: Sequence[str] | None = None
) -> PersistedEvent:
    """Accept a PDU fetched with `/backfill` as older history, at timeline order `order` (below every
    live event; the caller gives each event of an answer its own free order, older events lower).

    Checked like any PDU (spec: server-server-api "Checks performed on receipt of a PDU"; steps 1-5:
    the current state does not judge history, so nothing is soft-failed). The state before it is
    the resolution of the states after its prev events, which must then be stored with their state
    (else `MissingEventsError` / `MissingStateError`), or `state_ids` (the answer of `/state_ids` at
    the event). It changes neither the current state nor the forward extremities, takes no stream
    position and wakes nobody. An event already in the timeline is returned as it is.
    """
    if not 0 < order < LIVE_BASE:
        raise ValueError(f"backfill order {order} is not below the live timeline")
    return await _receive(
        pipe, pdu, keys, state_ids=None if state_ids is None else list(state_ids), backfill_order=order
    )


async def _receive(
    pipe: EventPipeline,
    pdu: dict[str, Any],
    keys: KeyLookup,
    *,
    outlier: bool = False,
    state_ids: list[str] | None = None,
    prev_states: list[list[str]] | None = None,
    backfill_order: int | None = None,
) -> PersistedEvent:
    room_id = pdu.get("room_id")
    if room_id is None and pdu.get("type") == "m.room.create":
        room_id = _room_of_create(pdu)  # rooms v12: the create event names its room by its own id
    if not isinstance(room_id, str):
        raise EventRefused("PDU has no room_id")
    try:
        ctx = pipe.load_context(room_id)
    except MatrixError:
        raise EventRefused(f"PDU for a room this server is not in: {room_id}") from None
    pdu, eid, flags = await _checked(
        pdu, ctx.rv, keys, lambda eid: _already_stored(pipe, eid, room_id, outliers_count=outlier)
    )
    if flags is None:
        return _stored_or_fail(pipe, eid, room_id, outlier)
    async with pipe.room_lock(room_id):
        ctx = pipe.load_context(room_id)
        existing = _already_stored(pipe, eid, room_id, outliers_count=outlier)
        if existing is not None:
            return existing
        if backfill_order is not None and next(
            pipe.db.rooms.timeline(ctx.room_short, after=backfill_order - 1, before=backfill_order + 1), None
        ):
            raise ValueError(f"backfill order {backfill_order} is taken in {room_id}")
        batch = pipe.db.store.batch()
        with batch:
            persisted = await _accept_remote(
                pipe,
                ctx,
                batch,
                pdu,
                eid,
                flags,
                outlier=outlier,
                supplied_state=state_ids,
                prev_states=prev_states,
                check_current=backfill_order is None,
                backfill_order=backfill_order,
            )
            await batch.commit()
        if outlier or backfill_order is not None:
            ctx.clear_pending()  # an outlier changes nothing anyone can see; history is not news
        else:
            pipe.notify(ctx)
        return persisted


async def _checked(
    pdu: dict[str, Any], rv: RoomVersion, keys: KeyLookup, stored: Callable[[str], PersistedEvent | None]
) -> tuple[dict[str, Any], str, int | None]:
    """Steps 1-3: format, signatures, content hash. Returns the PDU to keep (redacted when its hash
    does not match), its event id and the flags to store it with; flags None when `stored` says the
    event is stored already (nothing else is checked then)."""
    try:
        check_pdu_format(pdu, rv)  # step 1
    except EventFormatError as e:
        raise EventRefused(str(e)) from None
    eid = compute_event_id(pdu, rv)
    if stored(eid) is not None:
        return pdu, eid, None
    await _check_signatures(pdu, rv, keys)  # step 2
    flags = 0
    try:
        check_content_hash(pdu, rv)  # step 3
    except HashMismatch:
        pdu = redact(pdu, rv)
        flags |= REDACTED
    return pdu, eid, flags


def _stored_or_fail(pipe: EventPipeline, eid: str, room_id: str, outlier: bool) -> PersistedEvent:
    existing = _already_stored(pipe, eid, room_id, outliers_count=outlier)
    assert existing is not None  # nothing deletes events
    return existing


async def receive_join(
    pipe: EventPipeline,
    room_id: str,
    room_version: str,
    join: dict[str, Any],
    state: Sequence[dict[str, Any]],
    auth_chain: Sequence[dict[str, Any]],
    keys: KeyLookup,
) -> PersistedEvent:
    """Accept our join to a room on another server with the room's state from the `send_join`
    answer, all in one batch: the room exists here whole, or not at all.

    spec: server-server-api "Joining rooms": the state and auth chain events are checked like any
    PDU (format, signatures, hash) and against their own auth events, then stored as outliers;
    the join event is accepted with that state as the state before it. Events that fail their
    checks, or whose auth events are missing, are left out (as Synapse does): the state is what
    remains. The room must have its create event, of the room version `make_join` announced.
    """
    try:
        rv = get_room_version(room_version)
    except ProtocolError as e:
        raise EventRefused(str(e)) from None
    candidates: dict[str, tuple[dict[str, Any], int]] = {}
    for i, pdu in enumerate([*auth_chain, *state]):
        if i % JOIN_YIELD_EVERY == JOIN_YIELD_EVERY - 1:
            await asyncio.sleep(0)  # a big room's state: other requests are served between checks
        if not isinstance(pdu, dict):
            continue
        if pdu.get("room_id", room_id) != room_id:
            continue
        try:
            checked, eid, flags = await _checked(pdu, rv, keys, lambda _eid: None)
        except EventRefused:
            continue  # spec: events failing signature checks are dropped
        assert flags is not None
        candidates.setdefault(eid, (checked, flags))
    state_ids = [eid for eid in (_event_id_or_none(p, rv) for p in state) if eid in candidates]
    create_id = _create_event_id(candidates, state_ids, rv, room_id)
    if join.get("room_id", room_id) != room_id or join.get("type") != "m.room.member":
        raise EventRefused("the join is not a membership event of this room")
    join_pdu, join_id, join_flags = await _checked(join, rv, keys, lambda _eid: None)
    assert join_flags is not None
    async with pipe.room_lock(room_id):
        batch = pipe.db.store.batch()
        with batch:
            try:
                ctx = pipe.load_context(room_id)
            except MatrixError:  # a room new to this server
                ctx = RoomContext(
                    rv=rv,
                    room_id=room_id,
                    room_short=pipe.db.ids.room_or_create(room_id, batch),
                    extremities=[],
                    state=0,
                    info={"version": rv.identifier, "create_event_id": create_id, "state": 0},
                )
            if ctx.rv.identifier != rv.identifier or ctx.info.get("create_event_id") != create_id:
                raise EventRefused("the room's create event differs from the one stored here")
            for i, eid in enumerate(_auth_order(candidates, rv)):
                if i % JOIN_YIELD_EVERY == JOIN_YIELD_EVERY - 1:
                    await asyncio.sleep(0)  # the room lock is held and the batch is ours alone
                if pipe.stored_short(ctx, eid) is not None:
                    continue
                pdu, flags = candidates[eid]
                try:
                    await _accept_remote(pipe, ctx, batch, pdu, eid, flags, outlier=True)
                except MissingEventsError:
                    continue  # its auth events were dropped or never sent: it is dropped too
            kept = [eid for eid in state_ids if pipe.stored_short(ctx, eid) is not None]
            persisted = await _accept_remote(
                pipe, ctx, batch, join_pdu, join_id, join_flags, supplied_state=kept, check_current=False
            )
            if persisted.rejected is not None:  # nothing is kept of a room we cannot join
                raise EventRefused(f"the room's state does not allow this join: {persisted.rejected}")
            await batch.commit()
        pipe.notify(ctx)
        return persisted


async def receive_invite(
    pipe: EventPipeline,
    room_version: str,
    event: Any,
    invite_state: Any,
    keys: KeyLookup,
) -> tuple[dict[str, Any], PersistedEvent]:
    """An invite of one of our users to a room on another server (`PUT /v2/invite`): checked, signed
    by us too (the answer the inviting server needs), and kept so that the user sees it: the event
    as an outlier, the user's membership "invite" and the room's stripped state as the inviting
    server gave it (spec: server-server-api "Inviting to a room"). Returns the event with our
    signature and what was written. A room this server is in takes the invite through the same
    path: the inviting server will send the event in a transaction too.
    """
    try:
        rv = get_room_version(room_version)
    except ProtocolError:
        raise EventRefused(f"unknown room version {room_version!r}") from None
    if not isinstance(event, dict):
        raise EventRefused("the invite is not an event")
    content = event.get("content")
    state_key = event.get("state_key")
    room_id = event.get("room_id")
    if (
        event.get("type") != "m.room.member"
        or not isinstance(content, dict)
        or content.get("membership") != "invite"
        or not isinstance(state_key, str)
        or not isinstance(room_id, str)
    ):
        raise EventRefused("the event is not an invite")
    server = pipe.identity.server_name
    if not state_key.endswith(":" + server):
        raise EventRefused(f"{state_key} is not a user of this server")
    event, eid, flags = await _checked(event, rv, keys, lambda _eid: None)
    assert flags is not None
    if flags & REDACTED:
        raise EventRefused("the invite's content does not match its hash")
    identity = pipe.identity
    add_hashes_and_signatures(event, rv, identity.server_name, identity.key_id, identity.signing_key)
    stripped = (
        [stripped_state(e) for e in invite_state if isinstance(e, dict)] if isinstance(invite_state, list) else []
    )
    stripped = [e for e in stripped if isinstance(e.get("type"), str) and isinstance(e.get("state_key"), str)]
    stripped.append(stripped_state(event))
    async with pipe.room_lock(room_id):
        batch = pipe.db.store.batch()
        with batch:
            persisted = _write_membership_outlier(pipe, batch, rv, room_id, eid, event, "invite", stripped)
            await batch.commit()
    pipe.notify_outside(persisted)
    return event, persisted


def record_remote_leave(
    pipe: EventPipeline, batch: Batch, rv: RoomVersion, event: dict[str, Any], eid: str
) -> PersistedEvent:
    """Our user's leave (or rejection of an invite) of a room this server is not in, sent through a
    resident server: kept as an outlier, and the user's membership becomes "leave"."""
    return _write_membership_outlier(pipe, batch, rv, event["room_id"], eid, event, "leave", None)


def record_remote_knock(
    pipe: EventPipeline,
    batch: Batch,
    rv: RoomVersion,
    event: dict[str, Any],
    eid: str,
    knock_state: list[dict[str, Any]],
) -> PersistedEvent:
    """Our user's knock on a room this server is not in, accepted by a resident server: kept as an
    outlier, the user's membership becomes "knock", with the stripped state the resident answered
    (spec: client-server /sync `rooms.knock.knock_state`)."""
    stripped = [stripped_state(e) for e in knock_state if isinstance(e, dict)]
    stripped = [e for e in stripped if isinstance(e.get("type"), str) and isinstance(e.get("state_key"), str)]
    stripped.append(stripped_state(event))
    return _write_membership_outlier(pipe, batch, rv, event["room_id"], eid, event, "knock", stripped)


def _write_membership_outlier(
    pipe: EventPipeline,
    batch: Batch,
    rv: RoomVersion,
    room_id: str,
    eid: str,
    event: dict[str, Any],
    membership: str,
    stripped: list[dict[str, Any]] | None,
) -> PersistedEvent:
    db = pipe.db
    room = db.ids.room_or_create(room_id, batch)
    short = db.ids.event_or_create(eid, batch)
    user_id = event["state_key"]
    sk = db.ids.state_key_or_create("m.room.member", user_id, batch)
    depth = event.get("depth")
    meta = EventMeta(room, 0, depth if isinstance(depth, int) else 0, 0, 0, sk, OUTLIER | STATE)
    encoded = canonical_json.encode_trusted(event) if rv.strict_canonical_json else canonical_json.encode_lenient(event)
    if db.events.get_meta(short) is None:
        db.events.put(short, encoded, meta, batch, parsed=event)
    previous = db.rooms.user_room(user_id, room)
    position = batch.next_count()  # the user's sync shows the change from here
    db.rooms.set_membership(
        room,
        user_id,
        membership,
        short,
        position,
        batch,
        previous=previous.membership if previous is not None else None,
        server=user_id.split(":", 1)[1],
    )
    if stripped is not None:
        db.rooms.set_invite_state(user_id, room, stripped, batch)
    return PersistedEvent(eid, room_id, short, position, event)


def _event_id_or_none(pdu: object, rv: RoomVersion) -> str | None:
    if not isinstance(pdu, dict):
        return None
    try:
        return compute_event_id(pdu, rv)
    except ProtocolError:
        return None


def _room_of_create(pdu: Mapping[str, Any]) -> str | None:
    """The room a create event without `room_id` makes (rooms v12+), None when it makes none."""
    content = pdu.get("content")
    version = content.get("room_version", "1") if isinstance(content, Mapping) else None
    try:
        rv = get_room_version(version) if isinstance(version, str) else None
        return room_id_from_create_event(pdu, rv) if rv is not None and rv.room_id_from_create_event else None
    except (ProtocolError, KeyError, ValueError):
        return None


def _create_event_id(
    candidates: Mapping[str, tuple[dict[str, Any], int]], state_ids: Sequence[str], rv: RoomVersion, room_id: str
) -> str:
    """The room's create event in the joined state: present, of the announced version, and (rooms
    v12) the event the room id was derived from."""
    creates = [eid for eid in state_ids if candidates[eid][0].get("type") == "m.room.create"]
    if len(creates) != 1:
        raise EventRefused("the room state has no single m.room.create event")
    create = candidates[creates[0]][0]
    version = create.get("content", {}).get("room_version", "1")
    if version != rv.identifier:
        raise EventRefused(f"the room is version {version!r}, not {rv.identifier!r}")
    if rv.room_id_from_create_event and "!" + creates[0][1:] != room_id:
        raise EventRefused("the room id does not come from this create event")
    return creates[0]


def _auth_order(candidates: Mapping[str, tuple[dict[str, Any], int]], rv: RoomVersion) -> list[str]:
    """The events in an order where each comes after its auth events (those among them); ties by
    depth then id, so every run stores them alike. Events in an auth cycle are left out."""
    refs = {
        eid: [a for a in reference_ids(pdu.get("auth_events"), rv.event_format) if a in candidates]
        for eid, (pdu, _) in candidates.items()
    }
    waiting = {eid: len(set(r)) for eid, r in refs.items()}
    dependants: dict[str, list[str]] = {}
    for eid, r in refs.items():
        for a in set(r):
            dependants.setdefault(a, []).append(eid)

    def key(eid: str) -> tuple[int, str]:
        depth = candidates[eid][0].get("depth")
        return (depth if isinstance(depth, int) else 0, eid)

    ready = sorted((eid for eid, n in waiting.items() if n == 0), key=key, reverse=True)
    order: list[str] = []
    while ready:
        eid = ready.pop()
        order.append(eid)
        freed = []
        for d in dependants.get(eid, ()):
            waiting[d] -= 1
            if waiting[d] == 0:
                freed.append(d)
        if freed:
            ready = sorted([*ready, *freed], key=key, reverse=True)
    return order


def _already_stored(pipe: EventPipeline, eid: str, room_id: str, *, outliers_count: bool) -> PersistedEvent | None:
    """The event if it is stored already; an outlier counts only when an outlier is asked for (an
    event received for the timeline that is stored as an outlier is accepted again, with its state)."""
    short = pipe.db.ids.event(eid)
    meta = pipe.db.events.get_meta(short) if short is not None else None
    if short is None or meta is None or (meta.outlier and not outliers_count):
        return None
    if pipe.db.ids.room(room_id) != meta.room:
        # rooms v1-v2: the sender chooses event ids; one already used elsewhere is refused
        raise EventRefused(f"event {eid} already exists in another room")
    event = pipe.db.events.get_json(short) or {}
    return PersistedEvent(
        eid, room_id, short, meta.stream, event, pipe.db.events.rejection_reason(short), meta.soft_failed
    )


async def _check_signatures(pdu: Mapping[str, Any], rv: RoomVersion, keys: KeyLookup) -> None:
    try:
        signers = required_signers(pdu, rv)
    except ProtocolError as e:
        raise EventRefused(str(e)) from None
    signatures = pdu.get("signatures")
    for server in sorted(signers):
        server_sigs = signatures.get(server) if isinstance(signatures, Mapping) else None
        key_ids = sorted(k for k in server_sigs if isinstance(k, str)) if isinstance(server_sigs, Mapping) else []
        if not key_ids:
            raise EventRefused(f"PDU is not signed by {server}")
        ts = pdu.get("origin_server_ts")
        valid_at = ts if rv.enforce_key_validity and isinstance(ts, int) else None
        verify_keys = await keys(server, key_ids, valid_at)
        try:
            verify_event_signature(pdu, rv, server, verify_keys)
        except SignatureError as e:
            raise EventRefused(str(e)) from None


async def _accept_remote(
    pipe: EventPipeline,
    ctx: RoomContext,
    batch: Batch,
    pdu: dict[str, Any],
    eid: str,
    flags: int,
    *,
    outlier: bool = False,
    supplied_state: list[str] | None = None,
    prev_states: list[list[str]] | None = None,
    check_current: bool = True,
    backfill_order: int | None = None,
) -> PersistedEvent:
    """Steps 4-6 and the write. With `supplied_state` (event ids) the state before the event is
    that one; with `prev_states`, the resolution of those and of the states after the prev events
    known here. Either way prev events that are unknown or outliers are allowed (they are not
    extremities)."""
    rv = ctx.rv
    fmt = rv.event_format
    auth_ids = list(reference_ids(pdu.get("auth_events"), fmt))
    prev_ids = [] if outlier else list(reference_ids(pdu.get("prev_events"), fmt))
    given = supplied_state
    if prev_states is not None:
        given = [e for state in prev_states for e in state]
    if given is not None:
        missing = list(dict.fromkeys(a for a in auth_ids + given if pipe.stored_short(ctx, a) is None))
    else:
        missing = [a for a in auth_ids + prev_ids if pipe.stored_short(ctx, a) is None]
    if missing:
        raise MissingEventsError(missing)
    if given is not None:
        known = (pipe.stored_short(ctx, p) for p in prev_ids)
        prevs = [p for p in known if p is not None and not pipe.meta(ctx, p).outlier]
    else:
        prevs = [pipe.known_short(ctx, p) for p in prev_ids]
    if any(pipe.meta(ctx, p).room != ctx.room_short for p in prevs):
        # the state after an event of another room means nothing here
        raise EventRefused("a prev event belongs to another room")
    # step 5 needs the state before the event: after an outlier it is unknown here, never empty
    # (checking against an empty state would reject the event for good)
    stateless = [pipe.event_id_of(ctx, p) for p in prevs if pipe.meta(ctx, p).outlier]
    if stateless:
        raise MissingStateError(stateless)
    rejection: str | None = None
    if pdu.get("type") == "m.room.create" and eid != ctx.info.get("create_event_id"):
        rejection = "the room already has its m.room.create event"  # spec: a room has one create event
    # step 4: against its own auth events. The list itself first (spec: auth rules 2.1-2.5, 3.x in
    # v12: no duplicates, nothing unselected, nothing rejected, the create event, the same room),
    # taken as sent: duplicates must stay visible.
    auth_events: list[Mapping[str, Any]] = []
    rejected_auth: set[int] = set()
    for a in _reference_list(pdu.get("auth_events"), fmt):
        short = pipe.stored_short(ctx, a)
        assert short is not None
        ev = pipe.event(ctx, short)
        auth_events.append(ev)
        if pipe.meta(ctx, short).rejected:
            rejected_auth.add(id(ev))
    try:
        check_auth_events_field(pdu, auth_events, rv, is_rejected=lambda e: id(e) in rejected_auth)
    except AuthError as e:
        rejection = rejection or f"auth rule {e.rule}: {e.reason}"
    auth_map = auth_events_map(auth_events)
    create_id = ctx.info.get("create_event_id")
    if rv.room_id_from_create_event and isinstance(create_id, str):
        create_short = pipe.stored_short(ctx, create_id)
        if create_short is not None:
            auth_map[("m.room.create", "")] = pipe.event(ctx, create_short)
    if rejection is None:
        rejection = _auth_failure(pdu, auth_map, rv, create_id)
    if outlier:  # steps 5 and 6 need the state around the event, which an outlier is kept without
        encoded = canonical_json.encode_trusted(pdu) if rv.strict_canonical_json else canonical_json.encode_lenient(pdu)
        return pipe.write_event(ctx, batch, pdu, eid, encoded, [], 0, flags=flags, rejection=rejection, outlier=True)
    # step 5: against the state before the event
    if supplied_state is not None:
        state_before = await _supplied_snapshot(pipe, ctx, batch, supplied_state)
    elif prev_states is not None:
        snapshots = [await _supplied_snapshot(pipe, ctx, batch, state) for state in prev_states]
        snapshots += [pipe.meta(ctx, p).state_after for p in prevs]
        state_before = await pipe.resolve_ahead(ctx, snapshots, batch) if snapshots else 0
    else:
        state_before = (
            await pipe.resolve_ahead(ctx, [pipe.meta(ctx, p).state_after for p in prevs], batch) if prevs else 0
        )
    if rejection is None:
        before_map = {k: pipe.event(ctx, s) for k, s in pipe.auth_selection(ctx, state_before, pdu).items()}
        rejection = _auth_failure(pdu, before_map, rv, create_id)
    # step 6: against the current state: a failure soft-fails the event
    if rejection is None and check_current and state_before != ctx.state:
        current_map = {k: pipe.event(ctx, s) for k, s in pipe.auth_selection(ctx, ctx.state, pdu).items()}
        if _auth_failure(pdu, current_map, rv, create_id) is not None:
            flags |= SOFT_FAILED
    if rejection is None and not flags & SOFT_FAILED and backfill_order is None:
        await _resolve_current_ahead(pipe, ctx, batch, pdu, eid, prevs, state_before)
    # rooms v6+: the format check proved the PDU strict canonical JSON, so no second validating walk
    encoded = canonical_json.encode_trusted(pdu) if rv.strict_canonical_json else canonical_json.encode_lenient(pdu)
    return pipe.write_event(
        ctx,
        batch,
        pdu,
        eid,
        encoded,
        prevs,
        state_before,
        flags=flags,
        rejection=rejection,
        backfill_order=backfill_order,
    )


async def _resolve_current_ahead(
    pipe: EventPipeline,
    ctx: RoomContext,
    batch: Batch,
    pdu: dict[str, Any],
    eid: str,
    prevs: list[int],
    state_before: int,
) -> None:
    """A timeline event that leaves other forward extremities beside it (the room is forked): the
    room's current state after it is the resolution of the states after all of them. Resolved here,
    where it may leave the event loop, for `write_event` to find (it asks for the same snapshots:
    the event's own state after is stored alike, and found again, within the batch)."""
    taken = set(prevs)
    others = [e for e in ctx.extremities if e not in taken]
    if not others:
        return
    state_after = state_before
    state_key = pdu.get("state_key")
    if isinstance(state_key, str):
        db = pipe.db
        short = db.ids.event_or_create(eid, batch)
        sk = db.ids.state_key_or_create(pdu["type"], state_key, batch)
        state_after = db.snapshots.save_changes(state_before or None, {sk: short}, batch=batch)
    snapshots = [pipe.meta(ctx, e).state_after for e in others] + [state_after]
    await pipe.resolve_ahead(ctx, snapshots, batch, {eid: pdu})


async def _supplied_snapshot(pipe: EventPipeline, ctx: RoomContext, batch: Batch, state_ids: list[str]) -> int:
    """A state snapshot of the given stored events: one per (type, state_key), rejected ones left out."""
    state: dict[int, int] = {}
    for i, eid in enumerate(state_ids):
        if i % STATE_YIELD_EVERY == STATE_YIELD_EVERY - 1:
            await asyncio.sleep(0)  # a big room's state: the room lock is held, the batch is ours alone
        short = pipe.known_short(ctx, eid)
        meta = pipe.meta(ctx, short)
        if meta.room != ctx.room_short:
            raise EventRefused(f"state event {eid} belongs to another room")
        event = pipe.event(ctx, short)
        state_key = event.get("state_key")
        if not isinstance(state_key, str):
            raise EventRefused(f"{eid} in the state is not a state event")
        if meta.rejected:
            continue
        sk = pipe.db.ids.state_key_or_create(event["type"], state_key, batch)
        if state.get(sk, short) != short:
            raise EventRefused(f"the state holds two events for ({event['type']}, {state_key})")
        state[sk] = short
    return pipe.db.snapshots.save_state(state, near=ctx.state or None, batch=batch)


def _auth_failure(
    event: Mapping[str, Any], auth_map: Mapping[tuple[str, str], Mapping[str, Any]], rv: RoomVersion, create_id: Any
) -> str | None:
    try:
        check_auth(event, auth_map, rv, create_event_id=create_id if isinstance(create_id, str) else None)
    except AuthError as e:
        return f"auth rule {e.rule}: {e.reason}"
    return None


def _reference_list(references: object, event_format: EventFormat) -> list[str]:
    """The event ids of a prev_events / auth_events list as sent, duplicates kept (the format is checked)."""
    if not isinstance(references, list):
        return []
    if event_format is EventFormat.V1:
        return [ref[0] for ref in references if isinstance(ref, list) and ref and isinstance(ref[0], str)]
    return [ref for ref in references if isinstance(ref, str)]
