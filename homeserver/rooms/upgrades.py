"""Room upgrades (spec: client-server-api modules "Room Upgrades", POST /rooms/{roomId}/upgrade).

The server checks the user may send `m.room.tombstone`, creates the replacement room with a
`predecessor` (and the old room's `type`), copies the transferable state (and, as Synapse does, the
bans and a space's children), moves the local aliases and the directory entry, tombstones the old
room and restricts its power levels.

When one of our users joins a room that replaced another (spec: "When a user joins the new room,
the server should automatically transfer/replicate some of the user's personalized settings"),
whether it was upgraded here or on another server, `follow` copies their tags, their push rules
about the old room and its place in `m.direct`, in one batch through the services that own them; on
the first join of a room upgraded elsewhere our aliases and directory entry of the old room move to
it too (as Synapse does). Only a replacement the old room's own tombstone names is followed: a room
naming someone's direct chat as its predecessor gets nothing.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any, Protocol

from homeserver.errors import MatrixError, forbidden
from homeserver.locks import KeyedLock
from homeserver.protocol.errors import UnknownRoomVersion
from homeserver.protocol.events import Event, content_of
from homeserver.protocol.power_levels import get_required_power_level, get_user_power_level, parse_power_level
from homeserver.protocol.room_versions import get_room_version
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.rooms.directory import RoomDirectory
from homeserver.rooms.membership import Membership
from homeserver.rooms.pipeline import EventPipeline
from homeserver.rooms.queries import RoomQueries
from storage.engine import Batch, Store
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

# spec: m.space.child — a space's children go with it (as Synapse does); empty content is no child
SPACE_CHILD = "m.space.child"


class RoomSettings(Protocol):
    """A service keeping some of a user's settings per room (account data's tags and `m.direct`,
    push rules): what follows the user to a replacement room."""

    def settings_lock(self, user_id: str) -> KeyedLock[str]: ...

    def copy_room_settings(self, user_id: str, old_room_id: str, new_room_id: str, batch: Batch) -> None: ...


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
        self.settings: list[RoomSettings] = []  # given at wiring time (account data, push rules)

    def add_room_settings(self, settings: RoomSettings) -> None:
        self.settings.append(settings)

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
        initial_state += self._bans_and_children(room, is_space=room_type == "m.space")
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
        # the upgrading user joined the new room as its creator: their settings follow them now
        await self.follow(user_id, new_room_id)
        return new_room_id

    def _bans_and_children(self, room: int, *, is_space: bool) -> list[dict[str, Any]]:
        """The old room's bans (a banned user stays out of the new room) and, for a space, its
        children, as initial state of the new room (what Synapse's upgrades carry over too)."""
        found = []
        for banned, _ in self.queries.members(room, "ban"):
            reason = content_of(self.directory.served_state(room, "m.room.member", banned)).get("reason")
            content = {"membership": "ban", **({"reason": reason} if isinstance(reason, str) else {})}
            found.append({"type": "m.room.member", "state_key": banned, "content": content})
        for sk in self.rooms.current_state(room) if is_space else ():
            event_type, state_key = self.ids.state_key_of(sk)
            if event_type == SPACE_CHILD:
                content = dict(content_of(self.directory.served_state(room, event_type, state_key)))
                if content:
                    found.append({"type": event_type, "state_key": state_key, "content": content})
        return found

    async def follow(self, user_id: str, room_id: str) -> None:
        """A local user has just joined `room_id`: if it replaced a room (its create event's
        `predecessor`, confirmed by that room's tombstone), their settings of the old room are
        copied to it. A failure is logged, never raised: the join itself has happened."""
        if not self.queries.is_local(user_id):
            return
        room = self.queries.known_room(room_id)
        create = self.queries.current_state_event(room, "m.room.create") if room is not None else None
        predecessor = content_of(create).get("predecessor")
        old_room_id = predecessor.get("room_id") if isinstance(predecessor, dict) else None
        old_room = self.queries.known_room(old_room_id) if isinstance(old_room_id, str) else None
        if room is None or old_room is None or old_room == room:
            return
        tombstone = self.queries.current_state_event(old_room, "m.room.tombstone")
        if content_of(tombstone).get("replacement_room") != room_id:
            return
        try:
            async with AsyncExitStack() as locks:
                for settings in self.settings:
                    await locks.enter_async_context(settings.settings_lock(user_id))
                batch = self.store.batch()
                with batch:
                    for settings in self.settings:
                        settings.copy_room_settings(user_id, str(old_room_id), room_id, batch)
                    self._stage_directory_move(user_id, old_room, room, room_id, batch)
                    if batch.ops:
                        await batch.commit()
        except Exception:
            log.exception("%s joined %s, which replaced %s: settings not copied", user_id, room_id, old_room_id)

    def _stage_directory_move(self, user_id: str, room: int, new_room: int, new_room_id: str, batch: Batch) -> None:
        """Our aliases of the old room, and its place in our directory, go to the new room."""
        directory = self.room_directory
        for alias in directory.aliases_of(room):
            creator = (directory.alias(alias) or {}).get("creator", user_id)
            directory.delete_alias(alias, room, batch)
            directory.put_alias(alias, new_room, new_room_id, creator, batch)
        if directory.is_published(room):
            directory.set_published(room, False, batch)
            directory.set_published(new_room, True, batch)

    async def _move_aliases(self, user_id: str, room: int, room_id: str, new_room: int, new_room_id: str) -> None:
        batch = self.store.batch()
        with batch:
            self._stage_directory_move(user_id, room, new_room, new_room_id, batch)
            if batch.ops:
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
