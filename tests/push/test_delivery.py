"""Delivery to push gateways (spec: modules/push.md "Push gateway", push-gateway-api): the real server,
in-process, POSTing to a push gateway on loopback that checks every body against the spec's schema."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from homeserver.protocol.addresses import AddressPolicy
from homeserver.push.gateway import _PolicyResolver
from storage.push import NotificationGroup
from tests.api.conftest import Harness, User, make_config, running
from tests.api.rooms_helpers import create_room, join, q, send, send_event

from .gateway import FakeGateway, until

LOOPBACK = {"ip_range_allow": ["127.0.0.0/8"]}


@pytest_asyncio.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    gw = await FakeGateway().start()
    yield gw
    await gw.stop()
    assert not gw.problems, gw.problems  # every body the server sent matched the spec's schema


def pusher_body(url: str, pushkey: str = "key-1", **data: Any) -> dict[str, Any]:
    return {
        "app_id": "im.example.app",
        "pushkey": pushkey,
        "kind": "http",
        "app_display_name": "Example",
        "device_display_name": "Phone",
        "lang": "en",
        "data": {"url": url, **data},
    }


async def set_pusher(harness: Harness, user: User, url: str, pushkey: str = "key-1", **data: Any) -> None:
    status, resp = await harness.request("POST", "pushers/set", user, json=pusher_body(url, pushkey, **data))
    assert status == 200, resp


async def pushers(harness: Harness, user: User) -> list[dict[str, Any]]:
    status, resp = await harness.request("GET", "pushers", user)
    assert status == 200
    found: list[dict[str, Any]] = resp["pushers"]
    return found


def owed(harness: Harness, user: User) -> int:
    """How many notifications the user's HTTP pushers are owed, from what is stored: what a restart
    would send (the notifications after the least advanced pusher's position)."""
    push = harness.hs.db.push
    positions = [
        push.pusher_position(user.user_id, p["app_id"], p["pushkey"])
        for p in push.pushers(user.user_id)
        if p["kind"] == "http"
    ]
    if not positions:
        return 0
    return len(push.notified_after(user.user_id, min(positions), harness.hs.db.store.counter.high, 1_000_000))


async def group_room(harness: Harness, alice: User, *others: User, name: str = "Friends") -> str:
    room_id = await create_room(harness, alice, name=name, preset="public_chat")
    for other in others:
        await join(harness, other, room_id)
    return room_id


async def test_message_notifies_with_the_spec_body(tmp_path: Path, gateway: FakeGateway) -> None:
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        await put_profile(harness, alice, "Alice")
        room_id = await group_room(harness, alice, bob, carol)
        await set_pusher(harness, bob, gateway.url, format="full", extra="kept")
        event_id = await send(harness, alice, room_id, "hello friends")
        await until(lambda: gateway.events() == [event_id])
        note = gateway.taken[0]["notification"]
        assert note["event_id"] == event_id and note["room_id"] == room_id
        assert note["type"] == "m.room.message" and note["sender"] == alice.user_id
        assert note["sender_display_name"] == "Alice" and note["room_name"] == "Friends"
        assert note["content"] == {"msgtype": "m.text", "body": "hello friends"}
        assert note["counts"] == {"unread": 1}
        assert note["prio"] == "low"  # a group message without a mention: no sound, no highlight
        [device] = note["devices"]
        assert device["app_id"] == "im.example.app" and device["pushkey"] == "key-1"
        assert isinstance(device["pushkey_ts"], int) and device["pushkey_ts"] > 1_600_000_000
        assert device["data"] == {"format": "full", "extra": "kept"}  # data without url
        assert device["tweaks"] == {}
        # a mention highlights: prio high, with the highlight and sound tweaks
        mention = await send(harness, alice, room_id, "bob!", **{"m.mentions": {"user_ids": [bob.user_id]}})
        await until(lambda: gateway.events() == [event_id, mention])
        note = gateway.taken[1]["notification"]
        assert note["prio"] == "high" and note["counts"] == {"unread": 2}
        assert note["devices"][0]["tweaks"] == {"highlight": True, "sound": "default"}
        # encrypted: prio high (the gateway cannot read it)
        encrypted = await send_event(
            harness, alice, room_id, "m.room.encrypted", {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "x"}
        )
        await until(lambda: gateway.events()[-1:] == [encrypted])
        assert gateway.taken[-1]["notification"]["prio"] == "high"
        # carol has no pusher: only bob's notifications reached the gateway; nothing stays owed
        assert len(gateway.events()) == 3
        await until(lambda: owed(harness, bob) == 0 and not harness.hs.push.delivery._pending)


async def put_profile(harness: Harness, user: User, name: str) -> None:
    status, _ = await harness.request("PUT", f"profile/{q(user.user_id)}/displayname", user, json={"displayname": name})
    assert status == 200


async def test_direct_message_rings_and_event_id_only(tmp_path: Path, gateway: FakeGateway) -> None:
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        alice, bob = await harness.user("alice"), await harness.user("bob")
        room_id = await create_room(harness, alice, is_direct=True, preset="public_chat")
        await join(harness, bob, room_id)
        await set_pusher(harness, bob, gateway.url, format="event_id_only")
        event_id = await send(harness, alice, room_id, "secret")
        await until(lambda: gateway.events() == [event_id])
        note = gateway.taken[0]["notification"]
        # what Element X asks for: ids, counts, prio and the device; nothing of the event
        assert set(note) == {"event_id", "room_id", "counts", "prio", "devices"}
        assert note["prio"] == "high"  # a one-to-one room's message has a sound
        assert note["devices"][0]["tweaks"] == {"sound": "default"}
        assert note["devices"][0]["data"] == {"format": "event_id_only"}


async def test_read_receipt_sends_a_badge_update(tmp_path: Path, gateway: FakeGateway) -> None:
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        await set_pusher(harness, bob, gateway.url)
        first = await send(harness, alice, room_id, "one")
        second = await send(harness, alice, room_id, "two")
        await until(lambda: gateway.events() == [first, second])
        assert [b["notification"]["counts"] for b in gateway.taken] == [{"unread": 1}, {"unread": 2}]
        status, _ = await harness.request("POST", f"rooms/{q(room_id)}/receipt/m.read/{q(first)}", bob, json={})
        assert status == 200
        await until(lambda: gateway.badges())
        assert gateway.badges()[0]["counts"] == {"unread": 1}
        assert [d["pushkey"] for d in gateway.badges()[0]["devices"]] == ["key-1"]
        status, _ = await harness.request("POST", f"rooms/{q(room_id)}/receipt/m.read/{q(second)}", bob, json={})
        await until(lambda: len(gateway.badges()) == 2)
        assert gateway.badges()[1]["counts"] == {"unread": 0}  # sent explicitly: the badge clears


async def test_gateway_down_then_up_across_a_restart(tmp_path: Path, gateway: FakeGateway) -> None:
    config = make_config(tmp_path, push=LOOPBACK)
    gateway.failing = True
    async with running(config) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        await set_pusher(harness, bob, gateway.url)
        sent = [await send(harness, alice, room_id, f"m{i}") for i in range(3)]
        await until(lambda: len(gateway.received) >= 2)  # tried, failed, tried again (1 s later)
        assert gateway.taken == [] and owed(harness, bob) == 3
    # the server stops with nothing acknowledged; the gateway comes back; the server starts again
    gateway.failing = False
    async with running(config) as harness:
        await until(lambda: gateway.events() == sent)
        await until(lambda: owed(harness, bob) == 0)
    # and again: what was acknowledged is never resent (the next message comes first and alone)
    async with running(config) as harness:
        status, body = await harness.request(
            "POST",
            "/_matrix/client/v3/login",
            json={"type": "m.login.password", "user": "alice", "password": "correct horse"},
        )
        assert status == 200
        alice = User(body["user_id"], body["device_id"], body["access_token"])
        later = await send(harness, alice, room_id, "after")
        await until(lambda: gateway.events() == [*sent, later])


async def test_retry_delivers_once_in_order(tmp_path: Path, gateway: FakeGateway) -> None:
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        await set_pusher(harness, bob, gateway.url)
        gateway.failing = True
        sent = [await send(harness, alice, room_id, f"m{i}") for i in range(4)]
        await until(lambda: len(gateway.received) >= 2)
        gateway.failing = False
        await until(lambda: gateway.events() == sent, deadline_s=15)
        attempts = [b["notification"]["event_id"] for b in gateway.received]
        assert set(attempts[:-3]) == {sent[0]}  # nothing after the first was tried before it went through


async def test_rejected_pushkey_deletes_the_pusher(tmp_path: Path, gateway: FakeGateway) -> None:
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        await set_pusher(harness, bob, gateway.url, pushkey="dead")
        await set_pusher(harness, bob, gateway.url, pushkey="alive")
        gateway.rejected = {"dead"}
        event_id = await send(harness, alice, room_id, "hi")
        await until(lambda: [p["pushkey"] for p in harness.hs.push.pushers.pushers(bob.user_id)] == ["alive"])
        assert [p["pushkey"] for p in await pushers(harness, bob)] == ["alive"]
        await until(lambda: event_id in gateway.events())
        second = await send(harness, alice, room_id, "again")
        await until(lambda: gateway.events()[-1:] == [second])
        assert [b["notification"]["devices"][0]["pushkey"] for b in gateway.received[-1:]] == ["alive"]


async def test_slow_gateway_does_not_delay_another_user(tmp_path: Path, gateway: FakeGateway) -> None:
    slow = await FakeGateway().start()
    slow.hold = asyncio.Event()
    try:
        async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
            alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
            room_id = await group_room(harness, alice, bob, carol)
            await set_pusher(harness, bob, slow.url, pushkey="bob-key")
            await set_pusher(harness, carol, gateway.url)
            first = await send(harness, alice, room_id, "one")
            await until(lambda: slow.received)  # bob's gateway holds the request
            second = await send(harness, alice, room_id, "two")
            await until(lambda: gateway.events() == [first, second], deadline_s=3)
            assert slow.taken == []  # still waiting for the slow one
            # and the server itself answers meanwhile
            status, _ = await harness.request("GET", "pushers", bob)
            assert status == 200
            slow.hold.set()
            await until(lambda: slow.events() == [first, second])
    finally:
        await slow.stop()
        assert not slow.problems


async def test_pushers_go_with_their_device(tmp_path: Path, gateway: FakeGateway) -> None:
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        bob = await harness.user("bob")
        await set_pusher(harness, bob, gateway.url)
        assert len(await pushers(harness, bob)) == 1
        status, _ = await harness.request("POST", "logout", bob, json={})
        assert status == 200
        assert harness.hs.push.pushers.pushers(bob.user_id) == []
        assert not harness.hs.push.delivery.has_pushers(bob.user_id)
        # deactivation deletes every device, and with them the pushers
        carol = await harness.user("carol")
        await set_pusher(harness, carol, gateway.url, pushkey="c")
        await harness.hs.deactivation.deactivate(carol.user_id)
        assert harness.hs.push.pushers.pushers(carol.user_id) == []


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://push.example.com/_matrix/push/v1/notify", True),
        ("http://push.example.com:8080/_matrix/push/v1/notify", True),
        ("https://8.8.8.8/_matrix/push/v1/notify", True),
        ("https://push.example.com/_matrix/push/v1/notif", False),
        ("https://push.example.com/_matrix/push/v1/notify/extra", False),
        ("ftp://push.example.com/_matrix/push/v1/notify", False),
        ("push.example.com/_matrix/push/v1/notify", False),
        ("https://127.0.0.1/_matrix/push/v1/notify", False),
        ("https://10.1.2.3/_matrix/push/v1/notify", False),
        ("https://[::1]/_matrix/push/v1/notify", False),
        ("https://[::ffff:192.168.0.1]/_matrix/push/v1/notify", False),
        ("https://169.254.169.254/_matrix/push/v1/notify", False),
        ("https://localhost/_matrix/push/v1/notify", False),
        ("https://user:pw@push.example.com/_matrix/push/v1/notify", False),
        ("https://push.example.com:99999/_matrix/push/v1/notify", False),
        (42, False),
    ],
)
async def test_pusher_url_validation(tmp_path: Path, url: Any, allowed: bool) -> None:
    async with running(make_config(tmp_path)) as harness:
        bob = await harness.user("bob")
        body = {**pusher_body("x"), "data": {"url": url}}
        status, resp = await harness.request("POST", "pushers/set", bob, json=body)
        if allowed:
            assert status == 200, resp
        else:
            assert status == 400 and resp["errcode"] == "M_INVALID_PARAM", resp
            assert await pushers(harness, bob) == []


