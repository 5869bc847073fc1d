"""Room upgrades (spec: client-server-api modules "Room Upgrades", POST /rooms/{roomId}/upgrade).

The server checks the user may send `m.room.tombstone`, creates the replacement room with a
`predecessor` (and the old room's `type`), copies the transferable state, moves the local aliases
and the directory entry, tombstones the old room and restricts its power levels.
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.errors import MatrixError, forbidden
from homeserver.protocol.errors import UnknownRoomVersion
from homeserver.protocol.events import Event, content_of
from homeserver.protocol.power_levels import get_required_power_level, get_user_power_level, parse_power_level
from homeserver.protocol.room_versions import get_room_version
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.membership import Membership
from homeserver.rooms.pipeline import EventPipeline
from homeserver.rooms.queries import RoomQueries
from storage.engine import Store
from storage.room_directory import RoomDirectoryStore
from storage.rooms import RoomStore
from storage.shortids import ShortIds

log = logging.getLogger(__name__)

# spec: room upgrades "Server behaviour" 3 — the recommended state to transfer (power levels apart)
TRANSFERRED_STATE = (
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
)


class RoomUpgrades:
    def __init__(
        self,
        store: Store,
        ids: ShortIds,
        rooms: RoomStore,
        room_directory: RoomDirectoryStore,
        pipeline: EventPipeline,
        queries: RoomQueries,
        directory: RoomDirectory,
        membership: Membership,
    ) -> None:
        self.store = store
        self.ids = ids
        self.rooms = rooms
        self.room_directory = room_directory
        self.pipeline = pipeline
        self.queries = queries
        self.directory = directory
        self.membership = membership

    async def upgrade(self, user_id: str, room_id: str, new_version: Any, additional_creators: Any) -> str:
        if not isinstance(new_version, str):
            raise MatrixError(400, "M_BAD_JSON", "new_version is required and must be a string")
        try:
            new_rv = get_room_version(new_version)
        except UnknownRoomVersion:
            raise MatrixError(
                400, "M_UNSUPPORTED_ROOM_VERSION", f"room version {new_version!r} is not supported"
            ) from None
        if additional_creators is not None and (
            not isinstance(additional_creators, list) or not all(isinstance(u, str) for u in additional_creators)
        ):
            raise MatrixError(400, "M_BAD_JSON", "additional_creators must be a list of user ids")
        room = self.membership.room(room_id)
        old_rv = self.queries.room_version(room)
        # 1. the user must be able to send m.room.tombstone
        pl = self.directory.served_state(room, "m.room.power_levels")
        create = self.directory.served_state(room, "m.room.create")
        if not self.queries.is_joined(user_id, room):
            raise forbidden("You must be joined to the room to upgrade it")
        level = get_user_power_level(user_id, pl, create, old_rv)
        if level < get_required_power_level(pl, "m.room.tombstone", True, old_rv):
            raise forbidden("You may not send m.room.tombstone in this room, so you may not upgrade it")
        # 2. the replacement room, with the predecessor and the room type
        creation_content: dict[str, Any] = {"predecessor": {"room_id": room_id}}
        last = next(self.rooms.timeline(room, reverse=True), None)
        if last is not None:
            creation_content["predecessor"]["event_id"] = self.ids.event_id(last[1])
        room_type = content_of(create).get("type")
        if room_type is not None:
            creation_content["type"] = room_type
        if additional_creators and new_rv.privileged_creators:
            creation_content["additional_creators"] = additional_creators
        # 3. the transferable state, and the power levels (creators of v12 rooms are not listed)
        initial_state = []
        for event_type in TRANSFERRED_STATE:
            event = self.directory.served_state(room, event_type)
            if event is not None:
                initial_state.append({"type": event_type, "state_key": "", "content": dict(content_of(event))})
        override = dict(content_of(pl)) if pl is not None else None
        if override is not None and new_rv.privileged_creators:
            creators = {user_id, *(additional_creators or [])}
            users = override.get("users")
            if isinstance(users, dict):
                override["users"] = {u: v for u, v in users.items() if u not in creators}
        new_room_id = await create_room(
            self.pipeline,
            RoomCreation(
                creator=user_id,
                room_version=new_rv.identifier,
                creation_content=creation_content,
                power_level_content_override=override,
                initial_state=initial_state,
                creator_profile=self.membership.profile(user_id),
            ),
        )
        new_room = self.queries.room(new_room_id)
        assert new_room is not None
        # 4. local aliases and the directory entry move to the new room
        await self._move_aliases(user_id, room, room_id, new_room, new_room_id)
        # 5. the tombstone
        await self.pipeline.send(
            room_id,
            user_id,
            "m.room.tombstone",
            {"body": "This room has been replaced", "replacement_room": new_room_id},
            "",
        )
        # 6. the old room: no more messages or invites from ordinary users
        await self._restrict_old_room(user_id, room_id, pl, old_rv.identifier)
        return new_room_id

    async def _move_aliases(self, user_id: str, room: int, room_id: str, new_room: int, new_room_id: str) -> None:
        directory = self.room_directory
        aliases = directory.aliases_of(room)
        published = directory.is_published(room)
        if aliases or published:
            batch = self.store.batch()
            with batch:
                for alias in aliases:
                    creator = (directory.alias(alias) or {}).get("creator", user_id)
                    directory.delete_alias(alias, room, batch)
                    directory.put_alias(alias, new_room, new_room_id, creator, batch)
                if published:
                    directory.set_published(room, False, batch)
                    directory.set_published(new_room, True, batch)
                await batch.commit()
        canonical = dict(content_of(self.directory.served_state(room, "m.room.canonical_alias")))
        if canonical.get("alias") or canonical.get("alt_aliases"):
            for target, content in ((new_room_id, canonical), (room_id, {})):
                try:
                    await self.pipeline.send(target, user_id, "m.room.canonical_alias", content, "")
                except MatrixError as e:
                    log.info("upgrade of %s: canonical alias not moved to %s: %s", room_id, target, e.message)

    async def _restrict_old_room(self, user_id: str, room_id: str, pl: Event | None, version: str) -> None:
        # spec: room upgrades "Server behaviour" 6 — events_default and invite at max(50, users_default + 1)
        content = dict(content_of(pl))
        users_default = parse_power_level(content.get("users_default", 0), version) or 0
        needed = max(50, users_default + 1)
        content["events_default"] = needed
        content["invite"] = needed
        try:
            await self.pipeline.send(room_id, user_id, "m.room.power_levels", content, "")
        except MatrixError as e:
            log.info("upgrade of %s: old room's power levels left as they were: %s", room_id, e.message)
