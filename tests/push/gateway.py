"""A push gateway for tests: aiohttp on loopback, receiving what the server POSTs to
`/_matrix/push/v1/notify`, checking every body against the spec's schema (push_notifier.json, from
the spec's push_notifier.yaml), and answering as told: taken, `rejected`, 502, or only once released.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
from aiohttp import web

SCHEMAS = json.loads((Path(__file__).parent / "push_notifier.json").read_text())
REQUEST = jsonschema.Draft202012Validator(SCHEMAS["request"])
RESPONSE = jsonschema.Draft202012Validator(SCHEMAS["response"])


class FakeGateway:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []  # every body, in arrival order
        self.taken: list[dict[str, Any]] = []  # the bodies answered 200
        self.failing = False  # answer 502
        self.status = 200  # answer this status (with an error body) when not 200
        self.rejected: set[str] = set()  # pushkeys to answer as rejected
        self.hold: asyncio.Event | None = None  # when set: wait for it before answering
        self.problems: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/_matrix/push/v1/notify"

    async def start(self) -> FakeGateway:
        app = web.Application()
        app.router.add_post("/_matrix/push/v1/notify", self._notify)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _notify(self, request: web.Request) -> web.Response:
        body = await request.json()
        errors = [e.message for e in REQUEST.iter_errors(body)]
        if errors:
            self.problems.append(f"{body}: {errors}")
        self.received.append(body)
        if self.hold is not None:
            await self.hold.wait()
        if self.failing:
            return web.Response(status=502, text="bad gateway")
        if self.status != 200:
            return web.json_response({"errcode": "M_UNKNOWN", "error": "no"}, status=self.status)
        devices = body.get("notification", {}).get("devices", [])
        answer = {"rejected": [d["pushkey"] for d in devices if d.get("pushkey") in self.rejected]}
        assert not list(RESPONSE.iter_errors(answer))
        self.taken.append(body)
        return web.json_response(answer)

    def events(self) -> list[str]:
        """Event ids of the notifications taken, in order."""
        return [b["notification"]["event_id"] for b in self.taken if "event_id" in b["notification"]]

    def badges(self) -> list[dict[str, Any]]:
        """The badge-only updates taken."""
        return [b["notification"] for b in self.taken if "event_id" not in b["notification"]]


async def until(condition: Callable[[], Any], deadline_s: float = 10.0) -> Any:
    """Poll `condition` until it is true (returned) or the deadline passes (AssertionError)."""
    end = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)
