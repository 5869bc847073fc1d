"""Rooms that span our server and a real Synapse, driven by matrix-nio clients on both sides.

spec: client-server-api "Room membership", "Room aliases", "Typing notifications", "Receipts", "Presence";
server-server-api "Joining rooms", "Inviting to a room", "Leaving rooms (rejecting invites)",
"Querying for information", "Presence". One Synapse and one of our servers for the module, both named
`127.0.0.1:<TLS port>` and trusting the test CA. Every check polls a user's own /sync with a
deadline; each scenario prints how long it took.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    PresenceEvent,
    PresenceGetResponse,
    PresenceSetResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomSendResponse,
    RoomVisibility,
    SyncResponse,
    TypingNoticeEvent,
)
from nio.api import RoomPreset

from .server import RunningServer, http_json

pytestmark = pytest.mark.asyncio

PASSWORD = "interop password 1"
DEADLINE_S = 20.0


@asynccontextmanager
async def user(server: RunningServer, localpart: str) -> AsyncIterator[AsyncClient]:
    """A nio client of a new account (registered by nio), closed afterwards."""
    client = AsyncClient(server.base_url, config=AsyncClientConfig(encryption_enabled=False, store_sync_tokens=False))
    try:
        resp = await client.register(localpart, PASSWORD, device_name=f"nio {localpart}")
        assert isinstance(resp, RegisterResponse), resp
        await client.sync(timeout=0)  # from here on, each wait sees only what is new
        yield client
    finally:
        await client.close()


async def until(client: AsyncClient, found: Callable[[SyncResponse], Any], what: str) -> Any:
    """Sync (long-polling, from the client's last position) until `found` returns something."""
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        resp = await client.sync(timeout=1000)
        assert isinstance(resp, SyncResponse), resp
        result = found(resp)
        if result:
            return result
    raise AssertionError(f"{client.user_id} did not see {what} within {DEADLINE_S}s")


def timeline_event(room_id: str, check: Callable[[dict[str, Any]], bool]) -> Callable[[SyncResponse], Any]:
    def found(resp: SyncResponse) -> Any:
        room = resp.rooms.join.get(room_id)
        events = room.timeline.events if room is not None else []
        return next((e.source for e in events if check(e.source)), None)

    return found


def member(room_id: str, user_id: str, membership: str) -> Callable[[SyncResponse], Any]:
    """A member event in the room's timeline, joined or (for the subject, after leaving) left."""

    def check(e: dict[str, Any]) -> bool:
        return (
            e.get("type") == "m.room.member"
            and e.get("state_key") == user_id
            and e.get("content", {}).get("membership") == membership
        )

    def found(resp: SyncResponse) -> Any:
        for section in (resp.rooms.join, resp.rooms.leave):
            room = section.get(room_id)
            for e in room.timeline.events if room is not None else []:
                if check(e.source):
                    return e.source
        return None

    return found


def message(room_id: str, body: str) -> Callable[[SyncResponse], Any]:
    return timeline_event(room_id, lambda e: e.get("content", {}).get("body") == body)


def all_of(*wanted: Callable[[SyncResponse], Any]) -> Callable[[SyncResponse], Any]:
    """Every check met, whether in one sync response or over several (events sent close together
    can arrive in one transaction, hence in one response)."""
    left = list(wanted)

    def found(resp: SyncResponse) -> Any:
        left[:] = [check for check in left if not check(resp)]
        return not left

    return found


def invited(room_id: str) -> Callable[[SyncResponse], Any]:
    def found(resp: SyncResponse) -> Any:
        room = resp.rooms.invite.get(room_id)
        return room.invite_state if room is not None else None

    return found


def left(room_id: str) -> Callable[[SyncResponse], Any]:
    return lambda resp: room_id in resp.rooms.leave


def typing(room_id: str, user_id: str) -> Callable[[SyncResponse], Any]:
    def found(resp: SyncResponse) -> Any:
        room = resp.rooms.join.get(room_id)
        return any(isinstance(e, TypingNoticeEvent) and user_id in e.users for e in (room.ephemeral if room else []))

    return found


def receipt(room_id: str, user_id: str, event_id: str) -> Callable[[SyncResponse], Any]:
    def found(resp: SyncResponse) -> Any:
        room = resp.rooms.join.get(room_id)
        return any(
            isinstance(e, ReceiptEvent) and any(r.user_id == user_id and r.event_id == event_id for r in e.receipts)
            for e in (room.ephemeral if room else [])
        )

    return found


async def send(client: AsyncClient, room_id: str, body: str) -> str:
    resp = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})
    assert isinstance(resp, RoomSendResponse), resp
    return resp.event_id


