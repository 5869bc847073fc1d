"""Privacy matrix: users with every membership history × rooms with every history visibility × every
read endpoint. Each test id names the cell and what must be shown or hidden.

spec: client-server-api "History visibility" (server behaviour): for an event E and a user U,
allow if E's history visibility is `world_readable`; or U was joined at E; or it was `shared` and U
joined at any point after E; or it was `invited` and U was invited at E. Otherwise deny.
Sync's `device_lists` (spec: end_to_end_encryption "Tracking the device list for a user"): `left`
names only users who shared a room with U and share none now; `changed` only users who share one.

One world is built per module (a few hundred milliseconds), then read by every cell:

- `alice` creates four rooms, one per history visibility, each with join rule `knock`, and a
  private room `P` (invite only) with `insider`, who is also in the `shared` room from the start;
- `m0` is sent before anyone else arrives; `joined`, `left`, `kicked`, `banned` are invited and
  join, `invited` is invited, `knocked` knocks; topic `t1`; `m1` (a thread root) is sent;
- every user syncs (the `since` of the incremental cells);
- `left` leaves, `kicked` is kicked, `banned` is banned; `m2`, a thread reply `r2` to `m1`,
  topic `t2`, alice's typing notice and read receipt follow;
- (the position `mid`) `late` (sharing no room with the departed, ever) is invited and joins; `m3` is sent; alice and
  late upload device keys.

Not covered here, on purpose: `/keys/query` (the spec lets anyone query any user's keys) and
`/profile` (no rule limits profile look-ups to users who share a room; the spec allows either).
What test_visibility.py covers (one room, one reader, endpoint by endpoint) is not repeated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from homeserver.server import HomeServer

from .conftest import Harness, User, make_config
from .rooms_helpers import create_room, get_unchecked, invite, join, put_state, q, send_event
from .sync_helpers import inline
from .test_e2ee import Device, upload

pytestmark = pytest.mark.asyncio(loop_scope="module")

HISTORIES = ("never", "invited", "joined", "left", "kicked", "banned", "knocked", "late")
DEPARTED = ("left", "kicked", "banned")
VISIBILITIES = ("world_readable", "shared", "invited", "joined")
MESSAGES = ("m0", "m1", "m2", "m3")
ALL = frozenset(MESSAGES)
NONE: frozenset[str] = frozenset()
BEFORE_DEPARTURE = frozenset({"m0", "m1"})
WHILE_JOINED = {"joined": frozenset({"m1", "m2", "m3"}), "late": frozenset({"m3"})} | dict.fromkeys(
    DEPARTED, frozenset({"m1"})
)

# The messages each history may read in each room (spec: "History visibility", the rules above).
VISIBLE: dict[str, dict[str, frozenset[str]]] = {
    "world_readable": dict.fromkeys(HISTORIES, ALL),
    "shared": dict.fromkeys(HISTORIES, NONE) | {"joined": ALL, "late": ALL} | dict.fromkeys(DEPARTED, BEFORE_DEPARTURE),
    "invited": dict.fromkeys(HISTORIES, NONE)
    | {"joined": frozenset({"m1", "m2", "m3"}), "invited": frozenset({"m1", "m2", "m3"}), "late": frozenset({"m3"})}
    | dict.fromkeys(DEPARTED, frozenset({"m1"})),
    "joined": dict.fromkeys(HISTORIES, NONE) | WHILE_JOINED,
}

SYNC_FILTER = inline({"room": {"include_leave": True, "timeline": {"limit": 100}}})


def _outsider(hv: str, history: str) -> bool:
    """Never a member, and the room's state is not public: the room's insides are hidden."""
    return hv != "world_readable" and history in ("never", "invited", "knocked")


def _current_state(hv: str, history: str) -> bool:
    return hv == "world_readable" or history in ("joined", "late")


@dataclass
class World:
    harness: Harness
    users: dict[str, User]
    rooms: dict[str, str]  # history visibility -> room id
    events: dict[str, dict[str, str]]  # history visibility -> label -> event id
    private_room: str
    space: str
    since: dict[str, str]  # history -> sync token before the departures
    mid: str  # a sync token after the departures, before late arrives
    events_from: str  # a legacy /events token from before the first message
    _cache: dict[str, Any] = field(default_factory=dict)

    async def get(self, path: str, user: str, **kw: Any) -> tuple[int, Any]:
        key = f"{user} GET {path}"
        if key not in self._cache:
            self._cache[key] = await self.harness.request("GET", path, self.users[user], **kw)
        return self._cache[key]  # type: ignore[no-any-return]

    def label(self, hv: str, event: dict[str, Any]) -> str | None:
        """m0..m3 (or r2) for the matrix's messages, None for anything else."""
        body = event.get("content", {}).get("body")
        return body.split(" ", 1)[0] if isinstance(body, str) and body.split(" ", 1)[0] in {*MESSAGES, "r2"} else None

    def labels(self, hv: str, events: list[dict[str, Any]]) -> set[str]:
        room = self.rooms[hv]
        return {label for e in events if e.get("room_id", room) == room and (label := self.label(hv, e))}


