"""Push at send time: every new timeline event is evaluated, while the pipeline writes it, for each
local member of its room (but its sender) and the invitee of an invite (spec: modules/push.md
"Receiving notifications"); the notifications are written in the event's own batch, keyed by its
stream position, so `/sync` reports the new counts with the event.

The push service is made of this evaluation and its parts, one module each: the users' rules
(`user_rules.py`), unread counts and the notification list (`notifications.py`), pushers (`pushers.py`),
and their delivery to push gateways (`delivery.py` over `gateway.py`), which sends from the same
notification rows: nothing more is written for pushers, the worker is told once the batch has landed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from homeserver.config import PushConfig
from homeserver.notifier import Notifier
from homeserver.protocol.addresses import AddressPolicy
from homeserver.protocol.events import Event
from homeserver.protocol.glob import compile_glob
from homeserver.protocol.power_levels import get_notification_level, get_user_power_level
from homeserver.push.delivery import PushDelivery
from homeserver.push.evaluator import CompiledRuleset, EventContext, is_highlight, key_path
from homeserver.push.gateway import GatewayClient
from homeserver.push.notifications import Notifications
from homeserver.push.pushers import Pushers
from homeserver.push.user_rules import PushRules
from homeserver.rooms.pipeline import PersistedEvent, RoomContext
from homeserver.rooms.queries import RoomQueries
from storage.cache import CacheRegistry, LruCache, function_cache_stats
from storage.engine import Batch, Store
from storage.push import NotificationGroup, PushStore

if TYPE_CHECKING:
    from homeserver.ephemeral.receipts import Receipts

log = logging.getLogger(__name__)

MAX_THREAD_HOPS = 3  # spec: push "Marking notifications as read" — at most 3 hops to find a thread


_NOBODY: frozenset[str] = frozenset()
_UNSET = object()

# one ruleset's share of an event's audience: the ruleset, its users, and whether no user id there
# has a glob character (`*`, `?`: then users the event does not name get one answer together)
_Audience = tuple[CompiledRuleset, list[str], bool]


PATTERN_BYTES = 2_000  # a compiled regular expression (tracemalloc, typical push patterns)


class _RoomRules:
    """The local members of a room by their rules, kept until its membership, someone's rules or
    ignore list change; with, per sender, whom their events are evaluated for."""

    __slots__ = ("_audiences", "groups", "ignored", "ignorers", "members")

    groups: list[tuple[CompiledRuleset, list[str]]]  # members sharing one ruleset
    ignorers: dict[str, frozenset[str]]  # members who ignore someone -> whom

    def __init__(self, groups: list[tuple[CompiledRuleset, list[str]]], ignorers: dict[str, frozenset[str]]) -> None:
        self.groups = groups
        self.ignorers = ignorers
        self.members = frozenset(u for _, users in groups for u in users)
        self.ignored: frozenset[str] = frozenset().union(*ignorers.values())  # ignored by some member
        self._audiences: dict[str, list[_Audience]] = {}

    def audience(self, sender: Any) -> list[_Audience]:
        """Whom an event of `sender` is evaluated for: the members but the sender and those who
        ignore them, by ruleset (a shared list: do not change it)."""
        if not isinstance(sender, str):
            return self._audience(sender)
        found = self._audiences.get(sender)
        if found is None:
            if sender in self.members or sender in self.ignored:
                found = self._audience(sender)
            else:
                found = self._audiences.get("")  # everyone: shared by the senders no member is or ignores
                if found is None:
                    found = self._audiences[""] = self._audience(None)
            # bounded by the references held: sender-specific lists are as long as the membership
            if len(self._audiences) >= max(16, 65_536 // (len(self.members) + 1)):
                self._audiences.clear()
            self._audiences[sender] = found
        return found

    def _audience(self, sender: Any) -> list[_Audience]:
        out: list[_Audience] = []
        for rules, members in self.groups:
            users = [u for u in members if u != sender]
            if self.ignorers:
                users = [u for u in users if sender not in self.ignorers.get(u, _NOBODY)]
            if users:
                out.append((rules, users, not any("*" in u or "?" in u for u in users)))
        return out


class _RoomEventContext(EventContext):
    """What push conditions ask about an event's room, looked up when first asked (most events ask
    nothing but maybe the member count)."""

    __slots__ = ("_info", "_levels", "_room", "_service")

    def __init__(self, service: PushService, room: int, info: Mapping[str, Any], event: Mapping[str, Any]) -> None:
        # the room questions are answered by the methods below, not by callables: no super().__init__
        self.event = event
        self.memo = {}
        self._members = None
        self._power = None
        self._service = service
        self._room = room
        self._info = info
        self._levels: Any = _UNSET

    def _version(self) -> str:
        return str(self._info.get("version", "10"))

    def _state(self, event_type: str, state_key: str = "") -> Event | None:
        return self._service.queries.current_state_event(self._room, event_type, state_key)

    def _power_levels(self) -> Mapping[str, Any] | None:
        if self._levels is _UNSET:
            levels = self._state("m.room.power_levels")
            self._levels = levels.raw if levels is not None else None
        found: Mapping[str, Any] | None = self._levels
        return found

    def count_members(self) -> int:
        return self._service._member_count(self._room)

    def sender_power_level(self) -> int | float:
        create = self._state("m.room.create")
        raw = create.raw if create is not None else None
        return get_user_power_level(str(self.event.get("sender")), self._power_levels(), raw, self._version())

    def notification_level(self, key: str) -> int:
        return get_notification_level(self._power_levels(), key, self._version())

    def display_name(self, user_id: str) -> str | None:
        member = self._state("m.room.member", user_id)
        name = member.content.get("displayname") if member is not None else None
        return name if isinstance(name, str) else None


def _merge(found: list[tuple[list[Any], list[str]]]) -> list[tuple[list[Any], list[str]]]:
    """Users whose rules gave the same actions (the same list) share one notification group."""
    merged: dict[int, tuple[list[Any], list[str]]] = {}
    for actions, who in found:
        group = merged.get(id(actions))
        if group is None:
            merged[id(actions)] = (actions, list(who))
        else:
            group[1].extend(who)
    return list(merged.values())


class PushService:
    def __init__(
        self,
        store: Store,
        push: PushStore,
        caches: CacheRegistry,
        queries: RoomQueries,
        receipts: Receipts,
        notifier: Notifier,
        clock: Callable[[], float] = time.time,
        *,
        ignored: Callable[[str], frozenset[str]],
        settings: PushConfig | None = None,
    ) -> None:
        settings = settings if settings is not None else PushConfig()
        self.push = push
        self.queries = queries
        self.clock = clock
        self.rules = PushRules(store, push, notifier, caches)
        self.rules.change_listeners.append(lambda user_id: self._room_rules.clear())
        # the budget's "push" share, split by how many entries each kind needs (storage/cache.py)
        self._local_members: LruCache[int, list[str]] = caches.lru("push.local_members", "push", part=0.15)
        # joined members (local and remote), as committed
        self._member_counts: LruCache[int, int] = caches.lru("push.member_counts", "push", part=0.1)
        self.notifications = Notifications(push, receipts, caches)
        # local members of a room grouped by their rules
        self._room_rules: LruCache[int, _RoomRules] = caches.lru("push.room_rules", "push", part=0.1)
        # pure functions with small fixed caches (module level, shared by every server in a process)
        caches.add_reporter(function_cache_stats("glob_patterns", compile_glob, PATTERN_BYTES))
        caches.add_reporter(function_cache_stats("push.key_paths", key_path, 300))
        policy = AddressPolicy(settings.ip_range_allow)
        gateways = GatewayClient(
            policy,
            timeout_s=settings.timeout_s,
            max_connections=settings.max_connections,
            per_gateway=settings.max_connections_per_gateway,
        )
        self.delivery = PushDelivery(
            store, push, queries, self.notifications, gateways, clock, include_content=settings.include_content
        )
        self.pushers = Pushers(store, push, policy, self.delivery.pushers_changed, clock)
        # who a user ignores (spec: ignore_users): their events notify nobody who ignores them
        self.ignored = ignored

    # -- evaluation at send time -----------------------------------------------------------------

    def write_hook(self, batch: Batch, ctx: RoomContext, persisted: PersistedEvent) -> None:
        """Evaluate an event while the pipeline writes it (`EventPipeline.write_hooks`): its
        notifications commit in the same batch, so the counts reach `/sync` with the event itself
        (spec: push "Server behaviour" — in the same /sync response as the event)."""
        if not persisted.stream or persisted.rejected or persisted.soft_failed:
            return
        room = ctx.room_short
        event = persisted.event
        etype = event.get("type")
        changed = persisted.state_changed
        if etype == "m.room.member" or (changed and any(k[0] == "m.room.member" for k in changed)):
            batch.on_commit.append(lambda: self.forget_members(room))
        sender = event.get("sender")
        # the local members but the sender (and those who ignore them), by the rules they have
        work = self._rules_in_room(room).audience(sender)
        if etype == "m.room.member" and event.get("content", {}).get("membership") == "invite":
            invitee = event.get("state_key")
            if (
                isinstance(invitee, str)
                and self.queries.is_local(invitee)
                and invitee != sender
                and invitee not in self._members(room)
                and sender not in self.ignored(invitee)
            ):
                work = [*work, (self.rules.compiled(invitee), [invitee], "*" not in invitee and "?" not in invitee)]
        own = isinstance(sender, str) and self.queries.is_local(sender)
        if not work and not own:
            return
        thread = self.thread_of(event)
        event_ctx = _RoomEventContext(self, room, ctx.info, event)
        notify: list[tuple[list[Any], list[str]]] = []  # actions, and the users they notify
        for rules, users, globless in work:
            try:
                answers = rules.evaluate_many(event_ctx, users, globless)
            except Exception:  # one broken ruleset must not stop the others
                log.exception("push rule evaluation failed for %s", ", ".join(users))
                continue
            for actions, who in answers:
                if actions and "notify" in actions:
                    notify.append((actions, who))
        if len(notify) > 1:
            notify = _merge(notify)  # users whose rules give the same actions share one notification record
        if notify:
            self.push.add_notifications(
                persisted.room_id,
                room,
                persisted.stream,
                persisted.short,
                int(self.clock() * 1000),
                thread,
                [NotificationGroup(actions, is_highlight(actions), users) for actions, users in notify],
                batch,
            )
        if own:
            self.push.set_last_sent(str(sender), room, thread, persisted.stream, batch)
        if notify or own:
            position, own_id = persisted.stream, str(sender) if own else None
            notified = [users for _, users in notify]
            batch.on_commit.append(lambda: self._landed(room, position, notified, own_id))

    def _landed(self, room: int, position: int, notified: list[list[str]], sender: str | None) -> None:
        """An event's notifications landed: cached counts learn of them, and pushers are owed them."""
        self.notifications.landed(room, position, notified, sender)
        if notified:
            self.delivery.notified(room, position, notified)

    def forget_members(self, room: int) -> None:
        self._local_members.discard(room)
        self._member_counts.discard(room)
        self._room_rules.discard(room)

    def ignores_changed(self, user_id: str) -> None:
        """Someone's ignore list changed (an `AccountData` listener)."""
        self._room_rules.clear()

    def _rules_in_room(self, room: int) -> _RoomRules:
        found = self._room_rules.get(room)
        if found is None:
            by_rules: dict[int, tuple[CompiledRuleset, list[str]]] = {}
            ignorers: dict[str, frozenset[str]] = {}
            for user_id in self._members(room):
                rules = self.rules.compiled(user_id)
                entry = by_rules.get(id(rules))
                if entry is None:
                    by_rules[id(rules)] = (rules, [user_id])
                else:
                    entry[1].append(user_id)
                ignoring = self.ignored(user_id)
                if ignoring:
                    ignorers[user_id] = ignoring
            found = _RoomRules(list(by_rules.values()), ignorers)
            self._room_rules.put(room, found)
        return found

    def _member_count(self, room: int) -> int:
        found = self._member_counts.get(room)
        if found is None:
            found = self.queries.member_count(room)
            self._member_counts.put(room, found)
        return found

    def _members(self, room: int) -> list[str]:
        found = self._local_members.get(room)
        if found is None:
            found = self.queries.local_joined_members(room)
            self._local_members.put(room, found)
        return found

    def thread_of(self, event: Mapping[str, Any]) -> str:
        """The thread root id of an event, or "" for the main timeline (spec: threading; 3 hops)."""
        content = event.get("content")
        if type(content) is dict and "m.relates_to" not in content:
            return ""  # most events relate to nothing
        current: Mapping[str, Any] | None = event
        for _ in range(MAX_THREAD_HOPS):
            content = current.get("content") if current is not None else None
            relation = content.get("m.relates_to") if isinstance(content, Mapping) else None
            if not isinstance(relation, Mapping):
                return ""
            parent = relation.get("event_id")
            if relation.get("rel_type") == "m.thread":
                return parent if isinstance(parent, str) else ""
            if not isinstance(parent, str):
                reply = relation.get("m.in_reply_to")
                parent = reply.get("event_id") if isinstance(reply, Mapping) else None
            if not isinstance(parent, str):
                return ""
            short = self.queries.event_short(parent)
            found = self.queries.event(short) if short is not None else None
            current = found.raw if found is not None else None
            if current is None:
                return ""
        return ""
