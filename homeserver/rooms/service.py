"""The room service: everything clients do with rooms, over the event pipeline.

`Rooms` wires the parts (reading, sending, membership, directory, relations, redactions, search)
and keeps their indexes: it registers one write hook on the pipeline, so every accepted timeline
event updates the indexes in the same batch that writes it (atomic with the event).

Room questions (memberships, members, servers, current state, "is this id ours") go to the
`RoomQueries` it is given (queries.py), which its parts share; what it needs of other services (the
profile and account lookups) comes through its constructor too.

Other services use: `serializer` (client format), `reader`, and `homeserver.rooms.visibility`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from homeserver.errors import MatrixError, not_found
from homeserver.protocol.errors import InvalidIdentifier
from homeserver.protocol.events import Event, content_of
from homeserver.protocol.identifiers import RoomAlias
from homeserver.rooms.client_format import EventSerializer
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.rooms.directory import RemoteAliases, RoomDirectory
from homeserver.rooms.indexing import BatchEvents, Written
from homeserver.rooms.membership import (
    AccountDataLookup,
    Membership,
    ProfileLookup,
    RemoteProfileLookup,
    RemoteRooms,
)
from homeserver.rooms.messages import RoomReader
from homeserver.rooms.pipeline import EventPipeline, PersistedEvent, RoomContext
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.redactions import Redactions
from homeserver.rooms.relations import Relations
from homeserver.rooms.relations_reading import RelationsReader
from homeserver.rooms.search import Search
from homeserver.rooms.sending import EventSender
from homeserver.rooms.spaces import Spaces
from homeserver.rooms.stripped_state import room_stripped_state
from homeserver.rooms.tokens import order_of
from homeserver.rooms.upgrades import RoomUpgrades
from storage.batch_view import BatchView
from storage.database import Database
from storage.engine import Batch
from storage.events import BACKFILLED

log = logging.getLogger(__name__)

AccountLookup = Callable[[str], dict[str, Any] | None]


class Rooms:
    def __init__(
        self,
        db: Database,
        pipeline: EventPipeline,
        queries: RoomQueries,
        *,
        default_room_version: str,
        profile_lookup: ProfileLookup,
        account_lookup: AccountLookup,
        account_data: AccountDataLookup,
        clock: Callable[[], float] = time.time,
        strict_indexes: bool = False,
        remote_rooms: RemoteRooms | None = None,
        remote_aliases: RemoteAliases | None = None,
        remote_profile_lookup: RemoteProfileLookup | None = None,
    ) -> None:
        self.db = db
        self.strict_indexes = strict_indexes
        self.index_failures = 0  # since start; each is also kept in the store for `inspect check`
        self.pipeline = pipeline
        self.queries = queries
        self.server_name = queries.server_name
        self.default_room_version = default_room_version
        self.account_lookup = account_lookup  # the account service's: a local account, None if there is none
        self.clock = clock
        self.relations = Relations(db)
        self.redactions = Redactions(db)
        self.serializer = EventSerializer(db, self.relations, self.redactions, clock)
        self.reader = RoomReader(db, queries, self.serializer)
        self.search = Search(db, queries, self.serializer, self.reader)
        self.directory = RoomDirectory(db, queries, self.serializer, remote_aliases)
        self.membership = Membership(
            db.store,
            db.room_extras,
            account_data,
            pipeline,
            queries,
            self.directory,
            profile_lookup,
            remote=remote_rooms,
            remote_profile_lookup=remote_profile_lookup,
        )
        self.sender = EventSender(db, pipeline, queries, self.relations, self.membership, self.directory)
        self.relations_reader = RelationsReader(db, self.relations, self.serializer, self.reader)
        self.spaces = Spaces(db.ids, db.rooms, db.snapshots, queries, self.directory)
        self.upgrades = RoomUpgrades(
            db.store, db.ids, db.rooms, db.room_directory, pipeline, queries, self.directory, self.membership
        )
        self.membership.join_listeners.append(self.upgrades.follow)  # settings follow users to replacement rooms
        self.redactions.listeners += [self.relations.on_redacted, self.search.on_redacted]
        self._views: dict[int, BatchView] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        pipeline.write_hooks.append(self._on_write)

    # -- indexes: the pipeline's write hook ------------------------------------------------------

    def _view(self, batch: Batch) -> BatchView:
        key = id(batch)
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = BatchView(self.db.store, batch)

            def forget() -> None:
                self._views.pop(key, None)

            batch.on_commit.append(forget)
            batch.on_abort.append(forget)
        return view

    def _on_write(self, batch: Batch, ctx: RoomContext, persisted: PersistedEvent) -> None:
        view = self._view(batch)  # before the savepoint: its clean-up callbacks must stay
        point = batch.savepoint()
        try:
            self._index(batch, ctx, persisted)
        except Exception as e:
            if self.strict_indexes:
                raise  # tests: an index bug fails the write, and so the test
            # An index bug must not stop events from being written, nor leave half an index: the
            # hook's writes are dropped, and the failure is logged and kept where `inspect check`
            # reports it (the event misses its relations, search and transaction-id entries).
            batch.rollback_to(point)
            view.reload()
            self.index_failures += 1
            log.exception(
                "room indexes: could not index %s in %s (failure %d since start; `inspect check` lists them)",
                persisted.event_id,
                ctx.room_id,
                self.index_failures,
            )
            error = f"{type(e).__name__}: {e}"[:500]
            self.db.rooms.record_index_failure(batch, persisted.short, persisted.event_id, ctx.room_id, error)

    def _index(self, batch: Batch, ctx: RoomContext, persisted: PersistedEvent) -> None:
        meta = ctx.pending_meta.get(persisted.short)
        if persisted.rejected or meta is None:
            return
        backfilled = bool(meta.flags & BACKFILLED)  # history fetched from another server
        if not persisted.stream and not backfilled:
            return  # only accepted timeline events are indexed (not outliers, not soft-failed ones)
        view = self._view(batch)
        events = BatchEvents(self.db, ctx, view)
        event = persisted.event
        w = Written(
            persisted.short,
            persisted.event_id,
            ctx.room_short,
            ctx.room_id,
            order_of(meta),
            event,
            meta,
            ctx.rv,
            persisted.fresh,
        )
        if not backfilled:  # history is neither our send nor a change of anyone's membership now
            self.sender.record_txn(view, w)
        ts = event.get("origin_server_ts")
        self.db.room_extras.put_timestamp(view, w.room, ts if isinstance(ts, int) else 0, w.order, w.short)
        if not backfilled and w.type == "m.room.member" and isinstance(event.get("state_key"), str):
            self._member_written(view, events, ctx, w)
        if not self.redactions.on_event(view, events, w):
            self.relations.on_event(view, events, w)
            self.search.on_event(view, w)

    def _member_written(self, view: BatchView, events: BatchEvents, ctx: RoomContext, w: Written) -> None:
        user_id = w.event["state_key"]
        if not self.queries.is_local(user_id):
            return
        membership = w.content.get("membership")
        if membership in ("join", "invite", "knock"):
            # spec: POST /forget — a forgotten room comes back when the user re-joins, is invited or knocks
            self.db.room_extras.set_forgotten(user_id, w.room, False, view)
        if membership in ("invite", "knock") and ctx.state:
            # the room as an invite or knock shows it (sync serves it as invite_state/knock_state)
            def state(event_type: str, state_key: str) -> dict[str, Any] | None:
                sk = self.db.ids.state_key(event_type, state_key)
                short = self.db.snapshots.get(ctx.state, sk) if sk is not None else None
                return events.json(short) if short is not None else None

            stripped = room_stripped_state(state, w.event)
            self.db.rooms.set_invite_state(user_id, w.room, stripped, view.batch)

    # -- after events are committed ----------------------------------------------------------------

    def on_persisted(self, persisted: PersistedEvent) -> None:
        """Persisted-event listener (registered by the server): follow-ups that send events."""
        event = persisted.event
        if persisted.rejected or not persisted.stream or persisted.soft_failed:
            return
        if (
            event.get("type") == "m.room.guest_access"
            and event.get("state_key") == ""
            and content_of(event).get("guest_access") != "can_join"
            and content_of(self._previous_guest_access(persisted)).get("guest_access") == "can_join"
        ):
            task = asyncio.get_running_loop().create_task(self._evict_guests(persisted.room_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _previous_guest_access(self, persisted: PersistedEvent) -> Event | None:
        """The m.room.guest_access event the new one replaced, if any."""
        meta = self.db.events.get_meta(persisted.short)
        return self.queries.state_event_at(meta.state_before, "m.room.guest_access") if meta is not None else None

    async def _evict_guests(self, room_id: str) -> None:
        """spec: guest access "Server behaviour" — when guests may no longer join, the server MUST set
        the joined guests' membership to leave."""
        try:
            room = self.queries.room(room_id)
            for user_id in self.queries.local_joined_members(room) if room is not None else []:
                account = self.account_lookup(user_id)
                if not account or not account.get("guest"):
                    continue
                try:
                    await self.pipeline.send(room_id, user_id, "m.room.member", {"membership": "leave"}, user_id)
                except MatrixError as e:
                    log.warning("could not remove guest %s from %s: %s", user_id, room_id, e.message)
        except Exception:
            log.exception("removing guests from %s failed", room_id)

    # -- POST /createRoom ------------------------------------------------------------------------

    async def create_room(self, req: RoomCreation, *, room_alias_name: str | None = None) -> str:
        """spec: POST /createRoom — the room, its alias (M_ROOM_IN_USE when taken) and directory entry.
        `req` is the client's request: its invitees are de-duplicated here, and its canonical alias
        and the creator's profile filled in."""
        for invitee in req.invite:
            self.membership.check_user_id(invitee, "invite")
            if self.membership.remote is None:
                self.membership.require_local_target(invitee)
        alias = None
        if room_alias_name is not None:
            alias = f"#{room_alias_name}:{self.server_name}"
            try:
                RoomAlias.parse(alias)
            except InvalidIdentifier as e:
                raise MatrixError(400, "M_INVALID_PARAM", f"room_alias_name: {e}") from None
        # spec: invite permission — an invitee who blocks invites is left out; the room is still made
        req.invite = [u for u in dict.fromkeys(req.invite) if not self.membership.invites_blocked(u)]
        req.canonical_alias = alias
        req.creator_profile = self.membership.profile(req.creator)
        req.invite_profiles = {u: self.membership.profile(u) for u in req.invite}
        # spec: server-server-api "Inviting to a room" — their server signs first, so after creation
        req.invite_later = frozenset(u for u in req.invite if not self.queries.is_local(u))
        if alias is None:
            room_id = await create_room(self.pipeline, req)
        else:
            with self.directory.claim(alias):
                room_id = await create_room(self.pipeline, req)
                room = self.queries.room(room_id)
                assert room is not None
                await self.directory.write_alias(alias, room, room_id, req.creator)
        if req.visibility == "public":
            room = self.queries.room(room_id)
            assert room is not None
            await self.directory.publish(room, True)
        for invitee in req.invite:
            if invitee in req.invite_later:
                # as Synapse: an invite that fails fails the request (the room stays, the creator in it)
                await self.membership.invite(req.creator, room_id, invitee, is_direct=req.is_direct)
        return room_id

    # -- aliases ---------------------------------------------------------------------------------

    async def delete_alias(self, user_id: str, alias: str, *, is_admin: bool) -> None:
        """spec: DELETE /directory/room/{roomAlias}. The alias also leaves m.room.canonical_alias when
        the user may change it ("servers may choose to update"); the deletion stands either way."""
        room_id, room = await self.directory.delete_alias(user_id, alias, is_admin=is_admin)
        content = dict(content_of(self.directory.served_state(room, "m.room.canonical_alias")))
        changed = content.get("alias") == alias
        if changed:
            del content["alias"]
        alt = content.get("alt_aliases")
        if isinstance(alt, list) and alias in alt:
            content["alt_aliases"] = [a for a in alt if a != alias]
            changed = True
        if changed:
            try:
                await self.pipeline.send(room_id, user_id, "m.room.canonical_alias", content, "")
            except MatrixError as e:
                log.info("alias %s deleted; m.room.canonical_alias left as it was: %s", alias, e.message)

    # -- reports ---------------------------------------------------------------------------------

    async def report_event(
        self, user_id: str, room_id: str, event_id: str, reason: str | None, score: int | None
    ) -> None:
        """spec: POST /rooms/{roomId}/report/{eventId} — the reporter must be joined (404 otherwise)."""
        room = self.queries.room(room_id) if room_id.startswith("!") else None
        if room is None or not self.queries.is_joined(user_id, room):
            raise not_found("Event not found, or you are not joined to its room")
        short = self.db.ids.event(event_id)
        meta = self.db.events.get_meta(short) if short is not None else None
        if short is None or meta is None or meta.room != room or meta.rejected:
            raise not_found("Event not found, or you are not joined to its room")
        report: dict[str, Any] = {"user_id": user_id, "room_id": room_id, "event_id": event_id, "reason": reason}
        if score is not None:
            report["score"] = score
        await self._save_report(report)

    async def report_room(self, user_id: str, room_id: str, reason: str) -> None:
        """spec: POST /rooms/{roomId}/report — any user may report a room this server knows."""
        room = self.queries.known_room(room_id) if room_id.startswith("!") else None
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        await self._save_report({"user_id": user_id, "room_id": room_id, "reason": reason})

    async def report_user(self, user_id: str, target: str, reason: str) -> None:
        """spec: POST /users/{userId}/report — 404 for local users that do not exist."""
        local = self.queries.is_local(target)
        if not target.startswith("@") or (local and self.account_lookup(target) is None):
            raise not_found(f"User {target} not found")
        await self._save_report({"user_id": user_id, "reported_user": target, "reason": reason})

    async def _save_report(self, report: dict[str, Any]) -> None:
        ts = int(self.clock() * 1000)
        report["received_ts"] = ts
        batch = self.db.store.batch()
        with batch:
            self.db.room_extras.add_report(ts, secrets.token_hex(8), report, batch)
            await batch.commit()
        about = report.get("event_id") or report.get("room_id") or report.get("reported_user")
        log.info("content report from %s about %s", report["user_id"], about)