def _message(label: str, users: dict[str, User], **extra: Any) -> dict[str, Any]:
    mentions = sorted(u.user_id for u in users.values())
    return {"msgtype": "m.text", "body": f"{label} secret", "m.mentions": {"user_ids": mentions}, **extra}


async def _build(harness: Harness) -> World:
    users = {name: await harness.user(name) for name in ("alice", *HISTORIES, "insider")}
    alice = users["alice"]
    status, first = await harness.request("GET", "events?timeout=0", alice)
    assert status == 200, first
    private_room = await create_room(harness, alice, preset="private_chat", name="P")
    await invite(harness, alice, private_room, users["insider"])
    await join(harness, users["insider"], private_room)
    space = await create_room(
        harness, alice, preset="public_chat", visibility="public", creation_content={"type": "m.space"}
    )
    await put_state(harness, alice, space, "m.space.child", {"via": ["hs.test"]}, private_room)

    rooms: dict[str, str] = {}
    events: dict[str, dict[str, str]] = {}
    for hv in VISIBILITIES:
        room = rooms[hv] = await create_room(
            harness,
            alice,
            preset="private_chat",
            initial_state=[
                {"type": "m.room.history_visibility", "content": {"history_visibility": hv}},
                {"type": "m.room.join_rules", "content": {"join_rule": "knock"}},
            ],
        )
        labels = events[hv] = {}
        labels["m0"] = await send_event(harness, alice, room, "m.room.message", _message("m0", users))
        for name in ("joined", *DEPARTED, "invited"):
            await invite(harness, alice, room, users[name])
        for name in ("joined", *DEPARTED, *(("insider",) if hv == "shared" else ())):
            if name == "insider":
                await invite(harness, alice, room, users[name])
            await join(harness, users[name], room)
        status, body = await harness.request("POST", f"knock/{q(room)}", users["knocked"], json={})
        assert status == 200, body
        await put_state(harness, alice, room, "m.room.topic", {"topic": "t1"})
        labels["m1"] = await send_event(harness, alice, room, "m.room.message", _message("m1", users))

    since: dict[str, str] = {}
    for name in HISTORIES:
        status, body = await harness.request("GET", f"sync?timeout=0&filter={SYNC_FILTER}", users[name])
        assert status == 200, body
        since[name] = body["next_batch"]

    for hv, room in rooms.items():
        status, body = await harness.request("POST", f"rooms/{q(room)}/leave", users["left"], json={})
        assert status == 200, body
        for action, name in (("kick", "kicked"), ("ban", "banned")):
            status, body = await harness.request(
                "POST", f"rooms/{q(room)}/{action}", alice, json={"user_id": users[name].user_id}
            )
            assert status == 200, body
        labels = events[hv]
        labels["m2"] = await send_event(harness, alice, room, "m.room.message", _message("m2", users))
        thread = {"rel_type": "m.thread", "event_id": labels["m1"]}
        labels["r2"] = await send_event(
            harness, alice, room, "m.room.message", _message("r2", users, **{"m.relates_to": thread})
        )
        await put_state(harness, alice, room, "m.room.topic", {"topic": "t2"})
        status, body = await harness.request(
            "PUT", f"rooms/{q(room)}/typing/{q(alice.user_id)}", alice, json={"typing": True, "timeout": 120_000}
        )
        assert status == 200, body
        status, body = await harness.request(
            "POST", f"rooms/{q(room)}/receipt/m.read/{q(labels['m2'])}", alice, json={}
        )
        assert status == 200, body
    status, body = await harness.request("GET", "sync?timeout=0", users["left"])
    assert status == 200, body
    mid = body["next_batch"]  # after the departures, before late arrives
    for hv, room in rooms.items():
        await invite(harness, alice, room, users["late"])
        await join(harness, users["late"], room)
        events[hv]["m3"] = await send_event(harness, alice, room, "m.room.message", _message("m3", users))
    status, body = await harness.request(
        "PUT", f"presence/{q(users['late'].user_id)}/status", users["late"], json={"presence": "online"}
    )
    assert status == 200, body
    for name in ("alice", "late"):
        dev = Device(users[name])
        status, body = await upload(harness, dev, device_keys=dev.device_keys())
        assert status == 200, body
    return World(harness, users, rooms, events, private_room, space, since, mid, first["end"])


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    path: Path = tmp_path_factory.mktemp("privacy")
    hs = HomeServer(make_config(path))
    client = TestClient(TestServer(hs.build_app()))
    await client.start_server()
    try:
        yield await _build(Harness(hs, client))
    finally:
        await client.close()


