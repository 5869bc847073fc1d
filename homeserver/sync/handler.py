"""GET /sync (spec: client-server-api "Syncing"; DESIGN.md "Sync").

`since` and `next_batch` are positions on the global stream (`s<N>`): the response holds what
changed in (since, next_batch]. A long-polling sync registers with the notifier before it reads,
then reads again each time a write concerning it lands, until it has something or times out.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from homeserver.account_data.service import AccountData
from homeserver.ephemeral.presence import Presence
from homeserver.notifier import Notifier
from homeserver.push.service import PushService
from homeserver.rooms.membership import INVITE_PERMISSION_CONFIG, blocks_invites
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.tokens import parse_stream_token, stream_token
from homeserver.sync.filters import SyncFilter
from homeserver.sync.rooms import RoomSync, SyncParams

MAX_TIMEOUT_MS = 5 * 60 * 1000

Extensions = Callable[[str, str, "int | None", int], Awaitable[dict[str, Any]]]


class SyncRequest:
    __slots__ = (
        "device_id",
        "filter",
        "full_state",
        "set_presence",
        "since",
        "timeout_ms",
        "use_state_after",
        "user_id",
    )

    user_id: str
    device_id: str
    since: str | None
    filter: SyncFilter
    timeout_ms: int
    full_state: bool
    use_state_after: bool
    set_presence: str | None

    def __init__(
        self,
        user_id: str,
        device_id: str,
        since: str | None,
        filter: SyncFilter,
        timeout_ms: int = 0,
        full_state: bool = False,
        use_state_after: bool = False,
        set_presence: str | None = None,
    ) -> None:
        self.user_id = user_id
        self.device_id = device_id
        self.since = since
        self.filter = filter
        self.timeout_ms = timeout_ms
        self.full_state = full_state
        self.use_state_after = use_state_after
        self.set_presence = set_presence


class SyncHandler:
    def __init__(
        self,
        queries: RoomQueries,
        notifier: Notifier,
        rooms: RoomSync,
        account_data: AccountData,
        push: PushService,
        presence: Presence,
        extensions: Extensions | None = None,
    ) -> None:
        self.queries = queries
        self.notifier = notifier
        self.rooms = rooms
        self.account_data = account_data
        self.push = push
        self.presence = presence
        self.extensions = extensions

    async def sync(self, req: SyncRequest) -> dict[str, Any]:
        since = parse_stream_token(req.since) if req.since else None
        if since is not None:
            # a token from the future (the counter lost an unwritten tail in a crash): nothing after it yet
            since = min(since, self.notifier.token)
        await self.presence.syncing(req.user_id, req.set_presence)
        timeout = min(max(req.timeout_ms, 0), MAX_TIMEOUT_MS) / 1000
        if since is None or req.full_state or timeout <= 0:
            return await self._compute(req, since, self.notifier.token)
        deadline = time.monotonic() + timeout
        with self.notifier.listen(req.user_id, self.queries.joined_rooms(req.user_id)) as waiter:
            while True:
                waiter.reset()  # registered before reading: a write after this read wakes us
                upto = self.notifier.token
                response, empty = await self._compute_checked(req, since, upto)
                remaining = deadline - time.monotonic()
                if not empty or remaining <= 0:
                    return response
                await waiter.wait(remaining)

    async def _compute(self, req: SyncRequest, since: int | None, upto: int) -> dict[str, Any]:
        return (await self._compute_checked(req, since, upto))[0]

    async def _compute_checked(self, req: SyncRequest, since: int | None, upto: int) -> tuple[dict[str, Any], bool]:
        f = req.filter
        changed_data: list[tuple[str, str]] = []
        if since is not None:
            changed_data = self.account_data.changed(req.user_id, since, upto)
        p = SyncParams(
            req.user_id,
            req.device_id,
            since,
            upto,
            f,
            full_state=req.full_state,
            use_state_after=req.use_state_after,
            account_data_rooms={room for room, _ in changed_data if room},
            ignored=self.account_data.ignored(req.user_id),
        )
        rooms = self._rooms(p)
        account_data = self._global_account_data(p, changed_data)
        presence = self._presence(p, rooms["join"])
        response: dict[str, Any] = {
            "next_batch": stream_token(upto),
            "account_data": {"events": account_data},
            "presence": {"events": presence},
            "rooms": rooms,
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            "device_unused_fallback_key_types": [],
        }
        if self.extensions is not None:
            response.update(await self.extensions(req.user_id, req.device_id, since, upto))
        lists = response.get("device_lists") or {}
        empty = not (
            account_data
            or presence
            or any(rooms[k] for k in ("join", "invite", "leave", "knock"))
            or response["to_device"].get("events")
            or lists.get("changed")
            or lists.get("left")
        )
        return response, empty

    def _rooms(self, p: SyncParams) -> dict[str, dict[str, Any]]:
        join: dict[str, Any] = {}
        invite: dict[str, Any] = {}
        leave: dict[str, Any] = {}
        knock: dict[str, Any] = {}
        f = p.filter
        since = p.since
        for ur in self.queries.memberships(p.user_id):
            membership: str | None = ur.membership
            if ur.stream > p.upto:
                # the membership changed after `upto`: this response shows the room as it was then
                # (if joined), the next one reports the change
                membership = self.rooms.membership_at(ur.room, p.user_id, p.upto)
                if membership != "join":
                    continue
            room_id = self.queries.room_id(ur.room)
            if not f.allows_room(room_id):
                continue
            changed = since is None or ur.stream > since
            if membership == "join":
                # a join since the last sync (not a profile change of a member) brings the whole room
                newly_joined = (
                    since is not None and changed and self.rooms.membership_at(ur.room, p.user_id, since) != "join"
                )
                entry = self.rooms.joined(ur, room_id, p, newly_joined=newly_joined)
                if entry is not None:
                    join[room_id] = entry
            elif ur.membership == "invite":
                if changed and not self._from_ignored(ur.event, p) and not self._invites_blocked(p):
                    invite[room_id] = {"invite_state": {"events": self.rooms.stripped(ur, p)}}
            elif ur.membership == "knock":
                if changed:
                    knock[room_id] = {"knock_state": {"events": self.rooms.stripped(ur, p)}}
            elif ur.membership in ("leave", "ban") and (f.include_leave if since is None else changed):
                # spec: RoomFilter.include_leave — left rooms in an initial sync only when asked;
                # an incremental sync always tells that the user left
                entry = self.rooms.left(ur, room_id, p)
                if entry is not None:
                    leave[room_id] = entry
        return {"join": join, "invite": invite, "leave": leave, "knock": knock}

    def _invites_blocked(self, p: SyncParams) -> bool:
        """spec: invite permission — while a user blocks invites, invites are not served over /sync."""
        return blocks_invites(self.account_data.get(p.user_id, INVITE_PERMISSION_CONFIG))

    def _from_ignored(self, event: int, p: SyncParams) -> bool:
        """spec: ignore_users — "Servers must not send room invites from ignored users"."""
        invite = self.queries.event(event)
        return invite is not None and invite.sender in p.ignored

    def _global_account_data(self, p: SyncParams, changed: list[tuple[str, str]]) -> list[dict[str, Any]]:
        f = p.filter.account_data
        out: list[dict[str, Any]] = []
        if p.since is None:
            for data_type, content in self.account_data.all_of(p.user_id):
                out.append({"type": data_type, "content": content})
        else:
            for room_id, data_type in changed:
                if room_id:
                    continue
                current = self.account_data.get(p.user_id, data_type)
                if current is not None:
                    out.append({"type": data_type, "content": current})
        if p.since is None or self.push.rules.rules_stream(p.user_id) > p.since:
            out.append(self.push.rules.push_rules_event(p.user_id))
        return [e for e in out if f.allows(e)]

    def _presence(self, p: SyncParams, joined: dict[str, Any]) -> list[dict[str, Any]]:
        if not self.presence.enabled:
            return []
        f = p.filter.presence
        if not f.allows_type("m.presence"):
            return []
        if p.since is None:
            users = self.queries.users_sharing_a_room(p.user_id) | {p.user_id}
            candidates = [u for u in sorted(users) if self.presence.known(u)]
        else:
            my_rooms = set(self.queries.joined_rooms(p.user_id))
            candidates = []
            for user_id in dict.fromkeys(self.presence.changed(p.since, p.upto)):
                if user_id == p.user_id or not my_rooms.isdisjoint(self.queries.joined_rooms(user_id)):
                    candidates.append(user_id)
        events = [self.presence.event(u) for u in candidates]
        out = [e for e in events if f.allows(e)]
        return out[: f.limit] if f.limit else out
