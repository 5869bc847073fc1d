"""Each local user's rooms ordered by activity, written in the same batch as the events that move
them (DESIGN.md "Simplified sliding sync"), so a sliding sync list range is a prefix scan.

A room's stamp for a user (its `bump_stamp` in responses, by which Element X sorts):
- invited, knocking, left or banned: the position of that membership event;
- joined: the later of the join and the room's last bump event (`BUMP_EVENT_TYPES`, the types
  Synapse counts: messages, not reactions or state changes). A profile change keeps the stamp.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from homeserver.rooms.pipeline import PersistedEvent, RoomContext
from homeserver.rooms.queries import RoomQueries
from storage.cache import CacheRegistry, LruCache
from storage.engine import Batch
from storage.rooms import UserRoom
from storage.sliding_sync import BUMP_EVENT_TYPES, RoomActivityStore


class UserRooms:
    """A user's rooms as a sliding sync list reads them: most recently active first, with their
    membership. Kept in memory while no membership of the user changes (every change comes through
    the hooks); a bump moves its room in place."""

    __slots__ = ("memberships", "order", "stamps")

    def __init__(self, order: list[int], stamps: dict[int, int], memberships: dict[int, UserRoom]) -> None:
        self.order = order
        self.stamps = stamps
        self.memberships = memberships

    def bumped(self, room: int, stamp: int) -> None:
        if room not in self.stamps or self.stamps[room] >= stamp:
            return
        self.order.remove(room)
        self.stamps[room] = stamp
        # the order is by descending stamp: the first room not newer than this one comes after it
        at = bisect.bisect_left(self.order, -stamp, key=lambda r: -self.stamps[r])
        self.order.insert(at, room)


class RoomActivity:
    def __init__(self, store: RoomActivityStore, queries: RoomQueries, caches: CacheRegistry) -> None:
        self.store = store
        self.queries = queries
        self._rooms: LruCache[str, UserRooms] = caches.lru("sliding_sync.user_rooms", "sync", part=0.25)

    def _forget_after(self, batch: Batch, users: Iterable[str]) -> None:
        """Once `batch` has landed, the users' cached rooms are stale."""
        users = tuple(users)

        def forget() -> None:
            for user_id in users:
                self._rooms.discard(user_id)

        batch.on_commit.append(forget)

    # -- writing: hooks called inside the batch that writes the event ---------------------------

    def membership_written(
        self, batch: Batch, room: int, user_id: str, membership: str | None, previous: str | None, stream: int
    ) -> None:
        """`RoomStore.membership_hooks`: a local user's membership changed."""
        if not self.queries.is_local(user_id):
            return
        store = self.store
        self._forget_after(batch, (user_id,))
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
        stream = persisted.stream

        def move() -> None:
            for user_id in members:
                cached = self._rooms.peek(user_id)
                if cached is not None:
                    cached.bumped(room, stream)

        batch.on_commit.append(move)

    # -- reading ---------------------------------------------------------------------------------

    def rooms_of(self, user_id: str) -> UserRooms:
        """Every room the user has a membership in, most recently active first (a room missing from
        the index, which should not happen, goes last)."""
        found = self._rooms.get(user_id)
        if found is None:
            memberships = {ur.room: ur for ur in self.queries.memberships(user_id)}
            stamps: dict[int, int] = {}
            for room, stamp in self.store.by_activity(user_id):
                if room in memberships:
                    stamps.setdefault(room, stamp)
            for ur in memberships.values():
                stamps.setdefault(ur.room, ur.stream)  # missing from the index (should not happen)
            order = sorted(stamps, key=lambda r: -stamps[r])
            found = UserRooms(order, stamps, memberships)
            self._rooms.put(user_id, found)
        return found

    def stamp(self, user_id: str, room: int) -> int | None:
        cached = self._rooms.peek(user_id)
        if cached is not None and room in cached.stamps:
            return cached.stamps[room]
        return self.store.stamp(user_id, room)