def _says(shown: frozenset[str] | set[str], universe: frozenset[str] = ALL) -> str:
    hidden = sorted(universe - shown)
    parts = [f"shows {' '.join(sorted(shown))}" if shown else "", f"hides {' '.join(hidden)}" if hidden else ""]
    return "; ".join(p for p in parts if p)


def cells(what: str, universe: frozenset[str] = ALL) -> list[Any]:
    """One test id per (history visibility, history), saying which messages must be shown."""
    return [
        pytest.param(hv, history, id=f"{what}[{hv}-{history}] {_says(VISIBLE[hv][history] & universe, universe)}")
        for hv in VISIBILITIES
        for history in HISTORIES
    ]


def history_cells(what: str, says: dict[str, str]) -> list[Any]:
    return [pytest.param(history, id=f"{what}[{history}] {says[history]}") for history in HISTORIES]


def _denied(status: int) -> bool:
    return status in (403, 404)


# -- reading the room's events -----------------------------------------------------------------------


@pytest.mark.parametrize(("hv", "history"), cells("messages"))
async def test_messages(world: World, hv: str, history: str) -> None:
    visible = VISIBLE[hv][history]
    status, body = await world.get(f"rooms/{q(world.rooms[hv])}/messages?dir=b&limit=100", history)
    if _denied(status):
        assert not visible, body
        return
    assert status == 200, body
    assert world.labels(hv, body["chunk"]) - {"r2"} == visible


@pytest.mark.parametrize(("hv", "history"), cells("event"))
async def test_event(world: World, hv: str, history: str) -> None:
    for label in MESSAGES:
        path = f"rooms/{q(world.rooms[hv])}/event/{q(world.events[hv][label])}"
        status, body = await world.get(path, history)
        if label in VISIBLE[hv][history]:
            assert status == 200 and body["content"]["body"].startswith(label), (label, body)
        else:
            assert status == 404 and body["errcode"] == "M_NOT_FOUND", (label, body)