async def test_ip_range_allow_admits_a_private_gateway(tmp_path: Path) -> None:
    async with running(make_config(tmp_path, push={"ip_range_allow": ["10.0.0.0/8"]})) as harness:
        bob = await harness.user("bob")
        ok = pusher_body("http://10.1.2.3:5000/_matrix/push/v1/notify")
        assert (await harness.request("POST", "pushers/set", bob, json=ok))[0] == 200
        other = pusher_body("http://192.168.1.1/_matrix/push/v1/notify", pushkey="k2")
        status, resp = await harness.request("POST", "pushers/set", bob, json=other)
        assert status == 400 and resp["errcode"] == "M_INVALID_PARAM"


async def test_a_gateway_name_resolving_to_loopback_is_refused_at_connection() -> None:
    """A name is accepted when set but checked at each connection: DNS that points a gateway name at
    the server's own network (after the URL was accepted) gets no request."""
    refused = _PolicyResolver(AddressPolicy())
    allowed = _PolicyResolver(AddressPolicy(["127.0.0.0/8", "::1/128"]))
    try:
        with pytest.raises(OSError):
            await refused.resolve("localhost", 80)
        assert {r["host"] for r in await allowed.resolve("localhost", 80)} <= {"127.0.0.1", "::1"}
    finally:
        await refused.close()
        await allowed.close()


