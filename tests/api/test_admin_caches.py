"""GET /_homeserver/admin/v1/caches: the live caches, their budget and hit rates, for admins only."""

from __future__ import annotations

from storage.cache import ENTRY_BYTES

from .conftest import Harness

PATH = "/_homeserver/admin/v1/caches"


def _cache(report: dict, name: str) -> dict:
    (found,) = [c for c in report["caches"] if c["name"] == name]
    return found


async def test_an_admin_sees_every_cache_with_its_counters(harness: Harness) -> None:
    admin = await harness.user("root", admin=True)
    status, report = await harness.request("GET", PATH, admin)
    assert status == 200
    assert report["budget_mb"] == harness.hs.config.cache_mb
    assert report["rss_bytes"] > 0
    names = {c["name"] for c in report["caches"]}
    assert {"events.json", "events.meta", "ids.event_to_short", "auth.tokens", "leveldb", "state.snapshots"} <= names
    for c in report["caches"]:
        assert set(c) >= {"name", "entries", "capacity", "estimated_bytes", "hits", "misses", "hit_rate"}
    assert report["estimated_bytes"] == sum(c["estimated_bytes"] for c in report["caches"])


async def test_counters_move_with_use(harness: Harness) -> None:
    admin = await harness.user("root", admin=True)
    _, before = await harness.request("GET", PATH, admin)
    status, room = await harness.request("POST", "createRoom", admin, json={})
    assert status == 200
    for i in range(3):
        status, _ = await harness.request(
            "PUT", f"rooms/{room['room_id']}/send/m.room.message/t{i}", admin, json={"msgtype": "m.text", "body": "hi"}
        )
        assert status == 200
    _, after = await harness.request("GET", PATH, admin)
    tokens_before, tokens_after = _cache(before, "auth.tokens"), _cache(after, "auth.tokens")
    assert tokens_after["hits"] > tokens_before["hits"]  # each request looked its token up
    events_after = _cache(after, "events.json")
    assert events_after["entries"] > _cache(before, "events.json")["entries"]
    assert events_after["estimated_bytes"] == events_after["entries"] * ENTRY_BYTES["events.json"]
    assert 0.0 <= (tokens_after["hit_rate"] or 0.0) <= 1.0


async def test_a_user_who_is_not_an_admin_gets_403(harness: Harness) -> None:
    user = await harness.user("alice")
    status, body = await harness.request("GET", PATH, user)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = await harness.request("GET", PATH)
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
