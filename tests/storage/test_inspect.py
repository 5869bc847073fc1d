"""`python -m homeserver inspect` as an admin runs it: a subprocess on a store the pipeline filled,
while the store is held open by another process (this test process plays the running server)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from homeserver.rooms.creation import RoomCreation, create_room
from storage.engine import StoreLocked
from storage.rooms import ROOM_EXTREMITIES
from tests.rooms.remote import LOCAL, Local

ROOT = Path(__file__).resolve().parents[2]
ALICE = f"@alice:{LOCAL}"
BOB = f"@bob:{LOCAL}"
ERIN = "@erin:remote.test"


@dataclass
class Filled:
    data_dir: Path
    local: Local
    room_id: str
    other_room: str
    name_change: str  # the event that renamed the room
    events: list[str]  # the room's timeline


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    import asyncio

    data_dir = tmp_path_factory.mktemp("inspect")
    local = Local(data_dir / "db")

    async def fill() -> Filled:
        room_id = await create_room(
            local.pipe,
            RoomCreation(creator=ALICE, room_version="10", preset="public_chat", name="Before", invite=[BOB]),
        )
        await local.pipe.send(room_id, BOB, "m.room.member", {"membership": "join"}, BOB)
        for i in range(5):
            await local.pipe.send(room_id, BOB, "m.room.message", {"msgtype": "m.text", "body": f"msg {i}"})
        tip = next(iter(local.extremities(room_id)))
        pdu = local.remote("remote.test").build(
            local, room_id, ERIN, "m.room.member", {"membership": "join"}, state_key=ERIN, prev=[tip]
        )
        await local.pipe.receive(pdu, local.keys)
        rename = await local.pipe.send(room_id, ALICE, "m.room.name", {"name": "After"}, "")
        await local.pipe.send(room_id, ALICE, "m.room.message", {"msgtype": "m.text", "body": "ünïcode ✓"})
        other = await create_room(local.pipe, RoomCreation(creator=BOB, room_version="12"))
        return Filled(data_dir, local, room_id, other, rename.event_id, local.timeline(room_id))

    result = asyncio.run(fill())
    yield result  # the store stays open, locked by this process, while inspect runs
    local.close()


def inspect(filled: Filled, *args: str, as_json: bool = True, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "homeserver", "inspect", "--data-dir", str(filled.data_dir)]
    if as_json:
        cmd.append("--json")
    proc = subprocess.run([*cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


Runs = dict[str, tuple[list[str], bool]]


def inspect_many(filled: Filled, runs: Runs) -> dict[str, subprocess.CompletedProcess[str]]:
    """Several inspect commands at once (each start costs the interpreter's import time)."""
    procs = {}
    for name, (args, as_json) in runs.items():
        cmd = [sys.executable, "-m", "homeserver", "inspect", "--data-dir", str(filled.data_dir)]
        procs[name] = subprocess.Popen(
            [*cmd, *(["--json"] if as_json else []), *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    done = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=60)
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        assert proc.returncode == 0, (name, err)
    return done


def test_the_store_is_locked_by_the_server_but_inspect_reads_it(filled: Filled) -> None:
    from storage.engine import Store

    with pytest.raises(StoreLocked):
        Store(filled.data_dir / "db")  # a second opener in the same process is refused too


def test_inspect_commands_show_the_store(filled: Filled) -> None:
    local, room_id = filled.local, filled.room_id
    last = filled.events[-1]
    runs: dict[str, tuple[list[str], bool]] = {
        "tables": (["tables"], True),
        "tables_text": (["tables"], False),
        "event": (["event", filled.name_change], True),
        "event_text": (["event", last], False),
        "state_now": (["state", room_id], True),
        "state_at": (["state", room_id, "--at", filled.name_change], True),
        "state_after": (["state", room_id, "--at", filled.name_change, "--after"], True),
        "state_text": (["state", room_id], False),
        "members": (["members", room_id], True),
        "members_text": (["members", room_id, "--membership", "join"], False),
        "user": (["user", ALICE], True),
        "user_text": (["user", BOB], False),
        "rooms": (["rooms"], True),
        "export_room": (["export", "--room", room_id], False),
        "check": (["check", "--full"], True),
        "check_text": (["check"], False),
    }
    out = inspect_many(filled, runs)
    data: dict[str, Any] = {k: json.loads(v.stdout) for k, v in out.items() if runs[k][1]}

    # tables: real counts
    tables = {row["table"]: row for row in data["tables"]}
    n_events = len(filled.events) + len(local.timeline(filled.other_room))
    assert tables["event_json"]["keys"] == n_events
    assert tables["event_meta"]["keys"] == n_events
    assert tables["room_info"]["keys"] == 2
    assert tables["timeline"]["keys"] == n_events
    assert tables["event_json"]["bytes"] > 0
    assert "event_json" in out["tables_text"].stdout and "timeline" in out["tables_text"].stdout

    # an event by id, with its metadata
    ev = data["event"]
    meta = local.meta(filled.name_change)
    assert ev["event_id"] == filled.name_change and ev["short"] == local.short(filled.name_change)
    assert ev["event"]["content"] == {"name": "After"}
    assert ev["meta"]["stream"] == meta.stream and ev["meta"]["depth"] == meta.depth
    assert ev["meta"]["room"]["room_id"] == room_id
    assert ev["meta"]["state_key"] == {"short": meta.state_key, "type": "m.room.name", "state_key": ""}
    assert "state" in ev["meta"]["flags"] and ev["rejection"] is None
    assert last in out["event_text"].stdout and "ünïcode ✓" in out["event_text"].stdout

    # state at an event vs now
    def by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(r["type"], r["state_key"]): r for r in rows}

    now, at, after = by_key(data["state_now"]), by_key(data["state_at"]), by_key(data["state_after"])
    assert now[("m.room.name", "")]["content"] == {"name": "After"}
    assert at[("m.room.name", "")]["content"] == {"name": "Before"}
    assert after[("m.room.name", "")]["event_id"] == filled.name_change
    assert {k: r["event_id"] for k, r in now.items()} == local.current_state(room_id)
    assert now[("m.room.member", ERIN)]["content"] == {"membership": "join"}
    assert "m.room.name" in out["state_text"].stdout and "After" in out["state_text"].stdout

    # members and a user's rooms
    members = {(r["user_id"], r["membership"]) for r in data["members"]}
    assert members == {(ALICE, "join"), (BOB, "join"), (ERIN, "join")}
    assert ERIN in out["members_text"].stdout and BOB in out["members_text"].stdout
    assert [(r["room_id"], r["membership"]) for r in data["user"]["rooms"]] == [(room_id, "join")]
    assert room_id in out["user_text"].stdout and filled.other_room in out["user_text"].stdout
    rooms = {r["room_id"]: r for r in data["rooms"]}
    assert rooms[room_id]["joined"] == 3 and rooms[room_id]["version"] == "10"
    assert rooms[filled.other_room]["version"] == "12"

    # export: one JSON object a line, the room's timeline in order
    lines = [json.loads(line) for line in out["export_room"].stdout.splitlines()]
    assert [row["event_id"] for row in lines] == filled.events
    assert lines[-1]["content"]["body"] == "ünïcode ✓"

    # the consistency check
    assert data["check"]["ok"] is True and data["check"]["problems"] == []
    assert data["check"]["counts"]["event_meta"] == n_events
    assert out["check_text"].stdout.startswith("ok:")


def test_export_of_the_whole_store(filled: Filled, tmp_path: Path) -> None:
    target = tmp_path / "store.jsonl"
    inspect(filled, "export", "--out", str(target), as_json=False)
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    by_table: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_table.setdefault(row["table"], []).append(row)
    exported_ids = {row["key"][0]["event_id"] for row in by_table["event_json"]}
    assert set(filled.events) <= exported_ids
    for row in by_table["eventid_short"]:  # the decoded value names the same event
        assert row["value"]["event_id"] == row["key"][0]
    assert set(filled.events) <= {row["key"][0] for row in by_table["eventid_short"]}
    assert len(by_table["room_info"]) == 2


def test_inspect_check_reports_a_broken_index(tmp_path: Path) -> None:
    import asyncio

    data_dir = tmp_path / "data"
    local = Local(data_dir / "db")
    try:
        room_id = asyncio.run(create_room(local.pipe, RoomCreation(creator=ALICE, room_version="10")))
        # break one index behind the pipeline's back: drop the room's forward extremity
        room = local.room_short(room_id)
        key = next(local.db.store.keys(ROOM_EXTREMITIES, room.to_bytes(8, "big")))
        with local.db.store.batch() as batch:
            batch.delete(ROOM_EXTREMITIES, key)
            local.db.store.commit_now(batch)
    finally:
        local.close()
    filled = Filled(data_dir, local, room_id, "", "", [])
    proc = inspect(filled, "check", check=False)
    assert proc.returncode == 1
    report = json.loads(proc.stdout)
    assert report["ok"] is False
    assert any("not a forward extremity" in p for p in report["problems"]), report["problems"]
    text = inspect(filled, "check", as_json=False, check=False)
    assert text.returncode == 1 and "not a forward extremity" in text.stdout
