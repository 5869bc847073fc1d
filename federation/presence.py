"""Our users' current presence, told to a server that newly shares a room with them.

spec: server-server-api "Presence": a server sends presence updates to the servers interested in
its users, such as those sharing a room with them. `EduRelay.presence_changed` covers changes; a
server that starts sharing a room would otherwise hear nothing until the next change, so its users
would see ours as offline. When a membership change makes servers newly share a room with our users:

1. a remote server with no member in the room before these joins is told of our users in the room;
2. the servers already in the room are told of our users who just joined it.

Left out: our users who are offline (offline is what a server assumes of a user it never heard
of), and a user the server already shares another room with (it has heard their changes). At most
`MAX_USERS` users, the most recently active, go to one server for one room, in EDUs of
`STATES_PER_EDU`: a join to a big room costs a bounded burst, and only once per newly sharing
server, never on a join from a server already in the room.

The storage hook only notes joins, once their batch has landed; the sending is a task of its own,
so the event pipeline never waits on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from typing import Any, Protocol

from storage.engine import Batch

log = logging.getLogger(__name__)

STATES_PER_EDU = 50  # as Synapse bounds a presence EDU (its MAX_PRESENCE_STATES_PER_EDU)
MAX_USERS = 500  # our users told of to one server for one room, the most recently active first
CHECK_YIELD_EVERY = 100  # users looked at between two turns given back to the event loop


class SharedRooms(Protocol):
    """The room questions asked (homeserver/rooms/queries.py: RoomQueries)."""

    server_name: str

    def is_local(self, identifier: str) -> bool: ...

    def is_joined(self, user_id: str, room: int) -> bool: ...

    def joined_rooms(self, user_id: str) -> list[int]: ...

    def servers_in_room(self, room: int) -> list[str]: ...

    def server_in_room(self, room: int, server: str) -> bool: ...

    def server_members(self, room: int, server: str) -> Iterator[str]: ...


class LocalPresence(Protocol):
    """Our users' presence (homeserver/ephemeral/presence.py: Presence)."""

    def present_local_users(self) -> dict[str, int]: ...

    def content(self, user_id: str) -> dict[str, Any]: ...


def _server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


class PresenceIntroductions:
    """Sends servers that newly share a room with our users those users' current presence."""

    def __init__(
        self,
        queries: SharedRooms,
        presence: LocalPresence,
        send: Callable[[Iterable[str], str, dict[str, Any]], None],
        *,
        max_users: int = MAX_USERS,
    ) -> None:
        self.queries = queries
        self.presence = presence
        self.send = send
        self.max_users = max_users
        self._joined: dict[int, set[str]] = {}  # room -> users who joined, waiting for the task
        self._task: asyncio.Task[None] | None = None

    def membership_written(
        self, batch: Batch, room: int, user_id: str, membership: str | None, previous: str | None, stream: int
    ) -> None:
        """`RoomStore.membership_hooks`: a user joined (a join replacing a join is a profile change)."""
        if membership == "join" and previous != "join":
            batch.on_commit.append(lambda: self._note(room, user_id))

    def _note(self, room: int, user_id: str) -> None:
        self._joined.setdefault(room, set()).add(user_id)
        if self._task is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # written outside the server (an offline tool): nobody to tell
                self._joined.clear()
                return
            self._task = loop.create_task(self._run(), name="presence-introductions")

    async def _run(self) -> None:
        try:
            await asyncio.sleep(0)  # the joins written together (a whole room's state) come as one
            while self._joined:
                joined, self._joined = self._joined, {}
                for room, users in joined.items():
                    try:
                        await self.introduce(room, users)
                    except Exception:
                        log.exception("telling servers new to room %d of our users' presence failed", room)
        finally:
            self._task = None

    async def introduce(self, room: int, newly_joined: Collection[str]) -> None:
        """Tell the servers that `newly_joined` (users now joined to `room`) made new to it of our
        users there, and the servers already there of our users among `newly_joined`."""
        q = self.queries
        ours = [u for u in newly_joined if q.is_local(u)]
        remote_servers = {_server_of(u) for u in newly_joined if not q.is_local(u)}
        new_servers = sorted(s for s in remote_servers if self._is_new(room, s, newly_joined))
        if not new_servers and not ours:
            return  # the common case, a user of a server already there: nothing more to read
        present = self.presence.present_local_users()
        if not present:
            return
        if new_servers:
            # 1. everyone of ours in the room, to each server new to it
            here = [u for u in present if q.is_joined(u, room)]
            for server in new_servers:
                await self._tell(server, room, here, present)
        newcomers = [u for u in ours if u in present and q.is_joined(u, room)]
        if newcomers:
            # 2. our users who just joined, to the servers that were there already
            for server in q.servers_in_room(room):
                if server != q.server_name and server not in new_servers:
                    await self._tell(server, room, newcomers, present)

    def _is_new(self, room: int, server: str, newly_joined: Collection[str]) -> bool:
        """`server` is in the room now, and none of its users was before these joins."""
        members = self.queries.server_members(room, server)
        first = next(members, None)
        return first is not None and first in newly_joined and all(u in newly_joined for u in members)

    def _shares_another_room(self, user_id: str, room: int, server: str) -> bool:
        return any(r != room and self.queries.server_in_room(r, server) for r in self.queries.joined_rooms(user_id))

    async def _tell(self, server: str, room: int, users: Iterable[str], present: dict[str, int]) -> None:
        chosen: list[str] = []
        for i, user_id in enumerate(sorted(users, key=lambda u: -present[u])):
            if i and i % CHECK_YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if not self._shares_another_room(user_id, room, server):
                chosen.append(user_id)
                if len(chosen) >= self.max_users:
                    break
        for start in range(0, len(chosen), STATES_PER_EDU):
            push = [{"user_id": u, **self.presence.content(u)} for u in chosen[start : start + STATES_PER_EDU]]
            self.send([server], "m.presence", {"push": push})

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
