"""A pipeline writer for the crash test: `python -m tests.storage.pipeline_writer DATA_DIR SEED FSYNC`.

Creates rooms and sends messages, state and membership changes through the event pipeline forever,
printing `ready` once the store is open, then `event <id>` / `room <id>` as each write is
acknowledged (after `send` / `create_room` return). The test kills it with SIGKILL at random.
"""

from __future__ import annotations

import asyncio
import random
import sys

from homeserver.errors import MatrixError
from homeserver.protocol.signing import generate_signing_key
from homeserver.rooms.creation import RoomCreation, create_room
from homeserver.rooms.pipeline import EventPipeline, ServerIdentity
from storage.database import Database

SERVER = "crash.test"
ALICE = f"@alice:{SERVER}"
USERS = [f"@u{i}:{SERVER}" for i in range(12)]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(path: str, seed: int, fsync: bool) -> None:
    rng = random.Random(seed)
    db = Database(path, fsync=fsync)
    key_id, key = generate_signing_key("crash")
    pipe = EventPipeline(db, ServerIdentity(SERVER, key_id, key))
    rooms = [db.ids.room_id(r) for r in db.rooms.rooms()]
    say("ready")

    async def new_room() -> None:
        invite = rng.sample(USERS, rng.randint(0, 3))
        room_id = await create_room(
            pipe,
            RoomCreation(
                creator=ALICE,
                room_version=rng.choice(["1", "10", "11", "12"]),
                preset="public_chat",
                name=f"room {len(rooms)}",
                invite=invite,
                initial_state=[{"type": "org.example", "state_key": str(i), "content": {"i": i}} for i in range(5)],
            ),
        )
        rooms.append(room_id)
        say(f"room {room_id}")

    async def one(room_id: str) -> None:
        room = db.ids.room(room_id)
        assert room is not None
        joined = [u for u, _ in db.rooms.members(room, "join")]
        r = rng.random()
        user = rng.choice(USERS)
        content: dict[str, object]
        if r < 0.45:
            sender, event_type, content, state_key = rng.choice(joined), "m.room.message", {"body": "hi"}, None
        elif r < 0.6:
            key = str(rng.randint(0, 40))
            sender, event_type, content, state_key = ALICE, "org.example", {"v": rng.randint(0, 9)}, key
        elif r < 0.75:
            sender, event_type, content, state_key = user, "m.room.member", {"membership": "join"}, user
        elif r < 0.85:
            sender, event_type, content, state_key = user, "m.room.member", {"membership": "leave"}, user
        elif r < 0.92:
            sender, event_type, content, state_key = ALICE, "m.room.member", {"membership": "invite"}, user
        else:
            membership = rng.choice(["ban", "leave"])
            sender, event_type, content, state_key = ALICE, "m.room.member", {"membership": membership}, user
        try:
            ev = await pipe.send(room_id, sender, event_type, content, state_key)
        except MatrixError:
            return
        say(f"event {ev.event_id}")

    if not rooms:
        await new_room()
    while True:
        if rng.random() < 0.03:
            await new_room()
        # a few rooms written concurrently, so that with fsync their commits are grouped
        await asyncio.gather(*(one(room_id) for room_id in rng.sample(rooms, min(len(rooms), 3))))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"))