async def create(client: AsyncClient, *, alias: str | None = None, version: str | None = None, public: bool) -> str:
    resp = await client.room_create(
        visibility=RoomVisibility.public if public else RoomVisibility.private,
        alias=alias,
        name=f"room of {client.user_id}",
        room_version=version,
        preset=RoomPreset.public_chat if public else RoomPreset.private_chat,
    )
    assert isinstance(resp, RoomCreateResponse), resp
    return resp.room_id


def join_via(server: RunningServer, client: AsyncClient, room: str, via: list[str]) -> tuple[int, dict[str, Any]]:
    """POST /join/{roomIdOrAlias}?via=… (nio has no `via`): (status, answer)."""
    query = urllib.parse.urlencode([("via", v) for v in via])
    url = f"{server.base_url}/_matrix/client/v3/join/{urllib.parse.quote(room, safe='')}?{query}"
    try:
        return 200, http_json("POST", url, {}, client.access_token)
    except urllib.error.HTTPError as e:
        import json

        return e.code, json.loads(e.read() or b"{}")


def report(name: str, started: float) -> None:
    print(f"\n[federation rooms] {name}: {time.monotonic() - started:.2f} s")


async def test_synapse_user_joins_our_room_by_alias(synapse: RunningServer, ours: RunningServer) -> None:
    """(a) Synapse asks us for the alias and joins through us; messages, typing and receipts flow
    both ways into each side's /sync."""
    started = time.monotonic()
    async with user(ours, "alice") as alice, user(synapse, "bob") as bob:
        room_id = await create(alice, alias="lobby", public=True)
        joined = await bob.join(f"#lobby:{ours.server_name}")
        assert isinstance(joined, JoinResponse), joined
        assert joined.room_id == room_id
        await until(alice, member(room_id, bob.user_id, "join"), "bob's join")
        from_alice = await send(alice, room_id, "hello from our server")
        await until(bob, message(room_id, "hello from our server"), "alice's message")
        from_bob = await send(bob, room_id, "hello from synapse")
        await until(alice, message(room_id, "hello from synapse"), "bob's message")
        await alice.room_typing(room_id, True, timeout=20000)
        await until(bob, typing(room_id, alice.user_id), "alice typing")
        await bob.room_typing(room_id, True, timeout=20000)
        await until(alice, typing(room_id, bob.user_id), "bob typing")
        await alice.update_receipt_marker(room_id, from_bob)
        await until(bob, receipt(room_id, alice.user_id, from_bob), "alice's receipt")
        await bob.update_receipt_marker(room_id, from_alice)
        await until(alice, receipt(room_id, bob.user_id, from_alice), "bob's receipt")
        # the remote member's profile, asked of Synapse over federation
        await bob.set_displayname("Bob on Synapse")
        profile = await alice.get_profile(bob.user_id)
        assert getattr(profile, "displayname", None) == "Bob on Synapse", profile
    report("a) Synapse user joins our room by alias, messages/typing/receipts both ways", started)


