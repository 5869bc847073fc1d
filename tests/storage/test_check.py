"""The consistency checker finds each kind of broken index (so a clean report means something)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from homeserver.rooms.creation import RoomCreation, create_room
from storage.check import check_consistency
from storage.codec import SEP, read_u64, u64
from storage.database import Database
from storage.events import AUTH_CHAIN, EVENT_JSON, EVENT_META
from storage.rooms import (
    LIVE_BASE,
    ROOM_EXTREMITIES,
    ROOM_MEMBERS,
    ROOM_SERVERS,
    ROOM_STATE,
    TIMELINE,
    USER_ROOMS,
)
from storage.shortids import SHORT_TO_EVENT
from storage.state_snapshots import SNAPSHOT
from tests.rooms.remote import LOCAL, Local

ALICE = f"@alice:{LOCAL}"
BOB = f"@bob:{LOCAL}"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("check") / "db"
    local = Local(path)

    async def fill() -> None:
        room_id = await create_room(local.pipe, RoomCreation(creator=ALICE, room_version="10", invite=[BOB]))
        await local.pipe.send(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
        for i in range(3):
            await local.pipe.send(room_id, BOB, "m.room.message", {"body": str(i)})
        await local.pipe.send(room_id, ALICE, "m.room.topic", {"topic": "t"}, "")

    asyncio.run(fill())
    assert check_consistency(local.db, full=True) == []
    local.close()
    return path


def _room(db: Database) -> int:
    return next(db.rooms.rooms())


def _first_message(db: Database) -> int:
    room = _room(db)
    for _, short in db.rooms.timeline(room):
        ev = db.events.get_json(short)
        if ev and ev["type"] == "m.room.message":
            return short
    raise AssertionError("no message")


def _member_key(db: Database, user: str) -> bytes:
    return u64(_room(db)) + b"join" + SEP + user.encode()


Corruption = Callable[[Database], list[tuple[str, bytes, bytes | None]]]


def _drop_json(db: Database) -> list[tuple[str, bytes, bytes | None]]:
    return [("event_json", u64(_first_message(db)), None)]


CASES: dict[str, tuple[Corruption, str]] = {
    "event json lost": (_drop_json, "metadata but no JSON"),
    "event meta lost": (lambda db: [("event_meta", u64(_first_message(db)), None)], "JSON but no metadata"),
    "reverse id lost": (lambda db: [("short_eventid", u64(_first_message(db)), None)], "no event id"),
    "member index lost": (lambda db: [("room_members", _member_key(db, BOB), None)], "room_members has @bob"),
    "member index extra": (
        lambda db: [("room_members", u64(_room(db)) + b"ban" + SEP + b"@x:y", u64(1))],
        "room_members has @x:y",
    ),
    "user_rooms lost": (
        lambda db: [("user_rooms", BOB.encode() + SEP + u64(_room(db)), None)],
        "user_rooms has no entry",
    ),
    "room_servers extra": (
        lambda db: [("room_servers", u64(_room(db)) + b"evil.test" + SEP + b"@m:evil.test", b"")],
        "only room_servers has @m:evil.test",
    ),
    "current state differs": (
        lambda db: [
            (
                "room_state",
                u64(_room(db)) + next(db.store.keys(ROOM_STATE, u64(_room(db))))[8:],
                u64(_first_message(db)),
            )
        ],
        "room_state[",
    ),
    "extra extremity": (
        lambda db: [("room_extremities", u64(_room(db)) + u64(_first_message(db)), b"")],
        "forward extremity",
    ),
    "timeline entry lost": (
        lambda db: [
            (
                "timeline",
                u64(_room(db)) + u64(LIVE_BASE + db.events.get_meta(_first_message(db)).stream),  # type: ignore[union-attr]
                None,
            )
        ],
        "not at that place",
    ),
    "snapshot lost": (
        lambda db: [("state_snapshot", next(db.store.keys(SNAPSHOT, reverse=True)), None)],
        "does not exist",
    ),
    "auth chain lost": (lambda db: [("auth_chain", next(db.store.keys(AUTH_CHAIN)), None)], "no stored auth chain"),
}
_TABLES = {
    t.name: t
    for t in (
        EVENT_JSON,
        EVENT_META,
        SHORT_TO_EVENT,
        ROOM_MEMBERS,
        USER_ROOMS,
        ROOM_SERVERS,
        ROOM_STATE,
        ROOM_EXTREMITIES,
        TIMELINE,
        SNAPSHOT,
        AUTH_CHAIN,
    )
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_broken_index_is_reported(pristine: Path, tmp_path: Path, case: str) -> None:
    corrupt, expected = CASES[case]
    path = tmp_path / "db"
    shutil.copytree(pristine, path)
    with Database(path) as db:
        writes = corrupt(db)
        with db.store.batch() as batch:
            for table, key, value in writes:
                if value is None:
                    assert db.store.get(_TABLES[table], key) is not None, "the corruption must remove something"
                    batch.delete(_TABLES[table], key)
                else:
                    batch.put(_TABLES[table], key, value)
            db.store.commit_now(batch)
    with Database(path) as db:
        problems = check_consistency(db, full=True)
    assert any(expected in p for p in problems), problems


def test_a_snapshot_with_a_wrong_hash_is_reported_by_the_full_check(pristine: Path, tmp_path: Path) -> None:
    path = tmp_path / "db"
    shutil.copytree(pristine, path)
    with Database(path) as db:
        key, raw = next(db.store.iterate(SNAPSHOT, reverse=True))
        damaged = raw[:9] + bytes([raw[9] ^ 1]) + raw[10:]  # one bit of the stored hash
        with db.store.batch() as batch:
            batch.put(SNAPSHOT, key, damaged)
            db.store.commit_now(batch)
    with Database(path) as db:
        problems = check_consistency(db, full=True)
    assert any(f"snapshot {read_u64(key)}: stored hash" in p for p in problems), problems