async def test_email_pushers_are_stored_but_owe_nothing(tmp_path: Path) -> None:
    async with running(make_config(tmp_path)) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        email = {**pusher_body("x"), "kind": "email", "pushkey": "bob@example.com", "app_id": "m.email", "data": {}}
        assert (await harness.request("POST", "pushers/set", bob, json=email))[0] == 200
        assert not harness.hs.push.delivery.has_pushers(bob.user_id)
        await send(harness, alice, room_id, "hi")
        assert (
            harness.hs.push.notifications.counts(
                bob.user_id, harness.hs.db.ids.room(room_id) or 0
            ).total.notification_count
            == 1
        )
        assert not harness.hs.push.delivery._pending  # notified, and nothing set off to send it


async def test_a_write_still_in_flight_below_is_not_skipped(tmp_path: Path, gateway: FakeGateway) -> None:
    """Positions are taken before batches land: a notification above a write still in flight waits,
    or the pusher would move past the smaller position that lands later."""
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        await set_pusher(harness, bob, gateway.url)
        counter = harness.hs.db.store.counter
        in_flight = counter.allocate()  # a write elsewhere that has not landed yet
        event_id = await send(harness, alice, room_id, "after the gap")
        await asyncio.sleep(0.2)  # asserting that nothing happens: give the worker its chance
        assert gateway.received == []
        counter.release([in_flight])
        await until(lambda: gateway.events() == [event_id])


