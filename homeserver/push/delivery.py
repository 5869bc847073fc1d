"""The pusher worker: every notification of a user with pushers reaches each of their HTTP pushers'
gateways, once, in order (spec: modules/push.md "Push gateway", push-gateway-api).

What is owed is what the event's batch stores anyway: a row per notified user (`storage/push.py`
notify_room, which also feeds the counts and `/notifications`). Each pusher keeps the stream position
of the last notification its gateway took (`pusher_positions`) and is owed the user's notifications
after it. A restart resends what was not acknowledged and never what was: the position moves only
after the gateway answered.

Nothing is written for pushers on the send path: once an event's batch has landed, the worker is
told which of its notified users have pushers (`notified`) and keeps, per such user, the positions
it was told of in memory, so a pusher finds its next notification without reading the store. Below
what memory holds (at start, for a new pusher, or once the memory bound dropped it), a pusher reads
the user's notifications from the store from its position.

One task per pusher with work, gone once it has caught up (tasks follow the pushers that are behind,
not the users). A failed request is retried after 1 s, doubling up to an hour; a notification older
than a day is skipped rather than delivered late (as Synapse does). A pushkey the gateway `rejected`
loses its pusher. Requests have a deadline and connections per gateway are capped (`gateway.py`), so
one slow or dead gateway delays only its own pushers.

Badge updates: when a read receipt moves, each pusher is sent the user's new unread count (a
notification with counts and devices only), if it changed since the last one sent to it. These are
not kept through a restart: the next notification carries the count anyway.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from homeserver.push.gateway import GatewayClient, GatewayError, counts_of, device_of, tweaks_of
from homeserver.push.notifications import Notifications
from homeserver.rooms.queries import RoomQueries
from storage.engine import Store
from storage.push import PushStore

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 3600.0
STALE_AFTER_S = 24 * 3600.0
MAX_BADGES_REMEMBERED = 10_000
IN_FLIGHT_POLL_S = 0.005
# notifications held in memory for all users (a list slot each: the (position, room) pair is shared
# by the users of one event); beyond it, pushers read what they are owed from the store
MAX_REMEMBERED = 200_000
STORE_READ = 64  # notifications read from the store at once by a pusher below what memory holds
_AFTER = 1 << 64  # sorts after any room: (position, _AFTER) follows every entry at position

PusherKey = tuple[str, str, str]  # user, app id, pushkey
Owed = tuple[int, int]  # position, room


class _Pending:
    __slots__ = ("badge", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.badge = False


class _User:
    """A user with HTTP pushers, and their notifications that memory holds: every one that landed
    with a position above `since` is in `owed`, oldest first (below `since`, ask the store)."""

    __slots__ = ("owed", "pushers", "since")

    def __init__(self, pushers: tuple[PusherKey, ...], since: int) -> None:
        self.pushers = pushers
        self.since = since
        self.owed: list[Owed] = []  # the same list all along (`PushDelivery._owed` holds it too)


class PushDelivery:
    def __init__(
        self,
        store: Store,
        push: PushStore,
        queries: RoomQueries,
        notifications: Notifications,
        client: GatewayClient,
        clock: Callable[[], float] = time.time,
        *,
        include_content: bool = True,
        retry_first_s: float = RETRY_FIRST_S,
        retry_max_s: float = RETRY_MAX_S,
        stale_after_s: float = STALE_AFTER_S,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        max_remembered: int = MAX_REMEMBERED,
    ) -> None:
        self.store = store
        self.push = push
        self.queries = queries
        self.notifications = notifications
        self.client = client
        self.clock = clock
        self.include_content = include_content
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        self.stale_after_s = stale_after_s
        self.sleep = sleep
        self.max_remembered = max_remembered
        # every user with an HTTP pusher (email pushers are not sent to): the send path asks for each
        # notified user, one dict lookup
        self._users: dict[str, _User] = {}
        self._owed: dict[str, list[Owed]] = {}  # user -> their `owed` list: the send path's one lookup
        self._idle: set[str] = set()  # users of whom some pusher may have no task
        self._newest = 0  # the highest position notified: a later one is appended to every list
        self._remembered = 0  # entries in all users' `owed`
        for user_id in push.users_with_pushers():
            self.pushers_changed(user_id)
        self._pending: dict[PusherKey, _Pending] = {}
        self._caught_up: set[PusherKey] = set()  # pushers whose last task found nothing more owed
        self._badges: dict[PusherKey, int] = {}  # last unread count sent (bounded)
        self._started = False
        self._closed = False

    # -- what the rest of the push service tells it ----------------------------------------------

    def has_pushers(self, user_id: str) -> bool:
        return user_id in self._users

    def start(self) -> None:
        """Resume: every pusher gets a task, which reads from the store what it is owed."""
        self.push.settle_positions(self.store.counter.high)
        self._started = True
        for user_id in list(self._idle):
            self._wake(user_id)

    async def close(self) -> None:
        self._save_caught_up()
        self._closed = True
        tasks = [p.task for p in self._pending.values() if p.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()
        await self.client.close()

    def _save_caught_up(self) -> None:
        """On the way out: a pusher that caught up (its task left with nothing owed, and none of its
        user's notifications landed since, or it would have been woken) is owed nothing up to the
        visible position; storing that spares it reading the store after the restart. Synchronous,
        so nothing lands between reading the position and writing it."""
        visible = self.store.counter.visible
        batch = self.store.batch()
        with batch:
            for key in self._caught_up:
                if self.push.has_pusher(*key) and self.push.pusher_position(*key) < visible:
                    self.push.set_pusher_position(*key, visible, batch)
            if batch.ops:
                self.store.commit_now(batch)
        self._caught_up.clear()

    def pushers_changed(self, user_id: str) -> None:
        """The user's pushers were set or deleted (after the batch committed)."""
        keys = tuple(
            (user_id, p["app_id"], p["pushkey"]) for p in self.push.pushers(user_id) if p.get("kind") == "http"
        )
        user = self._users.get(user_id)
        if not keys:
            if user is not None:
                del self._users[user_id], self._owed[user_id]
                self._idle.discard(user_id)
                self._remembered -= len(user.owed)
            return
        if user is None:
            # what lands from now on is remembered; what landed before is in the store
            user = self._users[user_id] = _User(keys, self.store.counter.high)
            self._owed[user_id] = user.owed
        user.pushers = keys
        self._idle.add(user_id)

    def notified(self, room: int, position: int, groups: Iterable[list[str]]) -> None:
        """The notifications at `position` (in `room`) of these users have landed: their pushers
        are owed them. On the send path: the users with pushers found in C, an append for each."""
        lists = self._owed
        if not lists:
            return
        entry = (position, room)
        in_order = position > self._newest
        if in_order:
            self._newest = position
        for user_ids in groups:
            owed = lists.keys() & user_ids
            if not owed:
                continue
            if in_order:
                for user_id in owed:
                    lists[user_id].append(entry)
            else:  # landed after a later position did
                for user_id in owed:
                    bisect.insort(lists[user_id], entry)
            self._remembered += len(owed)
            if self._idle:
                for user_id in self._idle & owed:
                    self._wake(user_id)
        if self._remembered > self.max_remembered:
            self._forget_owed()

    def _forget_owed(self) -> None:
        """Memory is full: every user's pushers read what they are owed from the store instead."""
        for user in self._users.values():
            if user.owed:
                user.since = max(user.since, user.owed[-1][0])
                user.owed.clear()
        self._remembered = 0

    def read_moved(self, user_id: str, room: int) -> None:
        """A read receipt moved (a `Receipts` read listener): the badge may have changed."""
        user = self._users.get(user_id)
        for key in user.pushers if user is not None else ():
            self._pending_for(key).badge = True

    def _wake(self, user_id: str) -> None:
        user = self._users.get(user_id)
        if user is None or not self._started or self._closed:
            return
        self._idle.discard(user_id)
        for key in user.pushers:
            self._pending_for(key)

    def _pending_for(self, key: PusherKey) -> _Pending:
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
        elif pending.task is not None:
            return pending  # running: it looks at what is owed again before it stops
        if self._started and not self._closed:
            self._caught_up.discard(key)
            pending.task = asyncio.get_running_loop().create_task(self._run(key, pending))
        return pending

    # -- one pusher's task -----------------------------------------------------------------------

    async def _run(self, key: PusherKey, pending: _Pending) -> None:
        user_id, app_id, pushkey = key
        from_store: deque[Owed] = deque()  # read from the store, below what memory holds
        try:
            while True:
                user = self._users.get(user_id)
                pusher = self._pusher(key) if user is not None else None
                if user is None or pusher is None:
                    return
                position = self.push.pusher_position(user_id, app_id, pushkey)
                owed, landed = self._next_owed(user_id, user, position, from_store)
                if not landed:
                    # a write with a smaller position may still land: moving past this one now could
                    # skip it for good (storage/engine.py StreamCounter); such writes take milliseconds
                    await self.sleep(IN_FLIGHT_POLL_S)
                elif owed is not None:
                    await self._deliver(key, owed[0], owed[1])
                elif pending.badge:
                    pending.badge = False
                    await self._send_badge(key, pusher)
                else:
                    self._caught_up.add(key)
                    return  # caught up: no await between the last look and leaving
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("push: the task of a pusher of %s failed", user_id)
        finally:
            if self._pending.get(key) is pending:
                del self._pending[key]
                if user_id in self._users:
                    self._idle.add(user_id)

    def _next_owed(self, user_id: str, user: _User, position: int, from_store: deque[Owed]) -> tuple[Owed | None, bool]:
        """The first notification after `position` (None: none), and whether everything up to it
        has landed (if not, wait: one below it may still come)."""
        visible = self.store.counter.visible
        while from_store and from_store[0][0] <= position:
            from_store.popleft()
        if not from_store and position < user.since:
            if user.since > visible:
                return None, False  # the store is complete up to `since` only once it is visible
            from_store.extend(self.push.notified_after(user_id, position, user.since, STORE_READ))
        if from_store:
            return from_store[0], True
        owed = user.owed
        i = bisect.bisect_right(owed, (position, _AFTER))
        if i == len(owed):
            return None, True
        return owed[i], owed[i][0] <= visible

    def _pusher(self, key: PusherKey) -> dict[str, Any] | None:
        user_id, app_id, pushkey = key
        for pusher in self.push.pushers(user_id):
            if pusher["app_id"] == app_id and pusher["pushkey"] == pushkey:
                return pusher if pusher.get("kind") == "http" else None
        return None

    async def _deliver(self, key: PusherKey, position: int, room: int) -> None:
        """Deliver the notification at `position`, retrying until taken, refused for good, stale, or
        the pusher gone; then move the pusher past it."""
        user_id = key[0]
        delay = self.retry_first_s
        while True:
            pusher = self._pusher(key)
            if pusher is None:
                return
            body, ts = self._notification(user_id, pusher, room, position)
            if body is None or self.clock() - ts / 1000 > self.stale_after_s:
                break  # gone (redacted room, purged) or too old to ring a phone for
            try:
                rejected = await self.client.notify(pusher["data"]["url"], body)
            except GatewayError as e:
                if e.permanent:
                    log.warning("push: %s refused a notification for %s: %s", pusher["data"]["url"], user_id, e)
                    break
                log.info(
                    "push: %s unreachable for %s, retrying in %.0f s: %s", pusher["data"]["url"], user_id, delay, e
                )
                await self.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
                continue
            if key[2] in rejected:
                await self._delete(key)
                return
            self._remember_badge(key, body["notification"]["counts"].get("unread", 0))
            break
        await self._advance(key, position)

    async def _advance(self, key: PusherKey, position: int) -> None:
        user_id, app_id, pushkey = key
        batch = self.store.batch()
        with batch:
            if not self.push.has_pusher(user_id, app_id, pushkey):
                return  # deleted meanwhile: no position row for a pusher that is gone
            self.push.set_pusher_position(user_id, app_id, pushkey, position, batch)
            await batch.commit()
        user = self._users.get(user_id)
        if user is not None and user.owed and user.owed[0][0] <= position:
            # what every pusher of the user has passed is no longer needed
            others = [self.push.pusher_position(*other) for other in user.pushers if other != key]
            passed = bisect.bisect_right(user.owed, (min([position, *others]), _AFTER))
            del user.owed[:passed]
            self._remembered -= passed

    async def _delete(self, key: PusherKey) -> None:
        """The gateway rejected the pushkey (spec: "Homeservers must cease sending notification
        requests for these pushkeys and remove the associated pushers")."""
        user_id, app_id, pushkey = key
        log.info("push: the gateway rejected a pushkey of %s (app %s): pusher removed", user_id, app_id)
        batch = self.store.batch()
        with batch:
            self.push.delete_pusher(user_id, app_id, pushkey, batch)
            await batch.commit()
        self._badges.pop(key, None)
        self.pushers_changed(user_id)

    # -- what is sent ----------------------------------------------------------------------------

    def unread(self, user_id: str) -> int:
        """spec: Counts "unread" — unread messages across all the user's rooms."""
        return sum(
            self.notifications.counts(user_id, room).total.notification_count
            for room in self.queries.joined_rooms(user_id)
        )

    def _notification(
        self, user_id: str, pusher: Mapping[str, Any], room: int, position: int
    ) -> tuple[dict[str, Any] | None, int]:
        """The body of the notification at `position` for this pusher, and its time (ms)."""
        found = self.push.notification_at(user_id, room, position)
        if found is None:
            return None, 0
        record, highlight, actions = found
        event = self.queries.event(int(record["event"]))
        if event is None or event.event_id is None:
            return None, 0
        tweaks = tweaks_of(actions)
        # spec leaves prio to us: high when it should ring (a mention, a sound) or cannot be read by
        # the gateway (encrypted: the app decrypts it to decide)
        high = highlight or event.type == "m.room.encrypted" or "sound" in tweaks
        note: dict[str, Any] = {
            "event_id": event.event_id,
            "room_id": record["room_id"],
            "counts": counts_of(self.unread(user_id)),
            "prio": "high" if high else "low",
            "devices": [device_of(pusher, tweaks)],
        }
        if (pusher.get("data") or {}).get("format") != "event_id_only":
            note["type"] = event.type
            note["sender"] = event.sender
            sender = self.queries.current_state_event(room, "m.room.member", event.sender)
            name = sender.content.get("displayname") if sender is not None else None
            if isinstance(name, str) and name:
                note["sender_display_name"] = name
            room_name = self.queries.current_state_event(room, "m.room.name")
            value = room_name.content.get("name") if room_name is not None else None
            if isinstance(value, str) and value:
                note["room_name"] = value
            alias_event = self.queries.current_state_event(room, "m.room.canonical_alias")
            alias = alias_event.content.get("alias") if alias_event is not None else None
            if isinstance(alias, str) and alias:
                note["room_alias"] = alias
            if event.type == "m.room.member":
                note["user_is_target"] = event.state_key == user_id
            if self.include_content and event.content:
                note["content"] = dict(event.content)
        return {"notification": note}, int(record.get("ts") or 0)

    async def _send_badge(self, key: PusherKey, pusher: Mapping[str, Any]) -> None:
        unread = self.unread(key[0])
        if self._badges.get(key) == unread:
            return
        body = {"notification": {"counts": {"unread": unread}, "devices": [device_of(pusher, {})]}}
        try:
            rejected = await self.client.notify(pusher["data"]["url"], body)
        except GatewayError as e:
            log.info("push: badge update to %s failed: %s", pusher["data"]["url"], e)
            return  # counts are idempotent: the next notification carries them
        if key[2] in rejected:
            await self._delete(key)
            return
        self._remember_badge(key, unread)

    def _remember_badge(self, key: PusherKey, unread: int) -> None:
        if len(self._badges) >= MAX_BADGES_REMEMBERED:
            self._badges.clear()
        self._badges[key] = unread
