"""One room of a sliding sync response (MSC4186 "Room results", the fields Synapse sends).

Initial (the connection never had the room, or the user just joined it): the newest
`timeline_limit` events, the required state as of now, name, avatar, heroes and counts.
Incremental: the events since the room was last sent (all of the newest `timeline_limit` if the
limit grew: `unstable_expanded_timeline`), the required state that changed since then or that the
config newly asks for, and name, avatar, heroes and counts only when they may have changed.
Members the timeline needs (`$LAZY`) are sent once per connection, as `/sync`'s lazy-loading.
Left and banned rooms are shown as of the leave; invites and knocks by their stripped state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from homeserver.protocol.events import content_of
from homeserver.push.service import PushService
from homeserver.rooms.client_format import EventSerializer, Viewer
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.timeline import Timeline
from homeserver.rooms.tokens import before_token, live_order, stream_of, stream_token
from homeserver.rooms.visibility import Visibility
from homeserver.sliding_sync.state import MEMBER, RoomConfig, RoomSent, StateSelector
from homeserver.sync.filters import SyncFilter
from homeserver.sync.rooms import RoomSync, SyncParams
from storage.cache import CacheRegistry, LruCache
from storage.rooms import UserRoom

HEROES = 5
VisibilityFor = Callable[[str, int], Visibility]


class RoomRequest:
    """One room to answer for: the user's membership, the merged config and what was sent."""

    __slots__ = ("config", "prev", "room_id", "ur")

    def __init__(self, room_id: str, ur: UserRoom, config: RoomConfig, prev: RoomSent | None) -> None:
        self.room_id = room_id
        self.ur = ur
        self.config = config
        self.prev = prev


class RoomAnswer:
    __slots__ = ("entry", "lazy_sent", "lazy_unsent", "timeline_ids")

    def __init__(self) -> None:
        self.entry: dict[str, Any] = {}
        self.lazy_sent: set[str] = set()
        self.lazy_unsent: set[str] = set()  # members whose change was not sent: forget they were sent
        self.timeline_ids: list[str] = []