async def test_a_notification_the_gateway_refuses_for_good_is_skipped(tmp_path: Path, gateway: FakeGateway) -> None:
    """A 4xx (but 429) will not change on retry: that notification is dropped, the next ones go."""
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        await set_pusher(harness, bob, gateway.url)
        gateway.status = 400
        refused = await send(harness, alice, room_id, "refused")
        await until(lambda: owed(harness, bob) == 0)
        assert [b["notification"]["event_id"] for b in gateway.received] == [refused]
        gateway.status = 200
        taken = await send(harness, alice, room_id, "taken")
        await until(lambda: gateway.events() == [taken])
        assert len(harness.hs.push.pushers.pushers(bob.user_id)) == 1  # the pusher stays


async def test_stale_notifications_are_skipped(tmp_path: Path, gateway: FakeGateway) -> None:
    """A notification older than a day (here: any, the limit set below zero) is not sent late."""
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        await set_pusher(harness, bob, gateway.url)
        harness.hs.push.delivery.stale_after_s = -1.0
        await send(harness, alice, room_id, "old news")
        await until(lambda: owed(harness, bob) == 0)
        assert gateway.received == []


async def login(harness: Harness, localpart: str) -> User:
    status, body = await harness.request(
        "POST",
        "/_matrix/client/v3/login",
        json={"type": "m.login.password", "user": localpart, "password": "correct horse"},
    )
    assert status == 200
    return User(body["user_id"], body["device_id"], body["access_token"])


