"""Events from other servers: the receiving half of the one event pipeline.

spec: server-server-api "Checks performed on receipt of a PDU": format, signatures, content hash,
then the auth rules against the event's own auth events (reject), the state before it (reject) and
the room's current state (soft-fail). The writing is `EventPipeline.write_event`, shared with
local events.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError
from homeserver.protocol import canonical_json
from homeserver.protocol.auth_rules import auth_events_map, check_auth, check_auth_events_field
from homeserver.protocol.errors import AuthError, EventFormatError, HashMismatch, ProtocolError, SignatureError
from homeserver.protocol.event_format import check_pdu_format
from homeserver.protocol.event_ids import event_id as compute_event_id
from homeserver.protocol.event_signing import required_signers, verify_event_signature
from homeserver.protocol.hashes import check_content_hash
from homeserver.protocol.redaction import redact
from homeserver.protocol.room_versions import EventFormat, RoomVersion
from homeserver.rooms.pipeline import (
    EventRefused,
    KeyLookup,
    MissingEventsError,
    MissingStateError,
    PersistedEvent,
    RoomContext,
)
from homeserver.state.event_source import reference_ids
from storage.engine import Batch
from storage.events import REDACTED, SOFT_FAILED

if TYPE_CHECKING:
    from homeserver.rooms.pipeline import EventPipeline


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
    room_id = pdu.get("room_id")
    if not isinstance(room_id, str):
        raise EventRefused("PDU has no room_id")
    try:
        ctx = pipe.load_context(room_id)
    except MatrixError:
        raise EventRefused(f"PDU for a room this server is not in: {room_id}") from None
    rv = ctx.rv
    try:
        check_pdu_format(pdu, rv)  # step 1
    except EventFormatError as e:
        raise EventRefused(str(e)) from None
    eid = compute_event_id(pdu, rv)
    existing = _already_stored(pipe, eid, room_id, outliers_count=outlier)
    if existing is not None:
        return existing
    await _check_signatures(pdu, rv, keys)  # step 2
    flags = 0
    try:
        check_content_hash(pdu, rv)  # step 3
    except HashMismatch:
        pdu = redact(pdu, rv)
        flags |= REDACTED
    async with pipe.room_lock(room_id):
        ctx = pipe.load_context(room_id)
        existing = _already_stored(pipe, eid, room_id, outliers_count=outlier)
        if existing is not None:
            return existing
        batch = pipe.db.store.batch()
        with batch:
            persisted = _accept_remote(pipe, ctx, batch, pdu, eid, flags, outlier=outlier)
            await batch.commit()
        if not outlier:  # an outlier changes nothing anyone can see
            pipe.notify(ctx)
        return persisted


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
        verify_keys = await keys(server, key_ids)
        try:
            verify_event_signature(pdu, rv, server, verify_keys)
        except SignatureError as e:
            raise EventRefused(str(e)) from None


def _accept_remote(
    pipe: EventPipeline,
    ctx: RoomContext,
    batch: Batch,
    pdu: dict[str, Any],
    eid: str,
    flags: int,
    *,
    outlier: bool = False,
) -> PersistedEvent:
    rv = ctx.rv
    fmt = rv.event_format
    auth_ids = list(reference_ids(pdu.get("auth_events"), fmt))
    prev_ids = [] if outlier else list(reference_ids(pdu.get("prev_events"), fmt))
    missing = [a for a in auth_ids + prev_ids if pipe._stored_short(ctx, a) is None]
    if missing:
        raise MissingEventsError(missing)
    prevs = [pipe._known_short(ctx, p) for p in prev_ids]
    if any(pipe._meta(ctx, p).room != ctx.room_short for p in prevs):
        # the state after an event of another room means nothing here
        raise EventRefused("a prev event belongs to another room")
    # step 5 needs the state before the event: after an outlier it is unknown here, never empty
    # (checking against an empty state would reject the event for good)
    stateless = [pipe._event_id_of(ctx, p) for p in prevs if pipe._meta(ctx, p).outlier]
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
        short = pipe._stored_short(ctx, a)
        assert short is not None
        ev = pipe._event(ctx, short)
        auth_events.append(ev)
        if pipe._meta(ctx, short).rejected:
            rejected_auth.add(id(ev))
    try:
        check_auth_events_field(pdu, auth_events, rv, is_rejected=lambda e: id(e) in rejected_auth)
    except AuthError as e:
        rejection = rejection or f"auth rule {e.rule}: {e.reason}"
    auth_map = auth_events_map(auth_events)
    create_id = ctx.info.get("create_event_id")
    if rv.room_id_from_create_event and isinstance(create_id, str):
        create_short = pipe._stored_short(ctx, create_id)
        if create_short is not None:
            auth_map[("m.room.create", "")] = pipe._event(ctx, create_short)
    if rejection is None:
        rejection = _auth_failure(pdu, auth_map, rv, create_id)
    if outlier:  # steps 5 and 6 need the state around the event, which an outlier is kept without
        encoded = canonical_json.encode_trusted(pdu) if rv.strict_canonical_json else canonical_json.encode_lenient(pdu)
        return pipe.write_event(ctx, batch, pdu, eid, encoded, [], 0, flags=flags, rejection=rejection, outlier=True)
    # step 5: against the state before the event
    state_before = pipe._state_after_prevs(ctx, prevs, batch) if prevs else 0
    if rejection is None:
        before_map = {k: pipe._event(ctx, s) for k, s in pipe._auth_selection(ctx, state_before, pdu).items()}
        rejection = _auth_failure(pdu, before_map, rv, create_id)
    # step 6: against the current state: a failure soft-fails the event
    if rejection is None and state_before != ctx.state:
        current_map = {k: pipe._event(ctx, s) for k, s in pipe._auth_selection(ctx, ctx.state, pdu).items()}
        if _auth_failure(pdu, current_map, rv, create_id) is not None:
            flags |= SOFT_FAILED
    # rooms v6+: the format check proved the PDU strict canonical JSON, so no second validating walk
    encoded = canonical_json.encode_trusted(pdu) if rv.strict_canonical_json else canonical_json.encode_lenient(pdu)
    return pipe.write_event(ctx, batch, pdu, eid, encoded, prevs, state_before, flags=flags, rejection=rejection)


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
