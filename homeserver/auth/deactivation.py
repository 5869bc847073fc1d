"""Account deactivation: lock the account for good, then leave every room it is in.

spec: client-server-api POST /account/deactivate. The account is locked (devices and tokens gone,
password forgotten) in one batch first; leaving rooms follows, one leave event per room, so a
room that refuses the leave never keeps the account alive.
"""

from __future__ import annotations

import logging

from homeserver.auth.accounts import Accounts
from homeserver.rooms.pipeline import EventPipeline
from homeserver.rooms.queries import RoomQueries

log = logging.getLogger(__name__)

_LEAVE_FROM = ("join", "invite", "knock")


class Deactivation:
    def __init__(self, queries: RoomQueries, accounts: Accounts, pipeline: EventPipeline) -> None:
        self.queries = queries
        self.accounts = accounts
        self.pipeline = pipeline

    async def deactivate(self, user_id: str, *, erase: bool = False) -> None:
        await self.accounts.deactivate(user_id, erase=erase)
        rooms = [r.room for r in self.queries.memberships(user_id) if r.membership in _LEAVE_FROM]
        for room in rooms:
            room_id = self.queries.room_id(room)
            try:
                await self.pipeline.send(room_id, user_id, "m.room.member", {"membership": "leave"}, user_id)
            except Exception:  # a room we cannot leave locally (e.g. a remote invite) must not stop the rest
                log.warning("deactivating %s: could not leave %s", user_id, room_id, exc_info=True)
