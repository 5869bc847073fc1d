"""Push notifications from a real server process to a push gateway (spec: push gateway API), with
the pusher set by matrix-js-sdk as Element's mobile apps set theirs: a DM rings the phone, a read
receipt lowers the badge, and a gateway that is down while the server restarts gets every
notification once, in order, after both are back."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.push.gateway import FakeGateway, until

from .server import start_homeserver

pytestmark = pytest.mark.asyncio

JS_DIR = Path(__file__).resolve().parent / "js"


async def run_node(base_url: str, gateway_url: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "matrix-js-sdk" / "package.json").exists():
        pytest.fail("node and matrix-js-sdk are needed: run scripts/setup-system (the test command does)")
    proc = await asyncio.create_subprocess_exec(
        node,
        str(JS_DIR / "push.mjs"),
        base_url,
        gateway_url,
        cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    lines = [line for line in out.decode().splitlines() if line.startswith("@@RESULT@@ ")]
    result: dict[str, Any] = json.loads(lines[-1].split(" ", 1)[1]) if lines else {"error": "no result line"}
    if proc.returncode != 0 or "error" in result:
        pytest.fail(f"push.mjs failed: {result}\n{err.decode()[-3000:]}")
    return result


async def call(session: aiohttp.ClientSession, base: str, method: str, path: str, token: str, body: Any) -> Any:
    async with session.request(
        method, f"{base}/_matrix/client/v3/{path}", json=body, headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        answer = await resp.json()
        assert resp.status == 200, answer
        return answer


async def test_element_pusher_across_a_gateway_outage_and_a_restart(tmp_path: Path) -> None:
    gateway = await FakeGateway().start()
    server = await asyncio.to_thread(start_homeserver, tmp_path, push__ip_range_allow=["127.0.0.0/8"])
    try:
        r = await run_node(server.base_url, gateway.url)
        [pusher] = r["pushers"]
        assert pusher["data"] == {"url": gateway.url, "format": "event_id_only"}
        room_id, alice, bob = r["room_id"], r["alice"]["token"], r["bob"]["token"]
        first = r["event_ids"][0]
        # the invite rang first (bob's membership event), then the message
        await until(lambda: gateway.events()[-1:] == [first])
        invite, note = gateway.taken[0]["notification"], gateway.taken[-1]["notification"]
        assert len(gateway.events()) == 2 and invite["devices"][0]["tweaks"] == {"sound": "default"}
        before = gateway.events()
        assert set(note) == {"event_id", "room_id", "counts", "prio", "devices"}
        assert note["room_id"] == room_id and note["prio"] == "high" and note["counts"] == {"unread": 1}
        assert note["devices"][0]["app_id"] == "im.vector.app.android"
        assert note["devices"][0]["pushkey"] == pusher["pushkey"]
        async with aiohttp.ClientSession() as http:
            # the gateway goes down; two more messages wait for it
            gateway.failing = True
            sent = []
            for i in range(2):
                txn = f"push-{i}"
                answer = await call(
                    http,
                    server.base_url,
                    "PUT",
                    f"rooms/{quote(room_id)}/send/m.room.message/{txn}",
                    alice,
                    {"msgtype": "m.text", "body": f"still there? {i}"},
                )
                sent.append(answer["event_id"])
            await until(lambda: any(b["notification"].get("event_id") == sent[0] for b in gateway.received))
            # the server restarts while the gateway is down; the gateway comes back after
            await asyncio.to_thread(server.restart)
            gateway.failing = False
            await until(lambda: gateway.events() == [*before, *sent], deadline_s=20)
            # bob reads everything: the badge clears
            await call(
                http, server.base_url, "POST", f"rooms/{quote(room_id)}/receipt/m.read/{quote(sent[1])}", bob, {}
            )
            await until(lambda: gateway.badges() and gateway.badges()[-1]["counts"] == {"unread": 0})
            # a restart with nothing owed resends nothing: the next message arrives alone
            await asyncio.to_thread(server.restart)
            answer = await call(
                http,
                server.base_url,
                "PUT",
                f"rooms/{quote(room_id)}/send/m.room.message/after",
                alice,
                {"msgtype": "m.text", "body": "morning"},
            )
            await until(lambda: gateway.events()[-1:] == [answer["event_id"]])
            assert gateway.events() == [*before, *sent, answer["event_id"]]
    finally:
        server.stop()
        await gateway.stop()
    assert not gateway.problems, gateway.problems
