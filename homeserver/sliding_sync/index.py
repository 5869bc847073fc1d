"""Each local user's rooms ordered by activity, written in the same batch as the events that move
them (DESIGN.md "Simplified sliding sync"), so a sliding sync list range is a prefix scan.

A room's stamp for a user (its `bump_stamp` in responses, by which Element X sorts):
- invited, knocking, left or banned: the position of that membership event;
- joined: the later of the join and the room's last bump event (`BUMP_EVENT_TYPES`, the types
  Synapse counts: messages, not reactions or state changes). A profile change keeps the stamp.
"""

from __future__ import annotations

from collections.abc import Iterator

from homeserver.rooms.pipeline import PersistedEvent, RoomContext
from homeserver.rooms.queries import RoomQueries
from storage.engine import Batch
from storage.sliding_sync import BUMP_EVENT_TYPES, RoomActivityStore


class RoomActivity:
    def __init__(self, store: RoomActivityStore, queries: RoomQueries) -> None:
        self.store = store
        self.queries = queries

    # -- writing: hooks called inside the batch that writes the event ---------------------------

    def membership_written(
        self, batch: Batch, room: int, user_id: str, membership: str | None, previous: str | None, stream: int
    ) -> None:
        """`RoomStore.membership_hooks`: a local user's membership changed."""
        if not self.queries.is_local(user_id):
            return
        store = self.store
        store.note_membership(user_id, room, membership == "join", batch)
        if membership is None:
            store.remove(user_id, room, batch)
            return
        if membership == "join":
            stamp = max(stream, store.bump(room, batch))
            if previous == "join":  # a profile change: the room keeps its place
                old = store.stamp(user_id, room)
                stamp = max(old, store.bump(room, batch)) if old is not None else stamp
        else:
            stamp = stream
        store.set_stamp(user_id, room, stamp, batch)

    def write_hook(self, batch: Batch, ctx: RoomContext, persisted: PersistedEvent) -> None:
        """`EventPipeline.write_hooks`: a bump event moves the room up for every local member."""
        if not persisted.stream or persisted.rejected is not None or persisted.soft_failed:
            return
        if persisted.event.get("type") not in BUMP_EVENT_TYPES:
            return
        room = ctx.room_short
        store = self.store
        store.set_bump(room, persisted.stream, batch)
        members = set(self.queries.local_joined_members(room))
        for user_id, joined in store.joined_in_batch(room, batch).items():
            if joined:
                members.add(user_id)
            else:
                members.discard(user_id)
        for user_id in members:
            store.set_stamp(user_id, room, persisted.stream, batch)

    # -- reading ---------------------------------------------------------------------------------

    def by_activity(self, user_id: str) -> Iterator[tuple[int, int]]:
        """(room, stamp) of every room the user has a membership in, most recently active first."""
        return self.store.by_activity(user_id)

    def stamp(self, user_id: str, room: int) -> int | None:
        return self.store.stamp(user_id, room)