class RoomResults:
    def __init__(
        self,
        queries: RoomQueries,
        timeline: Timeline,
        visibility: VisibilityFor,
        serializer: EventSerializer,
        push: PushService,
        room_sync: RoomSync,
        caches: CacheRegistry,
    ) -> None:
        self.queries = queries
        self.timeline = timeline
        self.visibility = visibility
        self.serializer = serializer
        self.push = push
        self.room_sync = room_sync
        self._member_counts: LruCache[tuple[int, int], tuple[int, int]] = caches.lru(
            "sliding_sync.member_counts", "sync", part=0.25
        )

    def needs_sending(self, req: RoomRequest, since: int) -> bool:
        """Whether a room already sent (up to `since`) has anything new to say."""
        prev = req.prev
        assert prev is not None
        if req.ur.stream > since:
            return True
        if req.config.timeline_limit > prev.timeline_limit or not req.config.required <= prev.required:
            return True
        return req.ur.membership == "join" and self.timeline.changed_since(req.ur.room, since)

    def answer(
        self,
        req: RoomRequest,
        user_id: str,
        device_id: str | None,
        since: int | None,
        conn_since: int | None,
        upto: int,
        lazy_known: set[str],
        *,
        is_dm: bool,
        bump_stamp: int,
        ignored: frozenset[str],
    ) -> RoomAnswer:
        """`since`: where the room was last sent up to (None: initial); `conn_since`: the stream
        position of the request's `pos` (for `num_live`)."""
        ur, config, prev = req.ur, req.config, req.prev
        room = ur.room
        membership = ur.membership
        initial = since is None
        expanded = not initial and prev is not None and config.timeline_limit > prev.timeline_limit
        out = RoomAnswer()
        entry = out.entry
        viewer = Viewer(user_id, device_id)
        if membership in ("invite", "knock"):
            if initial or ur.stream > (since or 0):
                params = SyncParams(user_id, device_id, None, upto, SyncFilter())
                stripped = self.room_sync.stripped(ur, params)
                entry["invite_state"] = stripped
                entry["initial"] = True
                for shown in stripped:  # the name and avatar the invite shows
                    content = shown.get("content") or {}
                    if shown.get("type") == "m.room.name" and isinstance(content.get("name"), str) and content["name"]:
                        entry["name"] = content["name"]
                    if shown.get("type") == "m.room.avatar" and isinstance(content.get("url"), str) and content["url"]:
                        entry["avatar"] = content["url"]
            entry.update(notification_count=0, highlight_count=0, bump_stamp=bump_stamp)
            if is_dm:
                entry["is_dm"] = True
            return out
        vis = self.visibility(user_id, room)
        left = membership in ("leave", "ban")
        place = self.timeline.place(ur.event) if left else None
        # -- timeline
        served: list[tuple[int, dict[str, Any]]] = []
        limited = False
        start_order: int | None = None
        if config.timeline_limit > 0:
            start = live_order(upto) if not left else (place.order if place is not None else None)
            if start is not None:
                stop = None if initial or expanded else live_order(since or 0)
                walked = self.timeline.walk(
                    room, start, forwards=False, limit=config.timeline_limit, vis=vis, stop=stop
                )
                limited = not walked.exhausted
                if walked.events:
                    start_order = walked.events[-1][0]
                for order, short in reversed(walked.events):
                    event = self.serializer.serialize(short, viewer, vis=vis)
                    if event is None or (event.get("sender") in ignored and "state_key" not in event):
                        continue
                    event.pop("room_id", None)
                    served.append((order, event))
            entry["timeline"] = [e for _, e in served]
            entry["limited"] = limited
            entry["prev_batch"] = before_token(start_order) if start_order is not None else stream_token(upto)
            num_live = 0
            if conn_since is not None:
                for order, _ in reversed(served):
                    position = stream_of(order)
                    if position is None or position <= conn_since:
                        break
                    num_live += 1
            entry["num_live"] = num_live
            if expanded:
                entry["unstable_expanded_timeline"] = True
        out.timeline_ids = [str(e["event_id"]) for _, e in served]
        # -- state
        snapshot = self.timeline.current_state(room, upto) if not left else place.state_after if place else 0
        state_map = self.queries.state_at_snapshot(snapshot) if snapshot else {}
        delta: dict[int, int] = {}
        if not initial:
            since_snapshot = self.timeline.state_at(room, since or 0)
            if since_snapshot != snapshot:
                base = self.queries.state_at_snapshot(since_snapshot) if since_snapshot else {}
                delta = {sk: ev for sk, ev in state_map.items() if base.get(sk) != ev}
        delta_keys = {sk: self.queries.state_key_of(sk) for sk in delta}
        changed_types = {t for t, _ in delta_keys.values()}
        chosen = self._required_state(
            config, prev, user_id, state_map, delta, delta_keys, served, lazy_known, limited, initial, out
        )
        if chosen:
            required_state = []
            for short in sorted(set(chosen)):
                # no `unsigned.membership` on state (as Synapse): it is the user's membership at
                # each event, a lookup per event for what the timeline's events already carry
                event = self.serializer.serialize(short, viewer, bundle=False)
                if event is not None:
                    event.pop("room_id", None)
                    required_state.append(event)
            entry["required_state"] = required_state
        # -- name, avatar, heroes, counts
        name = self._content(state_map, "m.room.name").get("name")
        if (initial or "m.room.name" in changed_types) and isinstance(name, str) and name:
            entry["name"] = name
        avatar = self._content(state_map, "m.room.avatar").get("url")
        if (initial or "m.room.avatar" in changed_types) and isinstance(avatar, str) and avatar:
            entry["avatar"] = avatar
        membership_changed = initial or MEMBER in changed_types
        if membership == "join" and membership_changed:
            if not (isinstance(name, str) and name):
                heroes = self._heroes(room, user_id, state_map)
                if heroes:
                    entry["heroes"] = heroes
            entry["joined_count"], entry["invited_count"] = self._counts(room, snapshot)
        if membership == "join":
            counts = self.push.notifications.counts(user_id, room).total
            entry["notification_count"] = counts.notification_count
            entry["highlight_count"] = counts.highlight_count
        else:
            entry.update(notification_count=0, highlight_count=0)
        entry["bump_stamp"] = bump_stamp
        if initial:
            entry["initial"] = True
        if is_dm:
            entry["is_dm"] = True
        return out

    def _required_state(
        self,
        config: RoomConfig,
        prev: RoomSent | None,
        user_id: str,
        state_map: Mapping[int, int],
        delta: dict[int, int],
        delta_keys: dict[int, tuple[str, str]],
        served: list[tuple[int, dict[str, Any]]],
        lazy_known: set[str],
        limited: bool,
        initial: bool,
        out: RoomAnswer,
    ) -> list[int]:
        selector = StateSelector(config.required, user_id)
        lazy = config.lazy
        needed: set[str] = set()  # members the timeline needs
        if lazy:
            for _, event in served:
                needed.add(str(event.get("sender")))
                if event.get("type") == MEMBER and isinstance(event.get("state_key"), str):
                    needed.add(event["state_key"])
        chosen: dict[int, int] = {}
        if initial:
            if selector.all or selector.types:
                for sk, ev in state_map.items():
                    if selector.wants(*self.queries.state_key_of(sk)):
                        chosen[sk] = ev
            else:
                for event_type, state_key in selector.keys:
                    wanted = self.queries.state_key(event_type, state_key)
                    if wanted is not None and wanted in state_map:
                        chosen[wanted] = state_map[wanted]
        else:
            for sk, (event_type, state_key) in delta_keys.items():
                if selector.wants(event_type, state_key):
                    chosen[sk] = delta[sk]
                elif lazy and event_type == MEMBER:
                    # a member change in the gap: sent if the timeline shows all of the gap (the client
                    # could not tell otherwise), else only for the members the timeline needs
                    if not limited or state_key in needed:
                        chosen[sk] = delta[sk]
                    elif state_key in lazy_known:
                        out.lazy_unsent.add(state_key)
            # the config asks for more than when the room was last sent: what it newly matches, now
            if prev is not None and not config.required <= prev.required:
                old = StateSelector(prev.required, user_id)
                if not old.all:
                    for sk, ev in state_map.items():
                        key = self.queries.state_key_of(sk)
                        if selector.wants(*key) and not old.wants(*key):
                            chosen[sk] = ev
        if lazy:
            for member in needed:
                member_sk = self.queries.state_key(MEMBER, member)
                if member_sk is None or member_sk not in state_map:
                    continue
                if member_sk in chosen or member not in lazy_known:
                    chosen[member_sk] = state_map[member_sk]
            for sk in chosen:
                event_type, state_key = delta_keys.get(sk) or self.queries.state_key_of(sk)
                if event_type == MEMBER:
                    out.lazy_sent.add(state_key)
        return list(chosen.values())

    def _counts(self, room: int, snapshot: int) -> tuple[int, int]:
        """Joined and invited members, kept per state: they change only with it."""
        key = (room, snapshot)
        found = self._member_counts.get(key)
        if found is None:
            found = (self.queries.member_count(room, "join"), self.queries.member_count(room, "invite"))
            self._member_counts.put(key, found)
        return found

    def _content(self, state_map: Mapping[int, int], event_type: str) -> Mapping[str, Any]:
        sk = self.queries.state_key(event_type, "")
        short = state_map.get(sk) if sk is not None else None
        return content_of(self.queries.event(short)) if short is not None else {}

    def _heroes(self, room: int, user_id: str, state_map: Mapping[int, int]) -> list[dict[str, Any]]:
        """Up to 5 members other than the user, joined or invited first (by when they got there), else
        those who left: their ids with the display name and avatar of their member event."""
        chosen: list[str] = []
        for memberships in (("join", "invite"), ("leave", "ban")):
            found = []
            for membership in memberships:
                for member, short in self.queries.members(room, membership):
                    if member != user_id:
                        place = self.timeline.place(short)
                        found.append(((place.order if place is not None else None) or 0, member))
            if found:
                chosen = [m for _, m in sorted(found)[:HEROES]]
                break
        heroes = []
        for member in chosen:
            member_sk = self.queries.state_key(MEMBER, member)
            member_event = state_map.get(member_sk) if member_sk is not None else None
            content = content_of(self.queries.event(member_event)) if member_event is not None else {}
            hero: dict[str, Any] = {"user_id": member}
            if isinstance(content.get("displayname"), str):
                hero["displayname"] = content["displayname"]
            if isinstance(content.get("avatar_url"), str):
                hero["avatar_url"] = content["avatar_url"]
            heroes.append(hero)
        return heroes
