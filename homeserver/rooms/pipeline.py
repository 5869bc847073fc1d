"""The one event pipeline (DESIGN.md "One event pipeline").

Every event, built here or received from another server, goes through the same steps:
format, signatures and content hash (remote), the state before it, authorisation three ways
(its auth events: reject; the state before it: reject; the room's current state: soft-fail),
then ONE batch that writes the event, its short ids, state snapshots, timeline position,
forward extremities, current state and membership indexes; then waiting readers are notified.

A local message on a linear timeline costs one canonical encoding and hash for the content hash,
one for the signature, one for the event id, and one batch write: no state resolution.
The checks on events from other servers are in `homeserver.rooms.receiving`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import nacl.signing

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.locks import KeyedLock, KeyedLocks
from homeserver.protocol import canonical_json, unpadded_base64
from homeserver.protocol.auth_rules import auth_types_for_event, check_auth
from homeserver.protocol.errors import AuthError, EventFormatError, ProtocolError
from homeserver.protocol.event_format import check_pdu_format
from homeserver.protocol.event_ids import new_v1_event_id
from homeserver.protocol.hashes import reference_hash
from homeserver.protocol.redaction import redact
from homeserver.protocol.room_versions import EventFormat, RoomVersion, get_room_version
from homeserver.protocol.signing import sign_json
from homeserver.rooms.signing import SignedEvent, hash_and_sign
from homeserver.rooms.state_access import conflicted_keys, load_states, resolve_loaded, resolve_snapshots, thread_reads
from homeserver.rooms.tokens import live_order
from homeserver.state.event_source import reference_ids
from storage.cache import LruCache
from storage.database import Database
from storage.engine import Batch
from storage.events import BACKFILLED, OUTLIER, REJECTED, SOFT_FAILED, STATE, EventMeta
from storage.rooms import MEMBERSHIPS

# spec: PDU schemas — at most 20 prev_events
MAX_PREV_EVENTS = 20
MAX_DEPTH = 2**53 - 1
MAX_KEY_BYTES = 255
MAX_EVENT_BYTES = 65536
# the first timeline events of a room looked at for the events /backfill starts from
HISTORY_EDGE_SCAN = 20
# A resolution of states that disagree on this many keys or more leaves the event loop (`resolve_ahead`):
# measured with bench/dag_gen.py forks, ~0.1 ms a conflicted key, 32 keys ≈ 1-4 ms inline (a thread
# hand-off costs ~0.1 ms); 500 keys (a 10,000-event fork) take ~200 ms.
RESOLVE_IN_THREAD_AT = 32

# the auth events of an event by (type, state_key), and its `auth_events` as written in the event
AuthSelection = tuple[dict[tuple[str, str], dict[str, Any]], list[Any]]
# (server, key ids, the time the keys must be valid at or None) -> the keys known and valid then.
# spec: server-server-api "Validating hashes and signatures on received events": unknown and
# expired keys are skipped; rooms v5+ need valid_until_ts >= the event's origin_server_ts.
KeyLookup = Callable[[str, list[str], int | None], Awaitable[Mapping[str, nacl.signing.VerifyKey]]]


class MissingEventsError(Exception):
    """The event refers to events this server does not have; federation fetches them and retries."""

    def __init__(self, event_ids: list[str]) -> None:
        super().__init__(f"missing events: {', '.join(event_ids[:5])}")
        self.event_ids = event_ids


class MissingStateError(Exception):
    """The state before the event is unknown here: a prev event is an outlier, stored without the
    state around it. Federation asks the sender for the state at the event (`/state_ids`) and
    retries with it; the event is never checked against an empty state instead."""

    def __init__(self, event_ids: list[str]) -> None:
        super().__init__(f"no state known after: {', '.join(event_ids[:5])}")
        self.event_ids = event_ids


class EventRefused(ProtocolError):
    """A received PDU is dropped: bad format, bad signature, or not for a room we know."""


class ServerIdentity:
    __slots__ = ("key_id", "server_name", "signing_key")

    server_name: Final[str]
    key_id: Final[str]
    signing_key: Final[nacl.signing.SigningKey]

    def __init__(self, server_name: str, key_id: str, signing_key: nacl.signing.SigningKey) -> None:
        self.server_name = server_name
        self.key_id = key_id
        self.signing_key = signing_key


class PersistedEvent:
    __slots__ = ("event", "event_id", "fresh", "rejected", "room_id", "short", "soft_failed", "state_changed", "stream")

    event_id: str
    room_id: str
    short: int
    stream: int  # position on the global stream; 0 when the event is not in the timeline
    event: dict[str, Any]  # the stored PDU, shared with the event cache: copy it before changing it
    rejected: str | None
    soft_failed: bool
    state_changed: dict[tuple[str, str], str]  # current-state delta
    # built by this server just now on top of the room's extremities: its id names nothing stored
    # before, and nothing (a redaction received earlier, say) can refer to it yet
    fresh: bool

    def __init__(
        self,
        event_id: str,
        room_id: str,
        short: int,
        stream: int,
        event: dict[str, Any],
        rejected: str | None = None,
        soft_failed: bool = False,
        state_changed: dict[tuple[str, str], str] | None = None,
        fresh: bool = False,
    ) -> None:
        self.event_id = event_id
        self.room_id = room_id
        self.short = short
        self.stream = stream
        self.event = event
        self.rejected = rejected
        self.soft_failed = soft_failed
        self.state_changed = {} if state_changed is None else state_changed
        self.fresh = fresh


class RoomContext:
    """What the pipeline knows about a room while it writes; kept in step within one batch."""

    __slots__ = (
        "extremities",
        "info",
        "pending_chains",
        "pending_events",
        "pending_ids",
        "pending_meta",
        "resolutions",
        "room_id",
        "room_short",
        "rv",
        "state",
        "written",
    )

    rv: RoomVersion
    room_id: str
    room_short: int
    extremities: list[int]
    state: int  # snapshot of the current state
    info: dict[str, Any]
    # events written into the current batch, readable before it commits
    pending_events: dict[int, dict[str, Any]]
    pending_meta: dict[int, EventMeta]
    pending_ids: dict[int, str]
    pending_chains: dict[int, tuple[int, ...]]
    # sorted state snapshots -> (the batch, the snapshot of their resolution), made ahead (maybe off
    # the event loop) by `EventPipeline.resolve_ahead` for `resolved` to find in the same batch
    resolutions: dict[tuple[int, ...], tuple[Batch, int]]
    written: list[PersistedEvent]

    def __init__(
        self,
        rv: RoomVersion,
        room_id: str,
        room_short: int,
        extremities: list[int],
        state: int,
        info: dict[str, Any],
        pending_events: dict[int, dict[str, Any]] | None = None,
        pending_meta: dict[int, EventMeta] | None = None,
        pending_ids: dict[int, str] | None = None,
        pending_chains: dict[int, tuple[int, ...]] | None = None,
        written: list[PersistedEvent] | None = None,
    ) -> None:
        self.rv = rv
        self.room_id = room_id
        self.room_short = room_short
        self.extremities = extremities
        self.state = state
        self.info = info
        self.pending_events = {} if pending_events is None else pending_events
        self.pending_meta = {} if pending_meta is None else pending_meta
        self.pending_ids = {} if pending_ids is None else pending_ids
        self.pending_chains = {} if pending_chains is None else pending_chains
        self.resolutions = {}
        self.written = [] if written is None else written

    def clear_pending(self) -> None:
        self.pending_events.clear()
        self.pending_meta.clear()
        self.pending_ids.clear()
        self.pending_chains.clear()
        self.resolutions.clear()
        self.written.clear()


class EventPipeline:
    def __init__(
        self,
        db: Database,
        identity: ServerIdentity,
        *,
        clock: Callable[[], float] = time.time,
        on_persisted: Callable[[PersistedEvent], None] | None = None,
    ) -> None:
        self.db = db
        self.identity = identity
        self.clock = clock
        self.on_persisted = on_persisted
        self._locks: KeyedLocks[str] = KeyedLocks()  # a room's lock lives only while it is in use
        # state snapshots -> their resolution
        self._resolved: LruCache[tuple[int, ...], int] = db.caches.lru("state.resolutions", "state.resolutions")
        # from this many conflicted state keys `resolve_ahead` resolves in a worker thread
        self.resolve_in_thread_at = RESOLVE_IN_THREAD_AT
        # (committed state snapshot, sender) -> the auth events of an event that is neither a membership
        # nor a create event: the same for every such event (create, power levels, the sender's
        # membership), and a snapshot never changes, so consecutive messages look them up once
        self._auth_selections: LruCache[tuple[int, str], AuthSelection] = db.caches.lru(
            "rooms.auth_selections", "rooms.auth_selections"
        )
        # Called by write_event with the batch, after the event's own writes: services add their index
        # writes (relations, redactions, search...) so they commit atomically with the event.
        self.write_hooks: list[Callable[[Batch, RoomContext, PersistedEvent], None]] = []
        # Called before a local event is built: policies that refuse some senders (e.g. suspended
        # accounts) raise a MatrixError here. Arguments: sender, type, content, state_key, redacts.
        self.local_event_checks: list[Callable[[str, str, dict[str, Any], str | None, str | None], None]] = []

    def add_write_hook(self, hook: Callable[[Batch, RoomContext, PersistedEvent], None]) -> None:
        """At wiring time: `hook` adds its writes to every event's own batch (see `write_hooks`)."""
        self.write_hooks.append(hook)

    def add_local_event_check(self, check: Callable[[str, str, dict[str, Any], str | None, str | None], None]) -> None:
        """At wiring time: `check` may refuse a local event before it is built (see `local_event_checks`)."""
        self.local_event_checks.append(check)

    # -- reading helpers -------------------------------------------------------------------------

    def room_lock(self, room_id: str) -> KeyedLock[str]:
        return self._locks(room_id)

    def load_context(self, room_id: str) -> RoomContext:
        room_short = self.db.ids.room(room_id)
        info = self.db.rooms.info(room_short) if room_short is not None else None
        if room_short is None or info is None:
            raise not_found(f"unknown room {room_id}")
        return RoomContext(
            rv=get_room_version(info["version"]),
            room_id=room_id,
            room_short=room_short,
            extremities=self.db.rooms.extremities(room_short),
            state=int(info["state"]),
            info=dict(info),
        )

    def event(self, ctx: RoomContext, short: int) -> dict[str, Any]:
        ev = ctx.pending_events.get(short)
        if ev is None:
            ev = self.db.events.get_json(short)
            if ev is None:
                raise KeyError(f"event {short} is not stored")
        return ev

    def meta(self, ctx: RoomContext, short: int) -> EventMeta:
        meta = ctx.pending_meta.get(short)
        if meta is None:
            meta = self.db.events.get_meta(short)
            if meta is None:
                raise KeyError(f"event {short} has no metadata")
        return meta

    def stored_pdu(self, short: int) -> dict[str, Any] | None:
        """A committed event as it goes over federation (what is stored is the signed PDU)."""
        return self.db.events.get_json(short)

    def room_of(self, short: int) -> int | None:
        meta = self.db.events.get_meta(short)
        return meta.room if meta is not None else None

    def state_short(self, snapshot: int, event_type: str, state_key: str) -> int | None:
        sk = self.db.ids.state_key(event_type, state_key)
        if sk is None or not snapshot:
            return None
        return self.db.snapshots.get(snapshot, sk)

    def auth_selection(self, ctx: RoomContext, snapshot: int, event: Mapping[str, Any]) -> dict[tuple[str, str], int]:
        """The auth events `event` would have, from `snapshot`, as short ids (plus the v12 create event)."""
        wanted = auth_types_for_event(event, ctx.rv)
        if ctx.rv.room_id_from_create_event:
            wanted = [("m.room.create", ""), *wanted]
        out: dict[tuple[str, str], int] = {}
        for key in wanted:
            short = self.state_short(snapshot, *key)
            if short is not None:
                out[key] = short
        return out

    def known_short(self, ctx: RoomContext, event_id: str) -> int:
        short = self.stored_short(ctx, event_id)
        if short is None:
            raise MissingEventsError([event_id])
        return short

    def stored_short(self, ctx: RoomContext, event_id: str) -> int | None:
        """The short id of an event written (or being written in this batch), else None."""
        short = self.db.ids.event(event_id)
        if short is None:
            return None
        if short in ctx.pending_meta or self.db.events.get_meta(short) is not None:
            return short
        return None

    def event_id_of(self, ctx: RoomContext, short: int) -> str:
        return ctx.pending_ids.get(short) or self.db.ids.event_id(short)

    def _reference(self, ctx: RoomContext, short: int) -> Any:
        """How an event is referenced from prev_events/auth_events in this room version."""
        eid = self.event_id_of(ctx, short)
        if ctx.rv.event_format is EventFormat.V1:
            ref_hash = unpadded_base64.encode(reference_hash(self.event(ctx, short), ctx.rv))
            return [eid, {"sha256": ref_hash}]
        return eid

    # -- local events ----------------------------------------------------------------------------

    async def send(
        self,
        room_id: str,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        redacts: str | None = None,
    ) -> PersistedEvent:
        """Build, authorise and persist a local event. Raises `MatrixError` (403) if not allowed."""
        async with self.room_lock(room_id):
            ctx = self.load_context(room_id)
            batch = self.db.store.batch()
            with batch:
                persisted = self.build_local(ctx, batch, sender, event_type, content, state_key, redacts=redacts)
                await batch.commit()
            self.notify(ctx)
            return persisted

    def build_local(
        self,
        ctx: RoomContext,
        batch: Batch,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None = None,
        *,
        redacts: str | None = None,
    ) -> PersistedEvent:
        """Build and authorise a local event on top of the room's extremities, and add it to `batch`."""
        event, signed, prevs, state_before = self._authorised_local(
            ctx, batch, sender, event_type, content, state_key, redacts
        )
        # An event with prev_events is new: it references the room's current extremities, which no
        # other event built here has referenced (each one built becomes an extremity itself).
        return self.write_event(
            ctx, batch, event, signed.event_id, signed.encoded, prevs, state_before, flags=0, fresh=bool(prevs)
        )

    def prepare_local(
        self, room_id: str, sender: str, event_type: str, content: dict[str, Any], state_key: str | None = None
    ) -> tuple[dict[str, Any], str, RoomVersion]:
        """A local event built, signed and authorised as `send` would, but not written: for an event
        another server must sign first (an invite of its user), then accepted with `receive`.
        Returns the event, its id and the room version."""
        ctx = self.load_context(room_id)
        batch = self.db.store.batch()
        with batch:  # a state resolution made for it is not kept: the batch is never committed
            event, signed, _, _ = self._authorised_local(ctx, batch, sender, event_type, content, state_key, None)
        return event, signed.event_id, ctx.rv

    def _authorised_local(
        self,
        ctx: RoomContext,
        batch: Batch,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None,
        redacts: str | None,
    ) -> tuple[dict[str, Any], SignedEvent, list[int], int]:
        for check in self.local_event_checks:
            check(sender, event_type, content, state_key, redacts)
        rv = ctx.rv
        event, prevs, state_before, auth_map = self._skeleton(
            ctx, batch, sender, event_type, content, state_key, redacts, self.identity.server_name
        )
        # Signed before the auth rules run: rule 4.2.1 (rooms v8+) needs our signature on a restricted
        # join that one of our users authorises.
        identity = self.identity
        signed = hash_and_sign(event, rv, identity.server_name, identity.key_id, identity.signing_key)
        if len(signed.encoded) > MAX_EVENT_BYTES:
            # spec: client-server-api "Size limits"
            raise MatrixError(413, "M_TOO_LARGE", f"event is larger than {MAX_EVENT_BYTES} bytes")
        try:
            check_auth(event, auth_map, rv, create_event_id=ctx.info.get("create_event_id"))
        except AuthError as e:
            raise forbidden(f"not allowed: {e.reason} (auth rule {e.rule})") from None
        return event, signed, prevs, state_before

    def _skeleton(
        self,
        ctx: RoomContext,
        batch: Batch,
        sender: str,
        event_type: str,
        content: dict[str, Any],
        state_key: str | None,
        redacts: str | None,
        origin: str,
    ) -> tuple[dict[str, Any], list[int], int, Mapping[tuple[str, str], Mapping[str, Any]]]:
        """An event on top of the room's extremities, before hashes and signatures: the event, its
        prev events, the state before it and its auth events by (type, state_key)."""
        rv = ctx.rv
        prevs = self._choose_prev_events(ctx)
        state_before = ctx.state
        if len(prevs) != len(ctx.extremities):
            state_before = self.state_after_prevs(ctx, prevs, batch)
        depth = min(max((self.meta(ctx, p).depth for p in prevs), default=0) + 1, MAX_DEPTH)
        event: dict[str, Any] = {
            "room_id": ctx.room_id,
            "sender": sender,
            "type": event_type,
            "content": content,
            "origin_server_ts": int(self.clock() * 1000),
            "depth": depth,
            "prev_events": [self._reference(ctx, p) for p in prevs],
        }
        if state_key is not None:
            event["state_key"] = state_key
        if redacts is not None:
            if rv.redacts_in_content:
                event["content"] = {**content, "redacts": redacts}
            else:
                event["redacts"] = redacts
        if rv.event_format is EventFormat.V1:
            event["event_id"] = new_v1_event_id(origin)
            event["origin"] = origin
        elif not rv.implicit_room_creator:
            event["origin"] = origin
        auth_map, refs = self._local_auth_events(ctx, state_before, event)
        event["auth_events"] = list(refs)  # the cached list stays the cache's
        try:
            canonical_json.check(event["content"])
        except ProtocolError as e:
            raise MatrixError(400, "M_BAD_JSON", f"content is not valid canonical JSON: {e}") from None
        # spec: client-server-api "Size limits" — type and state_key at most 255 bytes
        if len(event_type.encode()) > MAX_KEY_BYTES or (
            state_key is not None and len(state_key.encode()) > MAX_KEY_BYTES
        ):
            raise MatrixError(413, "M_TOO_LARGE", f"type and state_key may not exceed {MAX_KEY_BYTES} bytes")
        return event, prevs, state_before, auth_map

    def membership_template(
        self, room_id: str, user_id: str, membership: str, content: Mapping[str, Any] | None = None
    ) -> tuple[dict[str, Any], RoomVersion]:
        """What `make_join`, `make_leave` and `make_knock` answer: a membership event of a user of
        another server on top of this room, not hashed or signed (its server does that), and
        allowed by the room's current state. 403 `M_FORBIDDEN` when it would not be. `content` adds
        to the membership (the `join_authorised_via_users_server` of a restricted join).
        spec: server-server-api "Joining rooms", "Leaving rooms", "Knocking upon a room".
        """
        ctx = self.load_context(room_id)
        origin = user_id.split(":", 1)[1] if ":" in user_id else ""
        batch = self.db.store.batch()
        with batch:  # a resolution computed here is not kept: the batch is never committed
            event, _, _, auth_map = self._skeleton(
                ctx,
                batch,
                user_id,
                "m.room.member",
                {**(content or {}), "membership": membership},
                user_id,
                None,
                origin,
            )
        try:
            check_auth(event, auth_map, ctx.rv, create_event_id=ctx.info.get("create_event_id"))
        except AuthError as e:
            if not _needs_a_signature(e):
                raise forbidden(f"not allowed: {e.reason} (auth rule {e.rule})") from None
        return event, ctx.rv

    def countersign(self, event: dict[str, Any], rv: RoomVersion) -> dict[str, Any]:
        """Another server's event with this server's signature added (its hashes and other
        signatures untouched, so its id stays): a restricted join one of our users authorises.
        spec: server-server-api "Joining rooms" — the resident adds its signature; rooms/v8 auth
        rule 4.2.1."""
        identity = self.identity
        redacted = redact(event, rv)
        sign_json(
            redacted, identity.server_name, identity.key_id, identity.signing_key, strict=rv.strict_canonical_json
        )
        return {**event, "signatures": redacted["signatures"]}

    def sign_membership_template(
        self, template: Any, rv: RoomVersion, room_id: str, user_id: str, membership: str
    ) -> tuple[dict[str, Any], str]:
        """Our membership event from the template a resident server made (`make_join` and friends):
        checked to be what we asked for, given our origin and time, hashed and signed. The template
        is another server's input: anything else in it must pass the room version's format checks.
        Returns the event and its id; `EventRefused` when the template is not acceptable."""
        if not isinstance(template, dict):
            raise EventRefused("the membership template is not an object")
        content = template.get("content")
        if (
            template.get("type") != "m.room.member"
            or template.get("room_id") != room_id
            or template.get("sender") != user_id
            or template.get("state_key") != user_id
            or not isinstance(content, dict)
            or content.get("membership") != membership
        ):
            raise EventRefused(f"the template is not a {membership} of {user_id} in {room_id}")
        event = {k: v for k, v in template.items() if k not in ("hashes", "signatures", "unsigned")}
        event["origin_server_ts"] = int(self.clock() * 1000)
        if rv.event_format is EventFormat.V1:
            event["event_id"] = new_v1_event_id(self.identity.server_name)
        if "origin" in event or not rv.implicit_room_creator:
            event["origin"] = self.identity.server_name
        try:
            canonical_json.check(event)
        except ProtocolError as e:
            raise EventRefused(f"the template is not canonical JSON: {e}") from None
        identity = self.identity
        signed = hash_and_sign(event, rv, identity.server_name, identity.key_id, identity.signing_key)
        try:
            check_pdu_format(event, rv)
        except EventFormatError as e:
            raise EventRefused(f"the template does not make a valid event: {e}") from None
        return event, signed.event_id

    def _local_auth_events(self, ctx: RoomContext, state_before: int, event: dict[str, Any]) -> AuthSelection:
        """The auth events of a local event: by (type, state_key) for the auth rules, and as
        referenced in its `auth_events`."""
        # Cached only for a snapshot that is committed (the one loaded, nothing written in this batch
        # yet): an aborted batch's snapshot id may be given again to other state.
        key = None
        ordinary = event["type"] not in ("m.room.member", "m.room.create")  # spec: "Auth events selection"
        if ordinary and state_before == ctx.state and not ctx.pending_events:
            key = (state_before, event["sender"])
            cached = self._auth_selections.get(key)
            if cached is not None:
                return cached
        selection = self.auth_selection(ctx, state_before, event)
        auth_map = {k: self.event(ctx, s) for k, s in selection.items()}
        refs = [self._reference(ctx, selection[k]) for k in auth_types_for_event(event, ctx.rv) if k in selection]
        found = (auth_map, refs)
        if key is not None:
            self._auth_selections.put(key, found)
        return found

    def _choose_prev_events(self, ctx: RoomContext) -> list[int]:
        ext = ctx.extremities
        if len(ext) <= MAX_PREV_EVENTS:
            return list(ext)
        # the deepest (most recent) ones; the rest stay extremities and are merged later
        return sorted(ext, key=lambda s: self.meta(ctx, s).depth, reverse=True)[:MAX_PREV_EVENTS]

    def state_after_prevs(self, ctx: RoomContext, prevs: Iterable[int], batch: Batch) -> int:
        return self.resolved(ctx, [self.meta(ctx, p).state_after for p in prevs], batch)

    def resolved(self, ctx: RoomContext, snapshots_in: Iterable[int], batch: Batch) -> int:
        """The snapshot of the resolution of several states (the one state when they are equal)."""
        snapshots = tuple(sorted(set(snapshots_in)))
        if len(snapshots) == 1:
            return snapshots[0]
        known = self._known_resolution(ctx, snapshots, batch)
        if known is not None:
            return known
        extra = {self.event_id_of(ctx, s): ev for s, ev in ctx.pending_events.items()}
        resolved = resolve_snapshots(self.db, ctx.rv, snapshots, extra)
        return self._save_resolution(ctx, snapshots, resolved, batch)

    async def resolve_ahead(
        self,
        ctx: RoomContext,
        snapshots_in: Iterable[int],
        batch: Batch,
        extra_events: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        """`resolved`, awaitable: a large resolution (`resolve_in_thread_at` conflicted state keys or
        more) runs in a worker thread, so the event loop serves everyone else meanwhile. The caller
        holds the room lock: nothing it reads changes. The answer is kept for `resolved` to find in
        this batch (an event's write asks again). `extra_events`: events not written yet, by id."""
        snapshots = tuple(sorted(set(snapshots_in)))
        if len(snapshots) == 1:
            return snapshots[0]
        known = self._known_resolution(ctx, snapshots, batch)
        if known is not None:
            return known
        extra: dict[str, Mapping[str, Any]] = {self.event_id_of(ctx, s): ev for s, ev in ctx.pending_events.items()}
        extra.update(extra_events or {})
        states = load_states(self.db, snapshots)
        if conflicted_keys(states) >= self.resolve_in_thread_at:
            loop = asyncio.get_running_loop()
            reads = thread_reads(self.db, loop)
            resolved = await loop.run_in_executor(None, resolve_loaded, reads, ctx.rv, states, extra)
        else:
            resolved = resolve_loaded(self.db, ctx.rv, states, extra)
        sid = self._save_resolution(ctx, snapshots, resolved, batch)
        ctx.resolutions[snapshots] = (batch, sid)
        return sid

    def _known_resolution(self, ctx: RoomContext, snapshots: tuple[int, ...], batch: Batch) -> int | None:
        ahead = ctx.resolutions.get(snapshots)
        if ahead is not None and ahead[0] is batch:
            return ahead[1]
        # While a room is forked, each message on one branch asks for the same resolution again:
        # snapshots and events never change, so the answer is kept (once its batch is written).
        return self._resolved.get(snapshots)

    def _save_resolution(
        self, ctx: RoomContext, snapshots: tuple[int, ...], resolved: Mapping[int, int], batch: Batch
    ) -> int:
        # stored as a diff against the current state, which a resolution usually differs little from
        sid = self.db.snapshots.save_state(resolved, near=ctx.state or snapshots[0], batch=batch)

        def remember() -> None:
            self._resolved.put(snapshots, sid)

        batch.on_commit.append(remember)
        return sid

    # -- writing ---------------------------------------------------------------------------------

    def write_event(
        self,
        ctx: RoomContext,
        batch: Batch,
        event: dict[str, Any],
        eid: str,
        encoded: bytes,
        prevs: list[int],
        state_before: int,
        *,
        flags: int = 0,
        rejection: str | None = None,
        outlier: bool = False,
        fresh: bool = False,
        backfill_order: int | None = None,
    ) -> PersistedEvent:
        """Write one event into `batch`. With `backfill_order` the event is older history placed at
        that timeline order (below every live one): it gets no stream position and moves neither the
        forward extremities nor the current state; its `PersistedEvent.stream` is 0 (nothing new)."""
        db = self.db
        short = db.ids.new_event(eid, batch) if fresh else db.ids.event_or_create(eid, batch)
        is_state = isinstance(event.get("state_key"), str)
        sk = db.ids.state_key_or_create(event["type"], event["state_key"], batch) if is_state else 0
        accepted = rejection is None
        in_timeline = accepted and not outlier and not (flags & SOFT_FAILED)
        backfilled = in_timeline and backfill_order is not None
        stream = batch.next_count() if in_timeline and not backfilled else 0
        if backfilled:
            flags |= BACKFILLED
        if is_state:
            flags |= STATE
        if outlier:
            flags |= OUTLIER
        if rejection is not None:
            flags |= REJECTED
        state_after = state_before
        if is_state and accepted and not outlier:
            state_after = db.snapshots.save_changes(state_before or None, {sk: short}, batch=batch)
        depth = event.get("depth")
        meta = EventMeta(
            ctx.room_short,
            backfill_order if backfilled and backfill_order is not None else stream,  # tokens.order_of
            depth if isinstance(depth, int) else 0,
            state_before,
            state_after,
            sk,
            flags,
        )
        db.events.put(short, encoded, meta, batch, parsed=event, rejection=rejection)
        if is_state:
            auth_ids = list(reference_ids(event.get("auth_events"), ctx.rv.event_format))
            create_id = ctx.info.get("create_event_id")
            # rooms v12: the room id implies the create event as an auth event of every other event;
            # state resolution's auth chains count it (homeserver/state/event_source.py)
            if (
                ctx.rv.room_id_from_create_event
                and isinstance(create_id, str)
                and create_id != eid
                and create_id not in auth_ids
            ):
                auth_ids.append(create_id)
            auth_shorts = [self.known_short(ctx, a) for a in auth_ids]
            chain: set[int] = set(auth_shorts)
            for a in auth_shorts:
                chain.update(ctx.pending_chains.get(a) or db.events.auth_chain(a) or ())
            ctx.pending_chains[short] = db.events.put_auth_chain(short, chain, batch)
        ctx.pending_events[short] = event
        ctx.pending_meta[short] = meta
        ctx.pending_ids[short] = eid
        persisted = PersistedEvent(
            eid, ctx.room_id, short, stream, event, rejection, bool(flags & SOFT_FAILED), fresh=fresh
        )
        if backfilled and backfill_order is not None:
            db.rooms.append_timeline(ctx.room_short, backfill_order, short, batch)
        elif in_timeline:
            db.rooms.append_timeline(ctx.room_short, live_order(stream), short, batch)
            self._advance(ctx, batch, short, meta, prevs, persisted)
        ctx.written.append(persisted)
        for hook in self.write_hooks:
            hook(batch, ctx, persisted)
        return persisted

    def _advance(
        self, ctx: RoomContext, batch: Batch, short: int, meta: EventMeta, prevs: list[int], persisted: PersistedEvent
    ) -> None:
        """Move the forward extremities and the current state past a new timeline event."""
        db = self.db
        prev_set = set(prevs)
        remaining = [e for e in ctx.extremities if e not in prev_set]
        new_ext = [*remaining, short]
        db.rooms.update_extremities(ctx.room_short, [e for e in ctx.extremities if e in prev_set], [short], batch)
        old_state = ctx.state
        new_state = self.state_after_prevs(ctx, new_ext, batch) if remaining else meta.state_after
        ctx.extremities = new_ext
        if new_state != old_state:
            changes, removed = self._state_delta(old_state, new_state, meta)
            db.rooms.set_state(ctx.room_short, changes, removed, batch)
            self._update_memberships(ctx, batch, old_state, changes, removed, meta.stream)
            persisted.state_changed = {db.ids.state_key_of(sk): self.event_id_of(ctx, ev) for sk, ev in changes.items()}
        ctx.state = new_state
        ctx.info["state"] = new_state
        ctx.info["stream"] = meta.stream
        db.rooms.set_info(ctx.room_short, ctx.info, batch)

    def _state_delta(self, old: int, new: int, meta: EventMeta) -> tuple[dict[int, int], list[int]]:
        snaps = self.db.snapshots
        if meta.state_before == old and meta.state_after == new and meta.state_key:
            # the linear case: only the event's own state key changed
            return {meta.state_key: snaps.get(new, meta.state_key) or 0}, []
        before = snaps.load(old) if old else {}
        after = snaps.load(new)
        changes = {k: v for k, v in after.items() if before.get(k) != v}
        removed = [k for k in before if k not in after]
        return changes, removed

    def _update_memberships(
        self, ctx: RoomContext, batch: Batch, old_state: int, changes: dict[int, int], removed: list[int], stream: int
    ) -> None:
        for sk in [*changes, *(k for k in removed if k not in changes)]:
            etype, user_id = self.db.ids.state_key_of(sk)
            if etype != "m.room.member":
                continue
            previous = None
            old_short = self.db.snapshots.get(old_state, sk) if old_state else None
            if old_short is not None:
                previous = _membership(self.event(ctx, old_short))
            elif not old_state:
                # the room's first state here (a join over federation): a membership known from
                # outside the state (an invite received before we were in the room) is replaced
                known = self.db.rooms.user_room(user_id, ctx.room_short)
                previous = known.membership if known is not None else None
            server = user_id.split(":", 1)[1] if ":" in user_id else ""
            ev_short = changes.get(sk)
            membership = _membership(self.event(ctx, ev_short)) if ev_short is not None else None
            if ev_short is None or membership is None:
                # the member event left the state (a state resolution can drop a key), or the new one has
                # no valid membership (which the auth rules refuse): the user has no membership here
                if previous is not None:
                    self.db.rooms.remove_membership(ctx.room_short, user_id, batch, previous=previous, server=server)
                continue
            self.db.rooms.set_membership(
                ctx.room_short, user_id, membership, ev_short, stream, batch, previous=previous, server=server
            )

    def notify_outside(self, persisted: PersistedEvent) -> None:
        """Tell the listeners of an event written outside a room's timeline (an invite to a room
        this server is not in)."""
        if self.on_persisted is not None:
            self.on_persisted(persisted)

    def notify(self, ctx: RoomContext) -> None:
        written = list(ctx.written)
        ctx.clear_pending()
        if self.on_persisted is not None:
            for persisted in written:
                self.on_persisted(persisted)

    # -- remote events ---------------------------------------------------------------------------

    async def receive(self, pdu: dict[str, Any], keys: KeyLookup) -> PersistedEvent:
        """Accept a PDU from another server into a room we are in (see `homeserver.rooms.receiving`)."""
        from homeserver.rooms.receiving import receive  # receiving builds on this module's types

        return await receive(self, pdu, keys)

    async def receive_outlier(self, pdu: dict[str, Any], keys: KeyLookup) -> PersistedEvent:
        """Accept a PDU as an outlier: checked against its own auth events only, kept without a place
        in the timeline or the state (the auth chain and state of a room being joined, events fetched
        to check others)."""
        from homeserver.rooms.receiving import receive

        return await receive(self, pdu, keys, outlier=True)

    async def receive_with_state(
        self, pdu: dict[str, Any], keys: KeyLookup, state_ids: Sequence[str]
    ) -> PersistedEvent:
        """Accept a PDU with the state before it supplied by another server (`/state_ids` at the
        event), for when its prev events are missing here or outliers."""
        from homeserver.rooms.receiving import receive_with_state

        return await receive_with_state(self, pdu, keys, state_ids)

    async def receive_after_gap(
        self, pdu: dict[str, Any], keys: KeyLookup, states_after: Mapping[str, Sequence[str]]
    ) -> PersistedEvent:
        """Accept a PDU whose prev events are missing here, given the state after each of them as
        another server reported it; resolved with the states after its prev events known here."""
        from homeserver.rooms.receiving import receive_after_gap

        return await receive_after_gap(self, pdu, keys, states_after)

    async def receive_backfilled(
        self, pdu: dict[str, Any], keys: KeyLookup, order: int, state_ids: Sequence[str] | None = None
    ) -> PersistedEvent:
        """Accept a PDU fetched with `/backfill` as history at timeline order `order` (see
        `homeserver.rooms.receiving.receive_backfilled`)."""
        from homeserver.rooms.receiving import receive_backfilled

        return await receive_backfilled(self, pdu, keys, order, state_ids)

    def history_start(self, room_id: str) -> tuple[int, list[str]]:
        """Where the history held here begins: the lowest timeline order of the room (LIVE_BASE when
        it has none), and the prev events of its first timeline events that are not in the timeline
        here (what `/backfill` is asked from; empty when the first event is the create event)."""
        ctx = self.load_context(room_id)
        db = self.db
        first = db.rooms.first_backfill_order(ctx.room_short)
        wanted: list[str] = []
        for _, short in itertools.islice(db.rooms.timeline(ctx.room_short), HISTORY_EDGE_SCAN):
            event = self.event(ctx, short)
            for prev in reference_ids(event.get("prev_events"), ctx.rv.event_format):
                prev_short = self.stored_short(ctx, prev)
                meta = self.meta(ctx, prev_short) if prev_short is not None else None
                if (meta is None or meta.outlier) and prev not in wanted:
                    wanted.append(prev)
        return first, wanted

    async def receive_invite(
        self, room_version: str, event: Any, invite_state: Any, keys: KeyLookup
    ) -> tuple[dict[str, Any], PersistedEvent]:
        """An invite of one of our users from another server: checked, counter-signed and kept
        (see `homeserver.rooms.receiving.receive_invite`)."""
        from homeserver.rooms.receiving import receive_invite

        return await receive_invite(self, room_version, event, invite_state, keys)

    async def record_remote_knock(
        self, event: dict[str, Any], rv: RoomVersion, event_id: str, knock_state: list[dict[str, Any]]
    ) -> PersistedEvent:
        """Our user knocked on a room this server is not in, through a resident that accepted it."""
        from homeserver.rooms.receiving import record_remote_knock

        async with self.room_lock(event["room_id"]):
            batch = self.db.store.batch()
            with batch:
                persisted = record_remote_knock(self, batch, rv, event, event_id, knock_state)
                await batch.commit()
        self.notify_outside(persisted)
        return persisted

    async def record_remote_leave(self, event: dict[str, Any], rv: RoomVersion, event_id: str) -> PersistedEvent:
        """Our user left (or refused an invite to) a room this server is not in, through a resident."""
        from homeserver.rooms.receiving import record_remote_leave

        async with self.room_lock(event["room_id"]):
            batch = self.db.store.batch()
            with batch:
                persisted = record_remote_leave(self, batch, rv, event, event_id)
                await batch.commit()
        self.notify_outside(persisted)
        return persisted

    async def receive_join(
        self,
        room_id: str,
        room_version: str,
        join: dict[str, Any],
        state: Sequence[dict[str, Any]],
        auth_chain: Sequence[dict[str, Any]],
        keys: KeyLookup,
    ) -> PersistedEvent:
        """Accept our join to a room on another server with the state and auth chain `send_join`
        answered: one batch, the room is here whole or not at all."""
        from homeserver.rooms.receiving import receive_join

        return await receive_join(self, room_id, room_version, join, state, auth_chain, keys)


def _needs_a_signature(e: AuthError) -> bool:
    """Whether the auth rules refused an unsigned template only for want of the signature of the
    server that authorises a restricted join (rooms v8+): the joining server's event will carry it."""
    return e.reason.startswith("not signed by the server of join_authorised_via_users_server")


def _membership(event: Mapping[str, Any]) -> str | None:
    content = event.get("content")
    membership = content.get("membership") if isinstance(content, Mapping) else None
    return membership if membership in MEMBERSHIPS else None
