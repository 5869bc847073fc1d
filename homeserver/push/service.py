"""Push rules per user, their evaluation when an event is persisted, and the unread notification
counts they produce (spec: modules/push.md "Receiving notifications", "Marking notifications as read").

Every new timeline event is evaluated, while the pipeline writes it, for each local member of its
room (but its sender) and the invitee of an invite; the notifications are written in the event's
own batch, keyed by its stream position, so `/sync` reports the new counts with the event. Counts are the
notifications after the user's read point: the most advanced of their `m.read` and
`m.read.private` receipts and their own last event, per thread ("main" for the main timeline).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from homeserver.errors import MatrixError
from homeserver.locks import KeyedLocks
from homeserver.protocol.glob import compile_glob
from homeserver.protocol.power_levels import get_notification_level, get_user_power_level
from homeserver.push import rules as push_rules
from homeserver.push.evaluator import CompiledRuleset, EventContext, is_highlight, key_path
from homeserver.rooms.pipeline import PersistedEvent, RoomContext
from homeserver.rooms.tokens import parse_counter
from homeserver.sync.notifier import Notifier
from storage.cache import LruCache, function_cache_stats
from storage.database import Database
from storage.engine import Batch
from storage.events import BACKFILLED
from storage.push import NotificationGroup

log = logging.getLogger(__name__)

READ_RECEIPTS = ("m.read", "m.read.private")
MAX_THREAD_HOPS = 3  # spec: push "Marking notifications as read" — at most 3 hops to find a thread


class Counts:
    __slots__ = ("highlight_count", "notification_count")

    notification_count: int
    highlight_count: int

    def __init__(self, notification_count: int = 0, highlight_count: int = 0) -> None:
        self.notification_count = notification_count
        self.highlight_count = highlight_count

    def json(self) -> dict[str, int]:
        return {"notification_count": self.notification_count, "highlight_count": self.highlight_count}


class RoomCounts:
    """Unread counts of a room: all together, the main timeline alone, and per thread root."""

    __slots__ = ("main", "threads", "total")

    total: Counts
    main: Counts
    threads: dict[str, Counts]

    def __init__(
        self, total: Counts | None = None, main: Counts | None = None, threads: dict[str, Counts] | None = None
    ) -> None:
        self.total = Counts() if total is None else total
        self.main = Counts() if main is None else main
        self.threads = {} if threads is None else threads


class _CachedCounts:
    """A user's counts in a room, with what they were counted from: notifications up to position
    `scanned`, against the read points `unthreaded`/`threads`. New notifications after `scanned` only
    mark them `stale`, and the next read adds just those (a change of read points drops the entry)."""

    __slots__ = ("counts", "scanned", "stale", "threads", "unthreaded")

    counts: RoomCounts
    scanned: int
    unthreaded: int
    threads: dict[str, int]
    stale: bool

    def __init__(
        self, counts: RoomCounts, scanned: int, unthreaded: int, threads: dict[str, int], stale: bool = False
    ) -> None:
        self.counts = counts
        self.scanned = scanned
        self.unthreaded = unthreaded
        self.threads = threads
        self.stale = stale


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

    def __init__(
        self, groups: list[tuple[CompiledRuleset, list[str]]], ignorers: dict[str, frozenset[str]]
    ) -> None:
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

    def _power_levels(self) -> dict[str, Any] | None:
        if self._levels is _UNSET:
            self._levels = self._service._state_event(self._room, "m.room.power_levels")
        levels: dict[str, Any] | None = self._levels
        return levels

    def count_members(self) -> int:
        return self._service._member_count(self._room)

    def sender_power_level(self) -> int | float:
        create = self._service._state_event(self._room, "m.room.create")
        return get_user_power_level(str(self.event.get("sender")), self._power_levels(), create, self._version())

    def notification_level(self, key: str) -> int:
        return get_notification_level(self._power_levels(), key, self._version())

    def display_name(self, user_id: str) -> str | None:
        member = self._service._state_event(self._room, "m.room.member", user_id)
        name = (member or {}).get("content", {}).get("displayname")
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
        self, db: Database, notifier: Notifier, server_name: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.db = db
        self.notifier = notifier
        self.server_name = server_name
        self._local_suffix = ":" + server_name
        self.clock = clock
        # the budget's "push" share, split by how many entries each kind needs (storage/cache.py)
        caches = db.caches
        self._rulesets: LruCache[str, dict[str, list[dict[str, Any]]]] = caches.lru("push.rulesets", "push", part=0.1)
        self._compiled: LruCache[str, CompiledRuleset] = caches.lru("push.compiled_rules", "push", part=0.15)
        self._default = CompiledRuleset(push_rules.ruleset(None, None), push_rules.USER_ID)
        self._locks: KeyedLocks[str] = KeyedLocks()
        self._local_members: LruCache[int, list[str]] = caches.lru("push.local_members", "push", part=0.15)
        # joined members (local and remote), as committed
        self._member_counts: LruCache[int, int] = caches.lru("push.member_counts", "push", part=0.1)
        self._counts: LruCache[tuple[str, int], _CachedCounts] = caches.lru("push.unread_counts", "push", part=0.4)
        # local members of a room grouped by their rules
        self._room_rules: LruCache[int, _RoomRules] = caches.lru("push.room_rules", "push", part=0.1)
        # pure functions with small fixed caches (module level, shared by every server in a process)
        caches.add_reporter(function_cache_stats("glob_patterns", compile_glob, PATTERN_BYTES))
        caches.add_reporter(function_cache_stats("push.key_paths", key_path, 300))
        # who a user ignores (spec: ignore_users): their events notify nobody who ignores them
        self.ignored: Callable[[str], frozenset[str]] = lambda user_id: frozenset()

    def is_local(self, user_id: str) -> bool:
        return user_id.endswith(self._local_suffix)

    # -- rules -----------------------------------------------------------------------------------

    def record(self, user_id: str) -> dict[str, Any]:
        return self.db.push.rules(user_id) or {**push_rules.empty_record(), "stream": 0}

    def ruleset(self, user_id: str) -> dict[str, list[dict[str, Any]]]:
        found = self._rulesets.get(user_id)
        if found is None:
            found = push_rules.ruleset(self.db.push.rules(user_id), user_id)
            self._rulesets.put(user_id, found)
        return found

    def compiled(self, user_id: str) -> CompiledRuleset:
        """The user's rules ready for evaluation (one shared object for everyone on the defaults)."""
        found = self._compiled.get(user_id)
        if found is None:
            record = self.db.push.rules(user_id)
            found = self._default
            if record is not None:
                found = CompiledRuleset(push_rules.ruleset(record, None), push_rules.USER_ID)
            self._compiled.put(user_id, found)
        return found

    def rules_stream(self, user_id: str) -> int:
        record = self.db.push.rules(user_id)
        return int(record.get("stream", 0)) if record else 0

    def push_rules_event(self, user_id: str) -> dict[str, Any]:
        """spec: m.push_rules — the account data event carrying the user's whole ruleset."""
        return {"type": "m.push_rules", "content": {"global": self.ruleset(user_id)}}

    async def change_rules(self, user_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        async with self._locks(user_id):
            record = change(self.record(user_id))
            batch = self.db.store.batch()
            with batch:
                record["stream"] = batch.next_count()
                self.db.push.put_rules(user_id, record, batch)
                await batch.commit()
            self._rulesets.discard(user_id)
            self._compiled.discard(user_id)
            self._room_rules.clear()
        self.notifier.notify(users=(user_id,))

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
                and self.is_local(invitee)
                and invitee != sender
                and invitee not in self._members(room)
                and sender not in self.ignored(invitee)
            ):
                work = [*work, (self.compiled(invitee), [invitee], "*" not in invitee and "?" not in invitee)]
        own = isinstance(sender, str) and self.is_local(sender)
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
            self.db.push.add_notifications(
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
            self.db.push.set_last_sent(str(sender), room, thread, persisted.stream, batch)
        if notify or own:
            position = persisted.stream
            own_id = str(sender) if own else None

            def landed() -> None:
                counts = self._counts
                if not counts:
                    return
                for _, users in notify:
                    for user_id in users:
                        cached = counts.peek((user_id, room))
                        if cached is not None:
                            if position > cached.scanned:
                                cached.stale = True  # the next read counts the new notifications only
                            else:
                                counts.discard((user_id, room))
                if own_id is not None:
                    counts.discard((own_id, room))  # their read point moved

            batch.on_commit.append(landed)

    def _remember_counts(self, key: tuple[str, int], cached: _CachedCounts) -> None:
        self._counts.put(key, cached)

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
                rules = self.compiled(user_id)
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
            found = self.db.rooms.member_count(room, "join")
            self._member_counts.put(room, found)
        return found

    def _members(self, room: int) -> list[str]:
        found = self._local_members.get(room)
        if found is None:
            found = [u for u, _ in self.db.rooms.members(room, "join") if self.is_local(u)]
            self._local_members.put(room, found)
        return found

    def _state_event(self, room: int, event_type: str, state_key: str = "") -> dict[str, Any] | None:
        sk = self.db.ids.state_key(event_type, state_key)
        short = self.db.rooms.state_event(room, sk) if sk is not None else None
        return self.db.events.get_json(short) if short is not None else None

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
            short = self.db.ids.event(parent)
            current = self.db.events.get_json(short) if short is not None else None
            if current is None:
                return ""
        return ""

    # -- unread counts ---------------------------------------------------------------------------

    def event_position(self, short: int) -> int:
        """Where an event sits on the live timeline, for comparing with notifications (0: before all)."""
        meta = self.db.events.get_meta(short)
        if meta is None or meta.flags & BACKFILLED:
            return 0
        return meta.stream

    def read_points(self, user_id: str, room: int) -> tuple[int, dict[str, int]]:
        """(unthreaded read point, thread ("" = main) -> threaded read point)."""
        unthreaded = 0
        threads: dict[str, int] = {}
        for receipt in self.db.receipts.of_user(room, user_id):
            if receipt.receipt_type not in READ_RECEIPTS:
                continue
            if not receipt.thread_id:
                unthreaded = max(unthreaded, receipt.event_position)
            else:
                key = "" if receipt.thread_id == "main" else receipt.thread_id
                threads[key] = max(threads.get(key, 0), receipt.event_position)
        for thread, position in self.db.push.last_sent(user_id, room).items():
            threads[thread] = max(threads.get(thread, 0), position)
        return unthreaded, threads

    def counts(self, user_id: str, room: int) -> RoomCounts:
        key = (user_id, room)
        cached = self._counts.get(key)
        if cached is not None and not cached.stale:
            return cached.counts
        if cached is not None:
            # only notifications after the last count, against the same read points
            unthreaded, threads, after = cached.unthreaded, cached.threads, cached.scanned
            before = cached.counts
            out = RoomCounts(
                Counts(before.total.notification_count, before.total.highlight_count),
                Counts(before.main.notification_count, before.main.highlight_count),
                {t: Counts(c.notification_count, c.highlight_count) for t, c in before.threads.items()},
            )
        else:
            unthreaded, threads = self.read_points(user_id, room)
            after = min([unthreaded, *threads.values()]) if threads else unthreaded
            out = RoomCounts()
        scanned = after
        for unread in self.db.push.unread(user_id, room, after):
            scanned = max(scanned, unread.position)
            if unread.position <= max(unthreaded, threads.get(unread.thread_id, 0)):
                continue
            bucket = out.main if not unread.thread_id else out.threads.setdefault(unread.thread_id, Counts())
            for counts in (bucket, out.total):
                counts.notification_count += 1
                counts.highlight_count += unread.highlight
        self._remember_counts(key, _CachedCounts(out, scanned, unthreaded, threads))
        return out

    def forget_counts(self, user_id: str, room: int) -> None:
        """Receipts changed: recount next time."""
        self._counts.discard((user_id, room))

    # -- GET /notifications ----------------------------------------------------------------------

    def notifications(
        self, user_id: str, from_token: str | None, limit: int, only_highlight: bool
    ) -> tuple[list[tuple[int, dict[str, Any]]], str | None]:
        before = None
        if from_token:
            before = parse_counter(from_token)
            if before is None:
                raise MatrixError(400, "M_INVALID_PARAM", "from must be a token from an earlier response")
        out: list[tuple[int, dict[str, Any]]] = []
        next_token = None
        for stream, record in self.db.push.notifications(user_id, before=before):
            if only_highlight and not record.get("highlight"):
                continue
            if len(out) == limit:
                next_token = str(out[-1][0])
                break
            out.append((stream, record))
        return out, next_token

    def is_read(self, user_id: str, room: int, position: int, thread: str) -> bool:
        unthreaded, threads = self.read_points(user_id, room)
        return position <= max(unthreaded, threads.get(thread, 0))

    # -- pushers (spec: POST /pushers/set) -------------------------------------------------------

    def pushers(self, user_id: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in p.items() if not k.startswith("_")} for p in self.db.push.pushers(user_id)]

    async def set_pusher(self, user_id: str, device_id: str, body: Mapping[str, Any]) -> None:
        for name, limit in (("app_id", 64), ("pushkey", 512)):
            value = body.get(name)
            if not isinstance(value, str) or not value:
                raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameters: {name}")
            if len(value.encode()) > limit:
                raise MatrixError(400, "M_INVALID_PARAM", f"{name} is longer than {limit} bytes")
        app_id, pushkey = str(body["app_id"]), str(body["pushkey"])
        if "kind" not in body:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameters: kind")
        kind = body["kind"]
        batch = self.db.store.batch()
        with batch:
            if kind is None:
                self.db.push.delete_pusher(user_id, app_id, pushkey, batch)
                await batch.commit()
                return
            if not isinstance(kind, str):
                raise MatrixError(400, "M_INVALID_PARAM", "kind must be a string or null")
            missing = [
                n for n in ("app_display_name", "device_display_name", "lang", "data") if body.get(n) is None
            ]
            if missing:
                raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameters: {', '.join(missing)}")
            data = body["data"]
            if not isinstance(data, dict):
                raise MatrixError(400, "M_INVALID_PARAM", "data must be an object")
            for name in ("app_display_name", "device_display_name", "lang"):
                if not isinstance(body[name], str):
                    raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be a string")
            if kind == "http":
                url = data.get("url")
                if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                    raise MatrixError(400, "M_INVALID_PARAM", "'url' must be an http(s) URL for an http pusher")
                if not url.split("?", 1)[0].endswith("/_matrix/push/v1/notify"):
                    raise MatrixError(400, "M_INVALID_PARAM", "'url' must have the path /_matrix/push/v1/notify")
            elif kind != "email":
                raise MatrixError(400, "M_INVALID_PARAM", f"unknown pusher kind {kind!r}")
            pusher: dict[str, Any] = {
                "app_id": app_id,
                "pushkey": pushkey,
                "kind": kind,
                "app_display_name": body["app_display_name"],
                "device_display_name": body["device_display_name"],
                "lang": body["lang"],
                "data": data,
                "_device_id": device_id,
            }
            if isinstance(body.get("profile_tag"), str):
                pusher["profile_tag"] = body["profile_tag"]
            if not body.get("append", False):
                # spec: without `append`, other users' pushers with this app id and pushkey go
                for other in self.db.push.pusher_users(app_id, pushkey):
                    if other != user_id:
                        self.db.push.delete_pusher(other, app_id, pushkey, batch)
            self.db.push.put_pusher(user_id, pusher, batch)
            await batch.commit()
