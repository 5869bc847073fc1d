"""Bad ids, tokens and bodies on every room endpoint: always a spec error, never a 500."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from .conftest import Harness
from .rooms_helpers import create_room, send


async def test_bad_input_never_breaks_the_server(harness: Harness) -> None:
    alice = await harness.user("alice")
    room_id = await create_room(harness, alice)
    eid = await send(harness, alice, room_id, "x")
    rooms = [room_id, "!", "a" * 300, "\x00", "#a:hs.test"]
    events = [eid, "$", "$" + "b" * 300]
    bad: list[Any] = []
    for r in rooms:
        rq = quote(r, safe="")
        for e in events:
            eq = quote(e, safe="")
            reqs = [
                ("GET", f"rooms/{rq}/messages?dir=b"),
                ("GET", f"rooms/{rq}/messages?dir=f&from=t-99999999999999999999"),
                ("GET", f"rooms/{rq}/messages?dir=f&from=t99999999999999999999"),
                ("GET", f"rooms/{rq}/messages?dir=b&from=s99999999999999999999&limit=100000"),
                ("GET", f"rooms/{rq}/context/{eq}?limit=100000"),
                ("GET", f"rooms/{rq}/event/{eq}"),
                ("GET", f"rooms/{rq}/members?at=t-99999999999999999999"),
                ("GET", f"rooms/{rq}/members?at=s99999999999999999999"),
                ("GET", f"rooms/{rq}/state"),
                ("GET", f"rooms/{rq}/state/m.room.name/x"),
                ("GET", f"rooms/{rq}/joined_members"),
                ("GET", f"rooms/{rq}/aliases"),
                ("GET", f"/_matrix/client/v1/rooms/{rq}/relations/{eq}?from=t5&to=t1"),
                ("GET", f"/_matrix/client/v1/rooms/{rq}/relations/{eq}/x/y?dir=f&limit=1000"),
                ("GET", f"/_matrix/client/v1/rooms/{rq}/threads?from=t-5"),
                ("GET", f"/_matrix/client/v1/rooms/{rq}/timestamp_to_event?ts=-5&dir=b"),
                ("GET", f"/_matrix/client/v1/rooms/{rq}/timestamp_to_event?ts=99999999999999999999999&dir=f"),
                ("PUT", f"rooms/{rq}/send/m.x/{eq}"),
                ("PUT", f"rooms/{rq}/state/m.x/{eq}"),
                ("PUT", f"rooms/{rq}/redact/{eq}/t"),
                ("POST", f"rooms/{rq}/join"),
                ("POST", f"join/{rq}"),
                ("POST", f"knock/{rq}"),
                ("POST", f"rooms/{rq}/leave"),
                ("POST", f"rooms/{rq}/forget"),
                ("POST", f"rooms/{rq}/invite"),
                ("POST", f"rooms/{rq}/kick"),
                ("POST", f"rooms/{rq}/report/{eq}"),
                ("POST", f"rooms/{rq}/report"),
                ("GET", f"directory/room/{rq}"),
                ("PUT", f"directory/room/{rq}"),
                ("DELETE", f"directory/room/{rq}"),
                ("GET", f"directory/list/room/{rq}"),
                ("PUT", f"directory/list/room/{rq}"),
            ]
            for m, p in reqs:
                for body in ({"user_id": e, "room_id": r, "reason": "x", "redacts": e},):
                    try:
                        st, b = await harness.request(m, p, alice, json=body)
                    except AssertionError as ex:  # the answer does not match the spec's schema
                        bad.append((m, p, body, repr(ex)[:300]))
                        continue
                    if st >= 500:
                        bad.append((m, p, body, st, b))
    assert not bad, bad[:10]