async def test_restart_mid_delivery_sends_the_rest_exactly_once(tmp_path: Path, gateway: FakeGateway) -> None:
    """What the gateway took before a restart is never resent; what it had not, is sent after it,
    although the server's memory of what was owed is gone: the pusher reads it from the store."""
    config = make_config(tmp_path, push=LOOPBACK)
    async with running(config) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        await set_pusher(harness, bob, gateway.url)
        taken = [await send(harness, alice, room_id, f"taken {i}") for i in range(2)]
        await until(lambda: gateway.events() == taken)
        gateway.failing = True
        owed_now = [await send(harness, alice, room_id, f"owed {i}") for i in range(3)]
        await until(lambda: owed_now[0] in [b["notification"].get("event_id") for b in gateway.received])
        assert owed(harness, bob) == 3
    gateway.failing = False
    async with running(config) as harness:
        await until(lambda: gateway.events() == [*taken, *owed_now])
        await until(lambda: owed(harness, bob) == 0 and not harness.hs.push.delivery._pending)
        later = await send(harness, await login(harness, "alice"), room_id, "after")
        await until(lambda: gateway.events() == [*taken, *owed_now, later])
        assert harness.hs.push.delivery._remembered == 0  # nothing held once every pusher has it


async def test_a_new_pusher_is_owed_only_what_comes_after_it(tmp_path: Path, gateway: FakeGateway) -> None:
    """Notifications the user had before setting a pusher are not sent to it, not even after a
    restart (where what is owed is read from the stored notifications)."""
    config = make_config(tmp_path, push=LOOPBACK)
    async with running(config) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        for i in range(3):
            await send(harness, alice, room_id, f"before {i}")
        await set_pusher(harness, bob, gateway.url)
        assert owed(harness, bob) == 0
        after = await send(harness, alice, room_id, "after")
        await until(lambda: gateway.events() == [after])
        # a second pusher of bob's (another phone) starts from now too; the first keeps its place
        gateway.failing = True
        await set_pusher(harness, bob, gateway.url, pushkey="key-2")
        last = await send(harness, alice, room_id, "last")
        await until(lambda: len(gateway.received) >= 3)
    gateway.failing = False
    async with running(config) as harness:
        await until(lambda: gateway.events().count(last) == 2)
        await until(lambda: owed(harness, bob) == 0)
        assert gateway.events() == [after, last, last]


