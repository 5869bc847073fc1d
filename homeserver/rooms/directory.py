"""Room aliases and the published room directory.

spec: client-server-api "Room aliases" (PUT/GET/DELETE /directory/room/{roomAlias},
GET /rooms/{roomId}/aliases), "Published room directory" (GET/PUT /directory/list/room/{roomId},
GET/POST /publicRooms). Aliases of other servers are asked of their server through
`RemoteAliases` (federation's `/query/directory`); without federation they answer 404 saying so.
Other servers' published directories are asked through `RemotePublicRooms`, for signed-in callers only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.protocol.errors import InvalidIdentifier
from homeserver.protocol.events import Event, content_of
from homeserver.protocol.identifiers import RoomAlias
from homeserver.protocol.power_levels import get_required_power_level, get_user_power_level
from homeserver.rooms.client_format import EventSerializer
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.tokens import parse_counter
from homeserver.rooms.visibility import room_access
from storage.database import Database

DEFAULT_PUBLIC_ROOMS_LIMIT = 100
MAX_PUBLIC_ROOMS_LIMIT = 500


def plain_topic(content: Mapping[str, Any]) -> str | None:
    """The text/plain topic (spec: m.room.topic — `m.topic` representations, else `topic`)."""
    topics = content.get("m.topic")
    if isinstance(topics, list):
        for t in topics:
            if (
                isinstance(t, dict)
                and t.get("mimetype", "text/plain") == "text/plain"
                and isinstance(t.get("body"), str)
            ):
                return str(t["body"])
    topic = content.get("topic")
    return topic if isinstance(topic, str) else None


class RemoteAliases(Protocol):
    """An alias of another server, asked of it (spec: server-server-api GET /query/directory):
    (room id, servers to join through); a MatrixError (404 when unknown) otherwise."""

    async def room_alias(self, alias: str) -> tuple[str, list[str]]: ...


class RemotePublicRooms(Protocol):
    """Another server's published rooms (spec: server-server-api GET/POST /publicRooms)."""

    async def public_rooms(
        self,
        server: str,
        *,
        limit: int | None,
        since: str | None,
        search_term: str | None = None,
        room_types: list[str | None] | None = None,
    ) -> dict[str, Any]: ...


