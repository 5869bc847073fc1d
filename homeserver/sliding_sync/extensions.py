"""Sliding sync extensions, read from the same services as `/sync`:

- `to_device` (MSC3885): messages for the device; `since` (an earlier `next_batch`) acknowledges and
  deletes those delivered before it;
- `e2ee` (MSC3884): one-time key counts, unused fallback key types, device list changes since `pos`;
- `account_data` (MSC3959): global (with push rules) and per room;
- `receipts` (MSC3960) and `typing` (MSC3961): per room.

Room-scoped extensions cover the rooms of the response's lists (`lists`, default all) and room
subscriptions (`rooms`, default all). A room entering that scope gets everything (receipts: the
user's own and those on its timeline events, as Synapse); later only what changed. Changes in rooms
outside the scope are remembered per room and sent when it comes back (state.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from homeserver.account_data.service import AccountData
from homeserver.e2ee.service import E2EE
from homeserver.ephemeral.receipts import Receipts
from homeserver.ephemeral.typing import Typing
from homeserver.push.service import PushService
from homeserver.rooms.queries import RoomQueries
from homeserver.sliding_sync.request import Extensions, ScopedExtension
from homeserver.sliding_sync.state import LIVE, ConnState


class ExtensionScope:
    """The rooms of this response, by list and by subscription."""

    __slots__ = ("lists", "subscriptions")

    def __init__(self, lists: Mapping[str, list[str]], subscriptions: Iterable[str]) -> None:
        self.lists = lists
        self.subscriptions = frozenset(subscriptions)

    def rooms_for(self, ext: ScopedExtension) -> set[str]:
        rooms: set[str] = set()
        for name in ext.lists or ():
            if name == "*":
                for ids in self.lists.values():
                    rooms.update(ids)
                break
            rooms.update(self.lists.get(name, ()))
        for room_id in ext.rooms or ():
            if room_id == "*":
                rooms.update(self.subscriptions)
                break
            if room_id in self.subscriptions:
                rooms.add(room_id)
        return rooms


class ExtensionResults:
    def __init__(
        self,
        queries: RoomQueries,
        e2ee: E2EE,
        account_data: AccountData,
        receipts: Receipts,
        typing: Typing,
        push: PushService,
    ) -> None:
        self.queries = queries
        self.e2ee = e2ee
        self.account_data = account_data
        self.receipts = receipts
        self.typing = typing
        self.push = push

    async def answer(
        self,
        req: Extensions,
        user_id: str,
        device_id: str | None,
        since: int | None,
        upto: int,
        scope: ExtensionScope,
        initial_rooms: Mapping[str, list[str]],
        old: ConnState | None,
        new: ConnState,
    ) -> tuple[dict[str, Any], bool]:
        """The `extensions` object, and whether it carries anything new (to answer a long poll).
        `initial_rooms`: rooms sent whole in this response, with their timeline event ids."""
        out: dict[str, Any] = {}
        news = False
        if req.to_device is not None and req.to_device.enabled:
            out["to_device"] = await self._to_device(user_id, device_id, req.to_device.since, upto)
            news = news or bool(out["to_device"]["events"])
        if req.e2ee is not None and req.e2ee.enabled:
            out["e2ee"] = self._e2ee(user_id, device_id, since, upto)
            lists = out["e2ee"].get("device_lists") or {}
            news = news or bool(lists.get("changed") or lists.get("left"))
        if req.account_data is not None and req.account_data.enabled:
            rooms = scope.rooms_for(req.account_data)
            out["account_data"] = self._account_data(user_id, since, upto, rooms, old, new)
            news = news or bool(out["account_data"]["global"] or out["account_data"]["rooms"])
        if req.receipts is not None and req.receipts.enabled:
            rooms = scope.rooms_for(req.receipts)
            out["receipts"] = {"rooms": self._receipts(user_id, since, upto, rooms, initial_rooms, old, new)}
            news = news or bool(out["receipts"]["rooms"])
        if req.typing is not None and req.typing.enabled:
            rooms = scope.rooms_for(req.typing)
            out["typing"] = {"rooms": self._typing(rooms, since)}
            news = news or bool(out["typing"]["rooms"])
        return out, news

    async def _to_device(self, user_id: str, device_id: str | None, since: str | None, upto: int) -> dict[str, Any]:
        if device_id is None:
            return {"next_batch": str(upto), "events": []}
        acknowledged = int(since) if since is not None else None
        if acknowledged is not None and acknowledged > upto:
            return {"next_batch": since, "events": []}  # from the future: nothing after it yet
        events = await self.e2ee.to_device.for_sync(user_id, device_id, acknowledged, upto)
        return {"next_batch": str(upto), "events": events}

    def _e2ee(self, user_id: str, device_id: str | None, since: int | None, upto: int) -> dict[str, Any]:
        keys = self.e2ee.keys
        out: dict[str, Any] = {
            "device_one_time_keys_count": keys.one_time_key_counts(user_id, device_id) if device_id else {},
            "device_unused_fallback_key_types": keys.unused_fallback_key_types(user_id, device_id) if device_id else [],
        }
        if since is not None:
            out["device_lists"] = self.e2ee.device_lists.for_sync(user_id, since, upto)
        return out

    def _account_data(
        self, user_id: str, since: int | None, upto: int, rooms: set[str], old: ConnState | None, new: ConnState
    ) -> dict[str, Any]:
        data = self.account_data
        global_data: list[dict[str, Any]] = []
        changed_in: dict[str, set[str]] = {}
        if since is None:
            global_data = [{"type": t, "content": c} for t, c in data.all_of(user_id)]
            global_data.append(self.push.rules.push_rules_event(user_id))
        else:
            for room_id, data_type in data.changed(user_id, since, upto):
                if room_id:
                    changed_in.setdefault(room_id, set()).add(data_type)
                    continue
                content = data.get(user_id, data_type)
                if content is not None:
                    global_data.append({"type": data_type, "content": content})
            if self.push.rules.rules_stream(user_id) > since:
                global_data.append(self.push.rules.push_rules_event(user_id))
        by_room: dict[str, list[dict[str, Any]]] = {}
        for room_id in rooms:
            status = old.account_data.get(room_id) if old is not None and since is not None else None
            if status is None:  # never sent: all of it
                entries = data.all_of(user_id, room_id)
            else:
                after = since if status == LIVE else status
                assert after is not None
                types = (
                    changed_in.get(room_id, set())
                    if status == LIVE
                    else self._changed_types(user_id, room_id, after, upto)
                )
                entries = [(t, c) for t in sorted(types) if (c := data.get(user_id, t, room_id)) is not None]
            if entries or status is None:  # a room new to the connection is listed even without data (as Synapse)
                by_room[room_id] = [{"type": t, "content": c} for t, c in entries]
            new.account_data[room_id] = LIVE
        if since is not None:
            for room_id in changed_in.keys() - rooms:
                if new.account_data.get(room_id) == LIVE:
                    new.account_data[room_id] = since
        return {"global": global_data, "rooms": by_room}

    def _changed_types(self, user_id: str, room_id: str, after: int, upto: int) -> set[str]:
        return {t for r, t in self.account_data.changed(user_id, after, upto) if r == room_id}

    def _receipts(
        self,
        user_id: str,
        since: int | None,
        upto: int,
        rooms: set[str],
        initial_rooms: Mapping[str, list[str]],
        old: ConnState | None,
        new: ConnState,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for room_id in rooms:
            room = self.queries.room(room_id)
            if room is None:
                continue
            status = old.receipts.get(room_id) if old is not None and since is not None else None
            if status is None or room_id in initial_rooms:
                event = self.receipts.event_for_sync(room, user_id, 0, upto)
                if event is not None:
                    # as Synapse: the receipts on the events sent, and the user's own
                    shown = set(initial_rooms.get(room_id, ()))
                    content = {}
                    for event_id, by_type in event["content"].items():
                        if event_id in shown:
                            content[event_id] = by_type
                            continue
                        own = {t: {u: r for u, r in users.items() if u == user_id} for t, users in by_type.items()}
                        own = {t: users for t, users in own.items() if users}
                        if own:
                            content[event_id] = own
                    event = {"type": "m.receipt", "content": content} if content else None
            else:
                after = since if status == LIVE else status
                assert after is not None
                changed = self.receipts.changed_since(room, after)
                event = self.receipts.event_for_sync(room, user_id, after, upto) if changed else None
            if event is not None:
                out[room_id] = event
            new.receipts[room_id] = LIVE
        if since is not None:
            for room_id, status in list(new.receipts.items()):
                if status != LIVE or room_id in rooms:
                    continue
                room = self.queries.room(room_id)
                if room is not None and self.receipts.changed_since(room, since):
                    new.receipts[room_id] = since
        return out

    def _typing(self, rooms: set[str], since: int | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for room_id in rooms:
            room = self.queries.room(room_id)
            if room is None:
                continue
            event = self.typing.event_for_sync(room, since)
            if event is not None:
                out[room_id] = event
        return out