async def test_beyond_the_memory_bound_pushers_read_the_store(tmp_path: Path, gateway: FakeGateway) -> None:
    """What is owed is held in memory up to a bound; past it, it is forgotten and the pushers read
    their notifications from the store: every one still arrives, once, in order."""
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        delivery = harness.hs.push.delivery
        delivery.max_remembered = 3
        alice, bob, carol, dave = [await harness.user(n) for n in ("alice", "bob", "carol", "dave")]
        room_id = await group_room(harness, alice, bob, carol, dave)
        await set_pusher(harness, bob, gateway.url, pushkey="bob")
        await set_pusher(harness, carol, gateway.url, pushkey="carol")
        gateway.hold = asyncio.Event()
        sent = [await send(harness, alice, room_id, f"m{i}") for i in range(7)]
        assert delivery._remembered <= 3
        gateway.hold.set()
        gateway.hold = None
        for pushkey in ("bob", "carol"):
            await until(lambda key=pushkey: [e for e, k in pushed(gateway) if k == key] == sent)
        await until(lambda: not delivery._pending)
        assert delivery._remembered == 0


def pushed(gateway: FakeGateway) -> list[tuple[str, str]]:
    """(event id, pushkey) of the notifications the gateway took, in order."""
    return [
        (b["notification"]["event_id"], b["notification"]["devices"][0]["pushkey"])
        for b in gateway.taken
        if "event_id" in b["notification"]
    ]


async def test_notifications_landing_out_of_order_go_out_in_order(tmp_path: Path, gateway: FakeGateway) -> None:
    """Two events' batches take positions in one order and land in the other: the pusher waits
    for the earlier position to land, then sends both, in position order, once each."""
    async with running(make_config(tmp_path, push=LOOPBACK)) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        # two real events to point the notifications at, sent before bob has a pusher
        first, second = [await send(harness, alice, room_id, f"m{i}") for i in range(2)]
        await set_pusher(harness, bob, gateway.url)
        hs, store, push = harness.hs, harness.hs.db.store, harness.hs.db.push
        room = hs.queries.room(room_id) or 0
        batches = [store.batch(), store.batch()]
        for batch, event_id in zip(batches, (first, second), strict=True):
            position, short = batch.next_count(), hs.queries.event_short(event_id) or 0
            group = NotificationGroup(["notify"], False, [bob.user_id])
            push.add_notifications(room_id, room, position, short, int(time.time() * 1000), "", [group], batch)
            batch.on_commit.append(functools.partial(hs.push._landed, room, position, [[bob.user_id]], None))
        with batches[1]:
            await batches[1].commit()
        await asyncio.sleep(0.2)  # asserting that nothing happens: give the worker its chance
        assert gateway.received == []
        with batches[0]:
            await batches[0].commit()
        await until(lambda: gateway.events() == [first, second])
        await until(lambda: not hs.push.delivery._pending)
        assert gateway.events() == [first, second]


async def test_a_clean_stop_stores_how_far_caught_up_pushers_are(tmp_path: Path, gateway: FakeGateway) -> None:
    """A pusher with nothing owed when the server stops is stored as owed nothing up to the end
    of the stream, so after the restart it has nothing to read back; what comes later still goes."""
    config = make_config(tmp_path, push=LOOPBACK)
    async with running(config) as harness:
        alice, bob, carol = [await harness.user(n) for n in ("alice", "bob", "carol")]
        room_id = await group_room(harness, alice, bob, carol)
        await set_pusher(harness, bob, gateway.url)
        first = await send(harness, alice, room_id, "one")
        await until(lambda: gateway.events() == [first] and not harness.hs.push.delivery._pending)
        for i in range(3):  # bob's own messages: the stream moves on, nothing is owed to bob
            await send(harness, bob, room_id, f"mine {i}")
        end = harness.hs.db.store.counter.high
        assert harness.hs.db.push.pusher_position(bob.user_id, "im.example.app", "key-1") < end
    async with running(config) as harness:
        assert harness.hs.db.push.pusher_position(bob.user_id, "im.example.app", "key-1") == end
        later = await send(harness, await login(harness, "alice"), room_id, "after")
        await until(lambda: gateway.events() == [first, later])