class RoomDirectory:
    def __init__(
        self, db: Database, queries: RoomQueries, serializer: EventSerializer, remote: RemoteAliases | None = None
    ) -> None:
        self.db = db
        self.remote = remote  # federation's; None when federation is off
        self.queries = queries
        self.server_name = queries.server_name
        self.serializer = serializer
        self._claimed: set[str] = set()  # aliases being written: not free for anyone else meanwhile
        self.remote_rooms: RemotePublicRooms | None = None  # federation's; set when it is on

    # -- aliases ---------------------------------------------------------------------------------

    def parse_alias(self, alias: str) -> RoomAlias:
        try:
            return RoomAlias.parse(alias)
        except InvalidIdentifier as e:
            raise MatrixError(400, "M_INVALID_PARAM", str(e)) from None

    def local_alias(self, alias: str) -> bool:
        """Whether a valid alias (400 M_INVALID_PARAM otherwise) names this server."""
        self.parse_alias(alias)
        return self.queries.is_local(alias)

    def resolve(self, alias: str) -> dict[str, Any]:
        """{room_id, servers} of an alias (spec: GET /directory/room/{roomAlias})."""
        if not self.local_alias(alias):
            raise not_found(
                f"Room alias {alias} is on another server; resolving it needs federation (not supported yet)"
            )
        entry = self.db.room_directory.alias(alias)
        if entry is None:
            raise not_found(f"Room alias {alias} not found")
        room = self.queries.room(entry["room_id"])
        servers = self.queries.servers_in_room(room) if room is not None else []
        return {
            "room_id": entry["room_id"],
            "servers": [self.server_name, *(s for s in servers if s != self.server_name)],
        }

    async def lookup(self, alias: str) -> dict[str, Any]:
        """`resolve`, for any server's alias: another server's is asked of it."""
        if self.local_alias(alias) or self.remote is None:
            return self.resolve(alias)
        room_id, servers = await self.remote.room_alias(alias)
        return {"room_id": room_id, "servers": servers}

    def room_id_of(self, alias: str) -> str:
        return str(self.resolve(alias)["room_id"])

    @contextlib.contextmanager
    def claim(self, alias: str) -> Iterator[None]:
        """Hold `alias` while it is being created; M_ROOM_IN_USE if taken (createRoom)."""
        if not self.local_alias(alias):
            raise MatrixError(400, "M_INVALID_PARAM", "room aliases can only be created on this server")
        if alias in self._claimed or self.db.room_directory.alias(alias) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", f"Room alias {alias} is already in use")
        self._claimed.add(alias)
        try:
            yield
        finally:
            self._claimed.discard(alias)

    async def create_alias(self, user_id: str, alias: str, room_id: str, *, is_admin: bool = False) -> None:
        if not self.local_alias(alias):
            raise MatrixError(400, "M_INVALID_PARAM", f"Room aliases must be on this server ({self.server_name})")
        room = self.queries.known_room(room_id) if isinstance(room_id, str) else None
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        if not is_admin and not self.queries.is_joined(user_id, room):
            raise forbidden("You must be joined to the room to give it an alias")
        if alias in self._claimed or self.db.room_directory.alias(alias) is not None:
            raise MatrixError(409, "M_UNKNOWN", f"Room alias {alias} already exists")
        self._claimed.add(alias)
        try:
            await self.write_alias(alias, room, room_id, user_id)
        finally:
            self._claimed.discard(alias)

    async def write_alias(self, alias: str, room: int, room_id: str, creator: str) -> None:
        batch = self.db.store.batch()
        with batch:
            self.db.room_directory.put_alias(alias, room, room_id, creator, batch)
            await batch.commit()

    async def delete_alias(self, user_id: str, alias: str, *, is_admin: bool = False) -> tuple[str, int]:
        """Delete a local alias; returns (room id, room). The creator, admins and users who may change
        the room's canonical alias may delete it."""
        if not self.local_alias(alias):
            raise not_found(f"Room alias {alias} is not on this server")
        entry = self.db.room_directory.alias(alias)
        if entry is None:
            raise not_found(f"Room alias {alias} not found")
        room_id = entry["room_id"]
        room = self.queries.room(room_id)
        if room is None:
            raise not_found(f"Room alias {alias} not found")
        if not (
            is_admin or entry.get("creator") == user_id or self.may_send_state(user_id, room, "m.room.canonical_alias")
        ):
            raise forbidden("You may not delete this alias")
        batch = self.db.store.batch()
        with batch:
            self.db.room_directory.delete_alias(alias, room, batch)
            await batch.commit()
        return room_id, room

    def local_aliases(self, user_id: str, room_id: str) -> list[str]:
        room = self.queries.known_room(room_id)
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        access = room_access(self.db, user_id, room)
        if not (access.joined or access.world_readable):
            raise forbidden("You must be in the room to see its aliases")
        return self.db.room_directory.aliases_of(room)

    def may_send_state(self, user_id: str, room: int, event_type: str) -> bool:
        """Whether a joined user's power level allows sending a state event of `event_type`."""
        if not self.queries.is_joined(user_id, room):
            return False
        rv = self.queries.room_version(room)
        pl = self.served_state(room, "m.room.power_levels")
        create = self.served_state(room, "m.room.create")
        level = get_user_power_level(user_id, pl, create, rv)
        return level >= get_required_power_level(pl, event_type, True, rv)

    def served_state(self, room: int, event_type: str, state_key: str = "") -> Event | None:
        """The current state event as clients are served it: redacted when a redaction applies (a
        redacted name or topic is gone from summaries and hierarchies, as it is from /state)."""
        short = self.queries.current_state_short(room, event_type, state_key)
        raw = self.serializer.stored_event(short) if short is not None else None
        return Event(raw) if raw is not None else None

    # -- the published room directory ------------------------------------------------------------

    def room(self, room_id: str) -> int:
        room = self.queries.known_room(room_id) if room_id.startswith("!") else None
        if room is None:
            raise not_found(f"Unknown room {room_id}")
        return room

    def visibility(self, room_id: str) -> str:
        return "public" if self.db.room_directory.is_published(self.room(room_id)) else "private"

    async def set_visibility(self, user_id: str, room_id: str, visibility: str, *, is_admin: bool = False) -> None:
        room = self.room(room_id)
        if not is_admin and not self.may_send_state(user_id, room, "m.room.canonical_alias"):
            raise forbidden("You need to be in the room with the power to change its canonical alias")
        await self.publish(room, visibility == "public")

    async def publish(self, room: int, published: bool) -> None:
        batch = self.db.store.batch()
        with batch:
            self.db.room_directory.set_published(room, published, batch)
            await batch.commit()

    def summary(self, room: int) -> dict[str, Any]:
        """A published room's entry (spec: GET /publicRooms "PublishedRoomsChunk")."""
        out: dict[str, Any] = {
            "room_id": self.queries.room_id(room),
            "num_joined_members": self.queries.member_count(room),
        }
        name = content_of(self.served_state(room, "m.room.name")).get("name")
        if isinstance(name, str) and name:
            out["name"] = name
        topic = plain_topic(content_of(self.served_state(room, "m.room.topic")))
        if topic:
            out["topic"] = topic
        avatar = content_of(self.served_state(room, "m.room.avatar")).get("url")
        if isinstance(avatar, str) and avatar:
            out["avatar_url"] = avatar
        alias = content_of(self.served_state(room, "m.room.canonical_alias")).get("alias")
        if isinstance(alias, str) and alias:
            out["canonical_alias"] = alias
        hv = content_of(self.served_state(room, "m.room.history_visibility")).get("history_visibility")
        out["world_readable"] = hv == "world_readable"
        guest = content_of(self.served_state(room, "m.room.guest_access")).get("guest_access")
        out["guest_can_join"] = guest == "can_join"
        join_rule = content_of(self.served_state(room, "m.room.join_rules")).get("join_rule")
        out["join_rule"] = join_rule if isinstance(join_rule, str) else "invite"
        room_type = content_of(self.served_state(room, "m.room.create")).get("type")
        if isinstance(room_type, str):
            out["room_type"] = room_type
        return out

    async def any_public_rooms(
        self,
        *,
        limit: int | None,
        since: str | None,
        server: str | None,
        search_term: str | None = None,
        room_types: list[str | None] | None = None,
        anonymous: bool = False,
    ) -> dict[str, Any]:
        """`public_rooms`, or another server's when `server` names one (asked over federation).

        spec: GET /publicRooms needs no access token. Our own directory is shown to anyone; asking
        another server is done only for a signed-in caller (as Synapse does, whatever its
        `allow_public_rooms_without_auth`): anyone on the Internet could otherwise make this server
        send federation requests to any name they like."""
        if server is None or server == self.server_name or self.remote_rooms is None:
            return self.public_rooms(
                limit=limit, since=since, server=server, search_term=search_term, room_types=room_types
            )
        if anonymous:
            raise MatrixError(401, "M_MISSING_TOKEN", "Listing another server's rooms needs an access token")
        return await self.remote_rooms.public_rooms(
            server, limit=limit, since=since, search_term=search_term, room_types=room_types
        )

    def public_rooms(
        self,
        *,
        limit: int | None,
        since: str | None,
        server: str | None,
        search_term: str | None = None,
        room_types: list[str | None] | None = None,
    ) -> dict[str, Any]:
        if server is not None and server != self.server_name:
            raise not_found(f"Listing the rooms of {server} needs federation, which this server does not support yet")
        offset = 0
        if since is not None:
            kind, _, value = since.partition("_")
            found = parse_counter(value)
            if kind != "p" or found is None:
                raise MatrixError(400, "M_INVALID_PARAM", "since is not a token from /publicRooms")
            offset = found
        limit = min(limit or DEFAULT_PUBLIC_ROOMS_LIMIT, MAX_PUBLIC_ROOMS_LIMIT)
        needle = search_term.casefold() if search_term else None
        entries = []
        for room in self.db.room_directory.published():
            if self.db.rooms.info(room) is None:
                continue
            entry = self.summary(room)
            if entry["num_joined_members"] == 0:
                continue  # nobody of this server is left in it
            if room_types is not None and entry.get("room_type") not in room_types:
                continue
            if needle is not None and not any(
                needle in str(entry.get(k, "")).casefold() for k in ("name", "topic", "canonical_alias", "room_id")
            ):
                continue
            entries.append(entry)
        # spec (v1.19): the server picks the order; largest rooms first, as before, then by id
        entries.sort(key=lambda e: (-e["num_joined_members"], e["room_id"]))
        body: dict[str, Any] = {"chunk": entries[offset : offset + limit], "total_room_count_estimate": len(entries)}
        if offset + limit < len(entries):
            body["next_batch"] = f"p_{offset + limit}"
        if offset > 0:
            body["prev_batch"] = f"p_{max(0, offset - limit)}"
        return body