@pytest.mark.parametrize(("hv", "history"), cells("context"))
async def test_context(world: World, hv: str, history: str) -> None:
    visible = VISIBLE[hv][history]
    for label in MESSAGES:
        path = f"rooms/{q(world.rooms[hv])}/context/{q(world.events[hv][label])}?limit=100"
        status, body = await world.get(path, history)
        if label not in visible:
            assert _denied(status), (label, body)
            continue
        assert status == 200, (label, body)
        around = world.labels(hv, [body["event"], *body["events_before"], *body["events_after"]]) - {"r2"}
        assert around == visible, label
        # the state at the last event returned: t2 (sent just after m2) only for who may read m2
        topics = {e["content"].get("topic") for e in body["state"] if e["type"] == "m.room.topic"}
        assert "t2" not in topics or _current_state(hv, history) or "m2" in visible, label


@pytest.mark.parametrize(("hv", "history"), cells("relations+threads", frozenset({"m1", "m2"})))
async def test_relations_and_threads(world: World, hv: str, history: str) -> None:
    """The thread root m1 and its reply r2 (sent beside m2): each shown exactly when readable."""
    visible = VISIBLE[hv][history]
    room = q(world.rooms[hv])
    status, body = await world.get(f"/_matrix/client/v1/rooms/{room}/relations/{q(world.events[hv]['m1'])}", history)
    if "m1" not in visible:
        assert _denied(status), body
    else:
        assert status == 200, body
        assert world.labels(hv, body["chunk"]) == ({"r2"} if "m2" in visible else set())
    status, body = await world.get(f"/_matrix/client/v1/rooms/{room}/threads", history)
    if _denied(status):
        assert not visible, body
        return
    assert status == 200, body
    assert world.labels(hv, body["chunk"]) == ({"m1"} if "m1" in visible else set())
    for root in body["chunk"]:  # the thread summary must not reveal a reply the user may not read
        latest = root.get("unsigned", {}).get("m.relations", {}).get("m.thread", {}).get("latest_event")
        if latest is not None:
            assert "m2" in visible, latest


@pytest.mark.parametrize(("hv", "history"), cells("search"))
async def test_search(world: World, hv: str, history: str) -> None:
    criteria = {"search_term": "secret", "filter": {"rooms": [world.rooms[hv]]}}
    status, body = await world.harness.request(
        "POST", "search", world.users[history], json={"search_categories": {"room_events": criteria}}
    )
    assert status == 200, body
    results = body["search_categories"]["room_events"]["results"]
    found = world.labels(hv, [r["result"] for r in results]) - {"r2"}
    assert found <= VISIBLE[hv][history]
    for r in results:
        context = r.get("context", {})
        assert (
            world.labels(hv, context.get("events_before", []) + context.get("events_after", [])) - {"r2"}
            <= (VISIBLE[hv][history])
        )


@pytest.mark.parametrize(("hv", "history"), cells("legacy /events and room initialSync"))
async def test_legacy_reads(world: World, hv: str, history: str) -> None:
    visible = VISIBLE[hv][history]
    room = q(world.rooms[hv])
    status, body = await world.get(f"events?room_id={room}&from={world.events_from}&timeout=0", history)
    if _denied(status):
        assert not visible or history not in ("joined", "late"), body
    else:
        assert status == 200, body
        assert world.labels(hv, body["chunk"]) - {"r2"} <= visible
    status, body = await world.get(f"rooms/{room}/initialSync", history)
    if _denied(status):
        assert not visible or history not in ("joined", "late"), body
        return
    assert status == 200, body
    assert world.labels(hv, body.get("messages", {}).get("chunk", [])) - {"r2"} <= visible
    topics = {e["content"].get("topic") for e in body.get("state", []) if e["type"] == "m.room.topic"}
    assert "t2" not in topics or _current_state(hv, history)


# -- reading the room's state and members ---------------------------------------------------------


def _state_says(hv: str, history: str) -> str:
    if _outsider(hv, history):
        return "hides all state"
    return "shows current state" if _current_state(hv, history) else "shows state at leave, hides t2 and late"


def state_cells(what: str) -> list[Any]:
    return [
        pytest.param(hv, history, id=f"{what}[{hv}-{history}] {_state_says(hv, history)}")
        for hv in VISIBILITIES
        for history in HISTORIES
    ]