def presence(user_id: str, status_msg: str) -> Callable[[SyncResponse], Any]:
    """`user_id` online with `status_msg` in the /sync `presence` section (Synapse's
    GET /presence/{userId}/status can keep a stale "offline" in memory when it races with the
    first EDU for that user, so the test looks where clients look)."""

    def found(resp: SyncResponse) -> Any:
        return any(
            isinstance(e, PresenceEvent) and (e.user_id, e.presence, e.status_msg) == (user_id, "online", status_msg)
            for e in resp.presence_events
        )

    return found


async def test_presence_both_ways(synapse: RunningServer, ours: RunningServer) -> None:
    """Presence (both servers have it on) set on either server reaches the other server's user who
    shares a room with them, as an `m.presence` EDU: each asks only its own server. Presence set
    before the rooms are shared reaches a server when it joins, without a change to carry it."""
    started = time.monotonic()
    async with user(ours, "pia") as pia, user(synapse, "quinn") as quinn:
        room_id = await create(pia, public=True)
        sent = await pia.set_presence("online", "here before you")
        assert isinstance(sent, PresenceSetResponse), sent
        status, answer = join_via(synapse, quinn, room_id, [ours.server_name])
        assert status == 200, answer
        joined = time.monotonic()
        await until(quinn, presence(pia.user_id, "here before you"), "pia's presence from before the join")
        assert time.monotonic() - joined < 5.0, "our server told Synapse of pia's presence late"
        await until(pia, member(room_id, quinn.user_id, "join"), "quinn's join")
        sent = await pia.set_presence("online", "on our server")
        assert isinstance(sent, PresenceSetResponse), sent
        await until(quinn, presence(pia.user_id, "on our server"), "pia's presence")
        sent = await quinn.set_presence("online", "on synapse")
        assert isinstance(sent, PresenceSetResponse), sent
        await until(pia, presence(quinn.user_id, "on synapse"), "quinn's presence")
        # and through our server's GET /presence/{userId}/status
        got = await pia.get_presence(quinn.user_id)
        assert isinstance(got, PresenceGetResponse) and got.status_msg == "on synapse", got
    report("presence both ways", started)


@pytest.mark.parametrize("version", ["10", "11", "12"])
async def test_our_user_joins_synapse_rooms(synapse: RunningServer, ours: RunningServer, version: str) -> None:
    """(b) Our users join Synapse rooms by alias and by id with `via`; a v12 id alone names no
    server, so joining by it without `via` is refused with a clear error."""
    started = time.monotonic()
    v = version
    async with user(synapse, f"carol{v}") as carol, user(ours, f"dave{v}") as dave, user(ours, f"erin{v}") as erin:
        by_alias = await create(carol, alias=f"square{v}", version=version, public=True)
        by_id = await create(carol, version=version, public=True)
        resolved = await dave.room_resolve_alias(f"#square{v}:{synapse.server_name}")
        assert getattr(resolved, "room_id", None) == by_alias, resolved
        joined = await dave.join(f"#square{v}:{synapse.server_name}")
        assert isinstance(joined, JoinResponse) and joined.room_id == by_alias, joined
        await until(dave, member(by_alias, dave.user_id, "join"), "the room in /sync")
        if version == "12":
            status, answer = join_via(ours, erin, by_id, [])
            assert status == 404 and answer["errcode"] == "M_NOT_FOUND" and "via" in answer["error"], answer
        status, answer = join_via(ours, erin, by_id, [synapse.server_name])
        assert status == 200 and answer["room_id"] == by_id, answer
        await until(erin, member(by_id, erin.user_id, "join"), "erin's join in /sync")
        await send(dave, by_alias, f"dave in v{v}")
        await send(erin, by_id, f"erin in v{v}")
        theirs = all_of(message(by_alias, f"dave in v{v}"), message(by_id, f"erin in v{v}"))
        await until(carol, theirs, "dave's and erin's messages")
        await send(carol, by_id, f"carol in v{v}")
        await until(erin, message(by_id, f"carol in v{v}"), "carol's message")
    report(f"b) our users join Synapse v{version} rooms by alias and by id with via", started)


