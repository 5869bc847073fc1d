from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from homeserver.protocol.signing import generate_signing_key
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.rooms.pipeline import EventPipeline, ServerIdentity
from storage.database import Database


@pytest.mark.parametrize("version", [str(v) for v in range(1, 13)])
def test_create_and_send(tmp_path: Path, version: str) -> None:
    key_id, key = generate_signing_key("t")
    with Database(tmp_path / "db") as db:
        pipe = EventPipeline(db, ServerIdentity("hs.test", key_id, key))

        async def main() -> None:
            room_id = await create_room(
                pipe,
                RoomCreation(
                    creator="@alice:hs.test", room_version=version, name="n", topic="t", invite=["@bob:hs.test"]
                ),
            )
            ev = await pipe.send(room_id, "@alice:hs.test", "m.room.message", {"body": "hi", "msgtype": "m.text"})
            assert ev.stream > 0
            ctx = pipe.load_context(room_id)
            assert ctx.extremities == [ev.short]
            members = dict(db.rooms.members(ctx.room_short, "join"))
            assert list(members) == ["@alice:hs.test"]
            assert list(dict(db.rooms.members(ctx.room_short, "invite"))) == ["@bob:hs.test"]
            bob = await pipe.send(room_id, "@bob:hs.test", "m.room.member", {"membership": "join"}, "@bob:hs.test")
            assert bob.state_changed
            assert sorted(dict(db.rooms.members(ctx.room_short, "join"))) == ["@alice:hs.test", "@bob:hs.test"]

        asyncio.run(main())