@pytest.mark.parametrize(("hv", "history"), state_cells("state"))
async def test_state(world: World, hv: str, history: str) -> None:
    room = q(world.rooms[hv])
    status, body = await world.get(f"rooms/{room}/state", history)
    status_one, one = await get_unchecked(world.harness, f"rooms/{room}/state/m.room.topic", world.users[history])
    if _outsider(hv, history):
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
        assert status_one == 403 and one["errcode"] == "M_FORBIDDEN", one
        return
    assert status == 200, body
    topic = "t2" if _current_state(hv, history) else "t1"
    assert [e["content"]["topic"] for e in body if e["type"] == "m.room.topic"] == [topic]
    members = {e["state_key"] for e in body if e["type"] == "m.room.member"}
    assert (world.users["late"].user_id in members) == _current_state(hv, history)
    assert status_one == 200 and one == {"topic": topic}


@pytest.mark.parametrize(("hv", "history"), state_cells("members+joined_members"))
async def test_members(world: World, hv: str, history: str) -> None:
    room = q(world.rooms[hv])
    late = world.users["late"].user_id
    status, body = await world.get(f"rooms/{room}/members", history)
    if _outsider(hv, history):
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    else:
        assert status == 200, body
        assert (late in {e["state_key"] for e in body["chunk"]}) == _current_state(hv, history)
    status, body = await world.get(f"rooms/{room}/joined_members", history)
    if history in ("joined", "late"):
        assert status == 200 and late in body["joined"], body
    elif hv != "world_readable":
        # spec: GET joined_members — "403: You aren't a member of the room"
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    elif status == 200:
        assert late in body["joined"]  # a world-readable room's members are public anyway


# -- /sync ------------------------------------------------------------------------------------------


def _sections(body: dict[str, Any], room: str) -> set[str]:
    return {name for name, rooms in body.get("rooms", {}).items() if room in rooms}


def _expected_section(history: str) -> set[str]:
    return {"joined": {"join"}, "late": {"join"}, "invited": {"invite"}, "knocked": {"knock"}}.get(
        history, {"leave"} if history in DEPARTED else set()
    )


def _sync_says(hv: str, history: str) -> str:
    shown = VISIBLE[hv][history] - (NONE if history in ("joined", "late") else {"m2", "m3"})
    if history in ("invited", "knocked", "never"):
        shown = NONE
    return f"in {'/'.join(_expected_section(history)) or 'no section'}; {_says(shown)}"


def sync_cells(what: str) -> list[Any]:
    return [
        pytest.param(hv, history, id=f"{what}[{hv}-{history}] {_sync_says(hv, history)}")
        for hv in VISIBILITIES
        for history in HISTORIES
    ]


def _check_sync_room(world: World, body: dict[str, Any], hv: str, history: str) -> None:
    room = world.rooms[hv]
    assert _sections(body, room) <= _expected_section(history)
    for section in ("invite", "knock"):
        if room in body.get("rooms", {}).get(section, {}):
            stripped = body["rooms"][section][room][f"{section}_state"]["events"]
            assert not world.labels(hv, stripped) and "m.room.message" not in {e["type"] for e in stripped}
    for section in ("join", "leave"):
        entry = body.get("rooms", {}).get(section, {}).get(room)
        if entry is None:
            continue
        timeline = entry["timeline"]["events"]
        # sync stops at the leave whatever the visibility: later events are not the leaver's
        allowed = VISIBLE[hv][history] if section == "join" else VISIBLE[hv][history] & BEFORE_DEPARTURE
        assert world.labels(hv, timeline) - {"r2"} <= allowed
        state = [*entry.get("state", {}).get("events", []), *timeline]
        topics = {e["content"].get("topic") for e in state if e["type"] == "m.room.topic"}
        assert section == "join" or "t2" not in topics
        ephemeral = entry.get("ephemeral", {}).get("events", [])
        assert section == "join" or not ephemeral
        if section == "join" and history in ("joined", "late"):
            assert "m3" in world.labels(hv, timeline)
            typing = [e for e in ephemeral if e["type"] == "m.typing"]
            assert typing and world.users["alice"].user_id in typing[0]["content"]["user_ids"]


