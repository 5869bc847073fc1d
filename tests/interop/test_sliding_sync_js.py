"""matrix-js-sdk's `SlidingSync` (simplified sliding sync, MSC4186) against a real server process:
a list with ranges, a room subscription outside them, the five extensions, and a long poll that a
message and a to-device message wake at once."""

from __future__ import annotations

from pathlib import Path

from .conftest import require
from .server import RunningServer
from .test_js_sdk import run_scenario

SCRIPT = Path(__file__).resolve().parent / "js" / "sliding_sync.mjs"
SLIDING_SYNC = "POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


def test_lists_subscription_extensions_and_long_poll(server: RunningServer) -> None:
    require(server, SLIDING_SYNC)
    r = run_scenario(server, "lists_subscription_extensions", SCRIPT)
    first, _second, third = r["rooms"]
    subscribed = r["subscribed"]
    initial = r["responses"][0]
    assert initial["lists"]["all"]["count"] == 4
    assert r["firstList"]["joinedCount"] == 4
    # the two most active rooms, and the subscription beside them
    assert initial["lists"]["all"]["ops"][0]["room_ids"] == [third, first]
    assert set(initial["rooms"]) == {third, first, subscribed}
    data = {room: updates[0] for room, updates in r["roomData"].items()}
    assert data[third]["name"] == "third" and data[third]["initial"] is True
    assert data[third]["timeline"][-1] == "most recent"
    assert data[first]["timeline"][-1] == "bob was here"
    # lazy-loaded members: bob, who spoke in the timeline, comes with the room
    assert ["m.room.member", r["bob"]] in data[first]["required_state"]
    sub = data[subscribed]
    assert sub["name"] == "subscribed" and len(sub["timeline"]) == 3
    assert {"m.room.create", "m.room.topic", "m.room.power_levels"} <= {t for t, _ in sub["required_state"]}
    # the long poll woke for bob's message well before its 20 s timeout
    assert r["wokeAfterMs"] < 10000
    woken = [u for u in r["roomData"][first][1:] if "wake up" in u["timeline"]]
    assert woken and "initial" not in woken[0]  # an update, not the room again
    ext = r["received"]
    assert any(e["content"] == {"n": 1} for d in ext["to_device"] for e in d["events"])
    assert "device_one_time_keys_count" in ext["e2ee"][0]
    assert any(a["type"] == "org.example.setting" for a in ext["account_data"][0]["global"])