async def test_invites_both_ways(synapse: RunningServer, ours: RunningServer) -> None:
    """(c) Invites of users of the other server, accepted and rejected, in both directions."""
    started = time.monotonic()
    async with (
        user(ours, "fay") as fay,
        user(synapse, "gus") as gus,
        user(synapse, "hal") as hal,
        user(synapse, "ida") as ida,
        user(ours, "jon") as jon,
        user(ours, "kim") as kim,
    ):
        # ours -> Synapse
        ours_room = await create(fay, public=False)
        assert (await fay.room_invite(ours_room, gus.user_id)).__class__.__name__ == "RoomInviteResponse"
        assert (await fay.room_invite(ours_room, hal.user_id)).__class__.__name__ == "RoomInviteResponse"
        await until(gus, invited(ours_room), "fay's invite")
        joined = await gus.join(ours_room)
        assert isinstance(joined, JoinResponse), joined
        await until(fay, member(ours_room, gus.user_id, "join"), "gus accepting")
        await until(hal, invited(ours_room), "fay's invite")
        await hal.room_leave(ours_room)
        await until(fay, member(ours_room, hal.user_id, "leave"), "hal refusing")
        # a direct chat: createRoom inviting a Synapse user
        dm = await fay.room_create(is_direct=True, invite=[hal.user_id], preset=RoomPreset.trusted_private_chat)
        assert isinstance(dm, RoomCreateResponse), dm
        dm_state = await until(hal, invited(dm.room_id), "fay's direct chat invite")
        mine = [e for e in dm_state if getattr(e, "state_key", None) == hal.user_id]
        assert mine and mine[-1].content.get("is_direct") is True, dm_state
        # Synapse -> ours: the invite shows the room's stripped state; accepted through Synapse
        theirs = await create(ida, public=False)
        await ida.room_invite(theirs, jon.user_id)
        await ida.room_invite(theirs, kim.user_id)
        state = await until(jon, invited(theirs), "ida's invite")
        assert any(getattr(e, "name", None) == f"room of {ida.user_id}" for e in state), state
        joined = await jon.join(theirs)
        assert isinstance(joined, JoinResponse), joined
        await until(jon, member(theirs, jon.user_id, "join"), "the room in /sync")
        await until(ida, member(theirs, jon.user_id, "join"), "jon accepting")
        await until(kim, invited(theirs), "ida's invite")
        await kim.room_leave(theirs)
        await until(kim, left(theirs), "the refused invite as left")
        await until(ida, member(theirs, kim.user_id, "leave"), "kim refusing")
        forgotten = await kim.room_forget(theirs)
        assert forgotten.__class__.__name__ == "RoomForgetResponse", forgotten
    report("c) invites both ways, accepted and rejected", started)