@pytest.mark.parametrize(("hv", "history"), sync_cells("initial sync"))
async def test_initial_sync(world: World, hv: str, history: str) -> None:
    status, body = await world.get(f"sync?timeout=0&filter={SYNC_FILTER}", history)
    assert status == 200, body
    _check_sync_room(world, body, hv, history)


@pytest.mark.parametrize(("hv", "history"), sync_cells("incremental sync"))
async def test_incremental_sync(world: World, hv: str, history: str) -> None:
    status, body = await world.get(f"sync?timeout=0&filter={SYNC_FILTER}&since={world.since[history]}", history)
    assert status == 200, body
    _check_sync_room(world, body, hv, history)
    room = world.rooms[hv]
    if history in DEPARTED:
        assert room in body["rooms"]["leave"], "a departure reaches the next sync"
    for section in ("join", "leave"):
        entry = body.get("rooms", {}).get(section, {}).get(room)
        receipts = [e for e in (entry or {}).get("ephemeral", {}).get("events", []) if e["type"] == "m.receipt"]
        # alice's receipt (sent after the departures) reaches the room's members only. A member who
        # may not read m2 still gets the receipt on it: the spec's only receipt privacy rule is
        # about m.read.private.
        assert bool(receipts) == (section == "join" and history in ("joined", "late")) or entry is None


# -- device lists -----------------------------------------------------------------------------------

# Who shares a room with whom. At `since`: alice, insider, joined and the departed; `late` arrives
# after the departures and never meets them; never/invited/knocked share nothing, ever.
_SHARED_AT_SINCE = {"alice", "insider", "joined", *DEPARTED}
LEFT = {h: set() for h in HISTORIES} | {"joined": set(DEPARTED)}
LEFT |= {h: _SHARED_AT_SINCE - {h} for h in DEPARTED}
SHARED_NOW = {h: set() for h in HISTORIES} | {h: {"alice", "insider", "joined", "late"} for h in ("joined", "late")}
MUST_CHANGE = {h: set() for h in HISTORIES} | {"joined": {"alice", "late"}, "late": {"alice", "insider", "joined"}}


def _dl_says(history: str) -> str:
    left = ", ".join(sorted(LEFT[history])) or "nobody"
    hidden = "late" if history in DEPARTED else "strangers"
    return f"left is {left}; changed within {', '.join(sorted(SHARED_NOW[history])) or 'self'}; hides {hidden}"


@pytest.mark.parametrize("history", history_cells("device_lists", {h: _dl_says(h) for h in HISTORIES}))
async def test_device_lists(world: World, history: str) -> None:
    """The issue-10 leak: a departed user's next sync named `late`, who joined after they left."""
    names = {u.user_id: name for name, u in world.users.items()}
    status, body = await world.get(f"sync?timeout=0&filter={SYNC_FILTER}&since={world.since[history]}", history)
    assert status == 200, body
    lists = body.get("device_lists", {"changed": [], "left": []})
    status, changes = await world.get(f"keys/changes?from={world.since[history]}&to={body['next_batch']}", history)
    assert status == 200, changes
    for answer in (lists, changes):
        left = {names[u] for u in answer.get("left", [])}
        changed = {names[u] for u in answer.get("changed", [])}
        assert left == LEFT[history]
        assert MUST_CHANGE[history] <= changed <= SHARED_NOW[history] | {history}


SHARED_AT_MID = {h: set() for h in HISTORIES} | {"joined": {"alice", "insider", "joined"}}


