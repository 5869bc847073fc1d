"""The `rooms` part of a `/sync` response (spec: GET /sync; client-server-api "Syncing").

For each room of the user, what changed in (since, upto]: joined rooms get their timeline (with
`limited` and `prev_batch`), the state delta between `since` and the start of the timeline (or the
end of it, `state_after`, with MSC4222), ephemeral events, room account data, unread counts and the
summary; invites and knocks their stripped state; left rooms their timeline up to the leave.

States are read from the snapshots stored with events: the state at a stream position is the state
after the last live timeline event at or before it (rooms/timeline.py); the state at the start of a
timeline is the state before its first event.

Room questions go to RoomQueries, positions to the Timeline; sync holds no storage of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from homeserver.account_data.service import AccountData
from homeserver.ephemeral.receipts import Receipts
from homeserver.ephemeral.typing import Typing
from homeserver.protocol.events import content_of
from homeserver.push.service import PushService
from homeserver.rooms.client_format import EventSerializer, Viewer
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.stripped_state import inviter_member, room_stripped_state, stripped_state
from homeserver.rooms.timeline import Timeline
from homeserver.rooms.tokens import before_token, live_order, stream_token
from homeserver.rooms.visibility import Visibility
from homeserver.sync.filters import SyncFilter
from storage.cache import CacheRegistry, LruCache, cache_stats
from storage.rooms import UserRoom

MEMBER = "m.room.member"
HEROES = 5
LAZY_ENTRY_BYTES = 200  # one remembered (room, user) -> member event entry (tracemalloc)
LAZY_ENTRIES_MIN = 256

# The history visibility rule of a user in a room (rooms/visibility.py), made by whoever wires sync.
VisibilityFor = Callable[[str, int], Visibility]
# A serialized event with the short id it came from.
Served = tuple[int, dict[str, Any]]


class SyncParams:
    __slots__ = (
        "account_data_rooms",
        "device_id",
        "filter",
        "full_state",
        "ignored",
        "since",
        "upto",
        "use_state_after",
        "user_id",
    )

    user_id: str
    device_id: str | None
    since: int | None  # None: an initial sync
    upto: int
    filter: SyncFilter
    full_state: bool
    use_state_after: bool
    account_data_rooms: set[str]  # rooms whose account data changed
    ignored: frozenset[str]  # spec: ignore_users — their non-state events are left out

    def __init__(
        self,
        user_id: str,
        device_id: str | None,
        since: int | None,
        upto: int,
        filter: SyncFilter,
        full_state: bool = False,
        use_state_after: bool = False,
        account_data_rooms: set[str] | None = None,
        ignored: frozenset[str] = frozenset(),
    ) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.since = since
        self.upto = upto
        self.filter = filter
        self.full_state = full_state
        self.use_state_after = use_state_after
        self.account_data_rooms = set() if account_data_rooms is None else account_data_rooms
        self.ignored = ignored

    @property
    def viewer(self) -> Viewer:
        return Viewer(self.user_id, self.device_id)


class LazyMembers:
    """Which member event of each (room, user) a device was last sent, so lazy-loading can leave
    out redundant ones (spec: "Lazy-loading room members" — redundancy is allowed, so losing this
    memory only costs bandwidth)."""

    def __init__(self, caches: CacheRegistry) -> None:
        # three quarters of the "sync" share, in (room, user) entries: each device may hold a
        # sixteenth of them, and as many devices as fit are remembered (the least recent forgotten)
        total = max(LAZY_ENTRIES_MIN, caches.bytes_for("sync") * 3 // 4 // LAZY_ENTRY_BYTES)
        self.per_device = max(LAZY_ENTRIES_MIN, total // 16)
        self._sent: LruCache[tuple[str, str | None], dict[tuple[int, str], int]] = LruCache(
            "sync.lazy_members", max(4, total // self.per_device), LAZY_ENTRY_BYTES
        )
        caches.add_reporter(self.cache_stats)

    def for_device(self, user_id: str, device_id: str | None) -> dict[tuple[int, str], int]:
        key = (user_id, device_id)
        found = self._sent.get(key)
        if found is None:
            found = {}
            self._sent.put(key, found)
        if len(found) > self.per_device:
            found.clear()
        return found

    def cache_stats(self) -> dict[str, Any]:
        """Counted in (room, user) entries over all devices."""
        s = self._sent
        entries = sum(len(d) for k in s.list_keys() if (d := s.peek(k)) is not None)
        capacity = s.capacity * self.per_device
        return cache_stats(s.name, entries, capacity, entries * LAZY_ENTRY_BYTES, s.hits, s.misses)


class RoomSync:
    def __init__(
        self,
        queries: RoomQueries,
        timeline: Timeline,
        visibility: VisibilityFor,
        serializer: EventSerializer,
        push: PushService,
        receipts: Receipts,
        typing: Typing,
        account_data: AccountData,
        caches: CacheRegistry,
    ) -> None:
        self.queries = queries
        self.timeline = timeline
        self.visibility = visibility
        self.serializer = serializer
        self.push = push
        self.receipts = receipts
        self.typing = typing
        self.account_data = account_data
        self.lazy = LazyMembers(caches)

    # -- helpers ---------------------------------------------------------------------------------

    def _serialize(
        self, shorts: Iterable[int], p: SyncParams, vis: Visibility | None, *, bundle: bool = True
    ) -> list[Served]:
        out = []
        federation = p.filter.event_format == "federation"
        for short in shorts:
            if federation:
                event = self.serializer.stored_event(short)
                if event is None:
                    continue
                event = dict(event)
            else:
                event = self.serializer.serialize(short, p.viewer, vis=vis, bundle=bundle)
                if event is None:
                    continue
                event.pop("room_id", None)  # spec: sync uses ClientEventWithoutRoomID
            out.append((short, p.filter.project(event)))
        return out

    def _not_ignored(self, shorts: list[int], p: SyncParams) -> list[int]:
        """spec: ignore_users — no events of ignored users, except state events."""
        if not p.ignored:
            return shorts
        out = []
        for short in shorts:
            event = self.queries.event(short)
            if event is None or event.sender not in p.ignored or event.is_state:
                out.append(short)
        return out

    # -- joined rooms ----------------------------------------------------------------------------

    def membership_at(self, room: int, user_id: str, position: int) -> str | None:
        """The user's membership in the room's state at a stream position."""
        event = self.queries.state_event_at(self.timeline.state_at(room, position), MEMBER, user_id)
        return event.membership if event is not None else None

    def joined(self, ur: UserRoom, room_id: str, p: SyncParams, *, newly_joined: bool = False) -> dict[str, Any] | None:
        """The entry of a joined room, or None when nothing changed in it."""
        room = ur.room
        since = p.since
        full = since is None or p.full_state or newly_joined
        f = p.filter
        if not full:
            assert since is not None
            maybe = (
                self.timeline.changed_since(room, since)
                or self.receipts.changed_since(room, since)
                or self.typing.changed_since(room, since)
                or room_id in p.account_data_rooms
            )
            if not maybe:
                return None
        vis = self.visibility(p.user_id, room)
        # timeline: the newest events up to `upto`, back to `since` for an incremental sync (also with
        # full_state, spec: "the timeline will still be limited by the since parameter"); a room
        # joined since then is new to the client and gets its recent history
        stop = None if since is None or newly_joined else live_order(since)
        timeline_filter = f.timeline
        events: list[int] = []
        limited = False
        start_order: int | None = None
        if timeline_filter.allows_room(room_id):
            result = self.timeline.walk(
                room,
                live_order(p.upto),
                forwards=False,
                limit=f.timeline_limit,
                vis=vis,
                event_filter=f.timeline,
                stop=stop,
            )
            events = self._not_ignored([s for _, s in reversed(result.events)], p)
            limited = not result.exhausted
            if result.events:
                start_order = result.events[-1][0]
        timeline = self._serialize(events, p, vis)
        prev_batch = before_token(start_order) if start_order is not None else stream_token(p.upto)
        # state
        end_state = self.timeline.current_state(room, p.upto)
        first = self.timeline.place(events[0]) if events else None
        start_state = first.state_before if first is not None else end_state
        state_events = self._state(room, room_id, p, vis, full, start_state, end_state, timeline)
        timeline_events = [e for _, e in timeline]
        entry: dict[str, Any] = {
            "timeline": {"events": timeline_events, "limited": limited, "prev_batch": prev_batch},
        }
        entry["state_after" if p.use_state_after else "state"] = {"events": state_events}
        ephemeral = self._ephemeral(room, room_id, p, full)
        account = self._room_account_data(room_id, p, full)
        changed = bool(timeline or state_events or ephemeral or account)
        if not full and not changed:
            return None
        entry["ephemeral"] = {"events": ephemeral}
        entry["account_data"] = {"events": account}
        summary = self._summary(room, p, end_state, full, timeline_events, state_events)
        if summary is not None:
            entry["summary"] = summary
        self._unread(room, p, entry)
        return entry

    def _state(
        self,
        room: int,
        room_id: str,
        p: SyncParams,
        vis: Visibility,
        full: bool,
        start_state: int,
        end_state: int,
        timeline: list[Served],
    ) -> list[dict[str, Any]]:
        """`state` (the state at `since` to the start of the timeline) or, with `use_state_after`,
        `state_after` (to its end); everything for a full state."""
        target = end_state if p.use_state_after else start_state
        target_map = self.queries.state_at_snapshot(target)
        if full:
            delta = dict(target_map)
        else:
            assert p.since is not None
            since_state = self.timeline.state_at(room, p.since)
            if since_state == target:
                delta = {}
            else:
                base = self.queries.state_at_snapshot(since_state)
                delta = {sk: ev for sk, ev in target_map.items() if base.get(sk) != ev}
        return self._lazy_only(room, room_id, p, vis, target_map, timeline, delta, full)

    def _lazy_only(
        self,
        room: int,
        room_id: str,
        p: SyncParams,
        vis: Visibility,
        target_map: Mapping[int, int],
        timeline: list[Served],
        delta: dict[int, int],
        full: bool,
    ) -> list[dict[str, Any]]:
        """The state filter and lazy-loading applied to `delta` (members of timeline senders come from
        `target_map`, the state the delta leads to)."""
        f = p.filter
        state_filter = f.state
        if not state_filter.allows_room(room_id):
            return []
        chosen = dict(delta)
        lazy = f.lazy_load_members
        sent = self.lazy.for_device(p.user_id, p.device_id) if lazy else {}
        if lazy:
            member_keys: dict[int, str] = {}
            for sk in list(chosen):
                etype, state_key = self.queries.state_key_of(sk)
                if etype == MEMBER:
                    member_keys[sk] = state_key
            if full:
                # spec: with lazy-loading only the members the timeline needs, and our own
                for sk, user in member_keys.items():
                    if user != p.user_id:
                        del chosen[sk]
            # else: member changes in the gap are always sent (spec: GET /sync lazy-loading)
            senders = {e.get("sender") for _, e in timeline if isinstance(e.get("sender"), str)}
            for sender in senders:
                sender_sk = self.queries.state_key(MEMBER, str(sender))
                if sender_sk is None or sender_sk in chosen:
                    continue
                member = target_map.get(sender_sk)
                if member is None:
                    continue
                if not f.include_redundant_members and sent.get((room, str(sender))) == member:
                    continue
                chosen[sender_sk] = member
            for short, e in timeline:  # members whose event is in the timeline are known to the client now
                if e.get("type") == MEMBER and isinstance(e.get("state_key"), str):
                    sent[(room, e["state_key"])] = short
        out = []
        for short, event in self._serialize(chosen.values(), p, vis, bundle=False):
            if not state_filter.allows(event):
                continue
            if lazy and event.get("type") == MEMBER and isinstance(event.get("state_key"), str):
                sent[(room, event["state_key"])] = short
            out.append(event)
        return out

    def _ephemeral(self, room: int, room_id: str, p: SyncParams, full: bool) -> list[dict[str, Any]]:
        f = p.filter.ephemeral
        if not f.allows_room(room_id):
            return []
        out: list[dict[str, Any]] = []
        since = None if full else p.since
        if f.allows_type("m.typing"):
            typing = self.typing.event_for_sync(room, since)
            if typing is not None:
                out.append(typing)
        if f.allows_type("m.receipt"):
            receipt = self.receipts.event_for_sync(room, p.user_id, since or 0, p.upto)
            if receipt is not None:
                out.append(receipt)
        return out

    def _room_account_data(self, room_id: str, p: SyncParams, full: bool) -> list[dict[str, Any]]:
        f = p.filter.room_account_data
        if not f.allows_room(room_id):
            return []
        if not full and room_id not in p.account_data_rooms:
            return []
        out = []
        for data_type, content in self.account_data.all_of(p.user_id, room_id):
            if f.allows_type(data_type):
                out.append({"type": data_type, "content": content})
        return out

    def _summary(
        self,
        room: int,
        p: SyncParams,
        end_state: int,
        full: bool,
        timeline: list[dict[str, Any]],
        state: list[dict[str, Any]],
    ) -> dict[str, Any] | None:
        """spec: RoomSummary — sent with a full state and whenever the membership may have changed."""
        if not full and not any(e.get("type") == MEMBER for e in (*timeline, *state)):
            return None
        summary: dict[str, Any] = {
            "m.joined_member_count": self.queries.member_count(room, "join"),
            "m.invited_member_count": self.queries.member_count(room, "invite"),
        }
        name = content_of(self.queries.state_event_at(end_state, "m.room.name")).get("name")
        alias = content_of(self.queries.state_event_at(end_state, "m.room.canonical_alias")).get("alias")
        if not name and not alias:
            summary["m.heroes"] = self._heroes(room, p.user_id)
        return summary

    def _heroes(self, room: int, user_id: str) -> list[str]:
        """spec: m.heroes — the first 5 joined or invited members by timeline order, not the user;
        else the ones who left or were banned."""
        for memberships in (("join", "invite"), ("leave", "ban")):
            members = []
            for membership in memberships:
                for member, short in self.queries.members(room, membership):
                    if member != user_id:
                        place = self.timeline.place(short)
                        order = place.order if place is not None else None
                        members.append((order or 0, member))  # outliers (remote invites) first
            if members:
                return [m for _, m in sorted(members)[:HEROES]]
        return []

    def _unread(self, room: int, p: SyncParams, entry: dict[str, Any]) -> None:
        counts = self.push.notifications.counts(p.user_id, room)
        if p.filter.unread_thread_notifications:
            # spec: with unread_thread_notifications the room counts are those of the main timeline
            entry["unread_notifications"] = counts.main.json()
            threads = {t: c.json() for t, c in counts.threads.items() if c.notification_count or c.highlight_count}
            if threads:
                entry["unread_thread_notifications"] = threads
        else:
            entry["unread_notifications"] = counts.total.json()

    # -- invites and knocks ----------------------------------------------------------------------

    def stripped(self, ur: UserRoom, p: SyncParams) -> list[dict[str, Any]]:
        """Stripped state for an invite or knock (homeserver/rooms/stripped_state.py): the copy stored
        with it, else the room's current state."""
        stored = self.queries.invite_state(p.user_id, ur.room)
        own_event = self.queries.event(ur.event)
        own = dict(own_event.raw) if own_event is not None else None

        def state(event_type: str, state_key: str) -> dict[str, Any] | None:
            found = self.queries.current_state_event(ur.room, event_type, state_key)
            return dict(found.raw) if found is not None else None

        if not stored:
            return room_stripped_state(state, own) if own is not None else []
        events = list(stored)
        if own is not None:
            # invites stored before the inviter's member event was part of the copy get it here
            inviter = inviter_member(state, own)
            if inviter is not None and not any(
                e.get("type") == MEMBER and e.get("state_key") == inviter["state_key"] for e in events
            ):
                events.insert(len(events) - 1, stripped_state(inviter))
            if not any(e.get("type") == MEMBER and e.get("state_key") == p.user_id for e in events):
                events.append(stripped_state(own))
        return events

    # -- left rooms ------------------------------------------------------------------------------

    def left(self, ur: UserRoom, room_id: str, p: SyncParams) -> dict[str, Any] | None:
        room = ur.room
        vis = self.visibility(p.user_id, room)
        if vis.access.forgotten:
            return None
        leave = self.timeline.place(ur.event)
        if leave is None:
            return None
        full = p.since is None or p.full_state
        f = p.filter
        events: list[int] = []
        limited = False
        start_order: int | None = None
        if leave.order is None:
            events = [ur.event]  # e.g. a rejected remote invite: the leave is all the user may see
        elif f.timeline.allows_room(room_id):
            stop = live_order(p.since) if p.since is not None else None
            result = self.timeline.walk(
                room,
                leave.order,
                forwards=False,
                limit=f.timeline_limit,
                vis=vis,
                event_filter=f.timeline,
                stop=stop,
            )
            events = self._not_ignored([s for _, s in reversed(result.events)], p)
            limited = not result.exhausted
            if result.events:
                start_order = result.events[-1][0]
        timeline = self._serialize(events, p, vis)
        entry: dict[str, Any] = {"timeline": {"events": [e for _, e in timeline], "limited": limited}}
        if start_order is not None:
            entry["timeline"]["prev_batch"] = before_token(start_order)
        if leave.order is None:
            state: list[dict[str, Any]] = []
        else:
            first = self.timeline.place(events[0]) if events else None
            start_state = first.state_before if first is not None else leave.state_after
            state = self._state(room, room_id, p, vis, full, start_state, leave.state_after, timeline)
        entry["state_after" if p.use_state_after else "state"] = {"events": state}
        entry["account_data"] = {"events": self._room_account_data(room_id, p, True)}
        return entry