async def test_leave_kick_ban_unban_across_servers(synapse: RunningServer, ours: RunningServer) -> None:
    """(c) Leave, kick, ban and unban, by users of either server of users of the other."""
    started = time.monotonic()
    async with (
        user(ours, "lea") as lea,
        user(synapse, "max") as mx,
        user(synapse, "ned") as ned,
        user(ours, "oli") as oli,
    ):
        # in our room, of a Synapse user
        ours_room = await create(lea, alias="moderated", public=True)
        assert isinstance(await mx.join(f"#moderated:{ours.server_name}"), JoinResponse)
        await until(lea, member(ours_room, mx.user_id, "join"), "max's join")
        await lea.room_kick(ours_room, mx.user_id, reason="out")
        await until(mx, left(ours_room), "being kicked")
        # our room ids may have no server part (v12): Synapse joins again by alias
        assert isinstance(await mx.join(f"#moderated:{ours.server_name}"), JoinResponse)
        await until(lea, member(ours_room, mx.user_id, "join"), "max's rejoin")
        await mx.room_leave(ours_room)
        await until(lea, member(ours_room, mx.user_id, "leave"), "max leaving")
        await lea.room_ban(ours_room, mx.user_id, reason="gone")
        await until(lea, member(ours_room, mx.user_id, "ban"), "the ban")
        refused = await mx.join(f"#moderated:{ours.server_name}")
        assert not isinstance(refused, JoinResponse), refused
        await lea.room_unban(ours_room, mx.user_id)
        assert isinstance(await mx.join(f"#moderated:{ours.server_name}"), JoinResponse)
        await until(lea, member(ours_room, mx.user_id, "join"), "max's join after the unban")
        # in a Synapse room, of our user
        theirs = await create(ned, alias="guarded", public=True)
        assert isinstance(await oli.join(f"#guarded:{synapse.server_name}"), JoinResponse)
        await until(ned, member(theirs, oli.user_id, "join"), "oli's join")
        await ned.room_kick(theirs, oli.user_id, reason="out")
        await until(oli, left(theirs), "being kicked")
        assert isinstance(await oli.join(theirs), JoinResponse)
        await until(ned, member(theirs, oli.user_id, "join"), "oli's rejoin")
        await oli.room_leave(theirs)
        await until(ned, member(theirs, oli.user_id, "leave"), "oli leaving")
        await ned.room_ban(theirs, oli.user_id, reason="gone")
        await until(ned, member(theirs, oli.user_id, "ban"), "the ban")
        status, answer = join_via(ours, oli, theirs, [synapse.server_name])
        assert status == 403 and answer["errcode"] == "M_FORBIDDEN", answer
        await ned.room_unban(theirs, oli.user_id)
        await until(ned, member(theirs, oli.user_id, "leave"), "the unban")
        status, answer = join_via(ours, oli, theirs, [synapse.server_name])
        assert status == 200, answer
        await until(ned, member(theirs, oli.user_id, "join"), "oli's join after the unban")
    report("c) leave, kick, ban, unban across servers", started)


async def test_our_user_knocks_on_a_synapse_room(synapse: RunningServer, ours: RunningServer) -> None:
    """spec: client-server POST /knock, server-server "Knocking upon a room": our user's knock
    reaches the room on Synapse, shows in our /sync under rooms.knock with the room's stripped
    state, and the Synapse user lets them in."""
    started = time.monotonic()
    async with user(synapse, "knockee_host") as host, user(ours, "knocker") as knocker:
        room_id = await create(host, version="10", public=False)
        rules = await host.room_put_state(room_id, "m.room.join_rules", {"join_rule": "knock"})
        assert getattr(rules, "status_code", None) is None, rules
        query = urllib.parse.urlencode([("via", synapse.server_name)])
        url = f"{ours.base_url}/_matrix/client/v3/knock/{urllib.parse.quote(room_id, safe='')}?{query}"
        assert http_json("POST", url, {"reason": "hello"}, knocker.access_token) == {"room_id": room_id}

        # our /sync over HTTP (rooms.knock is newer than what nio parses)
        deadline = time.monotonic() + DEADLINE_S
        while True:
            answer = http_json(
                "GET", f"{ours.base_url}/_matrix/client/v3/sync?timeout=1000", token=knocker.access_token
            )
            knock = answer.get("rooms", {}).get("knock", {}).get(room_id)
            if knock is not None:
                break
            assert time.monotonic() < deadline, "our user's knock did not show in /sync"
        types = {e["type"] for e in knock["knock_state"]["events"]}
        assert {"m.room.create", "m.room.join_rules"} <= types
        # the host sees the knock and invites them in
        await until(
            host,
            lambda r: any(
                e.source.get("type") == "m.room.member"
                and e.source.get("state_key") == knocker.user_id
                and e.source.get("content", {}).get("membership") == "knock"
                for room in [r.rooms.join.get(room_id)]
                if room
                for e in room.timeline.events
            ),
            "the knock",
        )
        invite = await host.room_invite(room_id, knocker.user_id)
        assert getattr(invite, "status_code", None) is None, invite
        await until(knocker, invited(room_id), "the invite after the knock")
    report("knock", started)