@pytest.mark.parametrize(
    "history",
    history_cells(
        "keys/changes to a past position",
        {h: f"left is {', '.join(sorted(LEFT[h])) or 'nobody'}; hides late" for h in HISTORIES},
    ),
)
async def test_keys_changes_to_a_past_position(world: World, history: str) -> None:
    """GET /keys/changes?to= before late arrived: the answer as a /sync at `to` would have given
    it, without late (who joined after `to`) and without the later key uploads."""
    status, changes = await world.get(f"keys/changes?from={world.since[history]}&to={world.mid}", history)
    assert status == 200, changes
    names = {u.user_id: name for name, u in world.users.items()}
    assert {names[u] for u in changes["left"]} == LEFT[history]
    assert {names[u] for u in changes["changed"]} <= SHARED_AT_MID[history] | {history}


@pytest.mark.parametrize(
    "history",
    history_cells(
        "presence of late",
        {h: "shown" if h in ("joined", "late") else "hidden (no shared room)" for h in HISTORIES},
    ),
)
async def test_presence(world: World, history: str) -> None:
    """Presence goes to users who share a room (spec: presence "Security considerations" —
    "published to all users who share a room with the target user"), through /sync and
    GET /presence/{userId}/status."""
    late = world.users["late"].user_id
    status, body = await world.get(f"sync?timeout=0&filter={SYNC_FILTER}&since={world.since[history]}", history)
    assert status == 200, body
    senders = {e["sender"] for e in body.get("presence", {}).get("events", [])}
    shares = history in ("joined", "late")
    assert (late in senders) == shares or history == "late"
    status, body = await world.get(f"presence/{q(late)}/status", history)
    assert (status == 200) == shares or history == "late", body
    if not shares:
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", body


# -- directories and notifications -------------------------------------------------------------------


@pytest.mark.parametrize(
    "history",
    history_cells(
        "user_directory",
        {h: ("finds insider" if h in ("joined", "late") else "hides insider (no shared room now)") for h in HISTORIES},
    ),
)
async def test_user_directory(world: World, history: str) -> None:
    """spec: user_directory/search — users who share a room with the searcher or are in public rooms."""
    status, body = await world.harness.request(
        "POST", "user_directory/search", world.users[history], json={"search_term": "insider", "limit": 50}
    )
    assert status == 200, body
    found = world.users["insider"].user_id in {r["user_id"] for r in body["results"]}
    assert found == (history in ("joined", "late"))


@pytest.mark.parametrize("history", history_cells("publicRooms", dict.fromkeys(HISTORIES, "shows the space only")))
async def test_public_rooms(world: World, history: str) -> None:
    status, body = await world.get("publicRooms?limit=100", history)
    assert status == 200, body
    listed = {r["room_id"] for r in body["chunk"]}
    assert world.space in listed
    assert not listed & {*world.rooms.values(), world.private_room}


@pytest.mark.parametrize("history", history_cells("hierarchy", dict.fromkeys(HISTORIES, "hides the invite-only P")))
async def test_hierarchy(world: World, history: str) -> None:
    status, body = await world.get(f"/_matrix/client/v1/rooms/{q(world.space)}/hierarchy", history)
    assert status == 200, body
    assert world.space in {r["room_id"] for r in body["rooms"]}
    assert world.private_room not in {r["room_id"] for r in body["rooms"]}


async def test_hierarchy_shows_p_to_its_members(world: World) -> None:
    status, body = await world.get(f"/_matrix/client/v1/rooms/{q(world.space)}/hierarchy", "alice")
    assert status == 200 and world.private_room in {r["room_id"] for r in body["rooms"]}


@pytest.mark.parametrize(
    "history",
    history_cells("notifications", {h: _says(WHILE_JOINED.get(h, NONE)) for h in HISTORIES}),
)
async def test_notifications(world: World, history: str) -> None:
    """Mentions notify only those joined when the message was sent (spec: push rules act on members)."""
    status, body = await world.get("notifications?limit=100", history)
    assert status == 200, body
    for hv in VISIBILITIES:
        got = world.labels(hv, [n["event"] for n in body["notifications"] if n["room_id"] == world.rooms[hv]])
        assert got - {"r2"} == WHILE_JOINED.get(history, NONE), hv
