"""Pushers (spec: modules/push.md "Client behaviour": GET /pushers, POST /pushers/set). They are
stored here; the pusher worker (`delivery.py`) sends to them. A pusher goes with its device (logout,
device deletion, deactivation). Email pushers are stored but never sent to (not supported)."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from typing import Any

from homeserver.errors import MatrixError
from homeserver.protocol.addresses import AddressPolicy
from homeserver.push.gateway import url_problem
from storage.engine import Batch, Store
from storage.push import PushStore


class Pushers:
    def __init__(
        self,
        store: Store,
        push: PushStore,
        policy: AddressPolicy,
        on_change: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.push = push
        self.policy = policy
        self.on_change = on_change  # told the user whose pushers changed, once written
        self.clock = clock

    def pushers(self, user_id: str) -> list[dict[str, Any]]:
        return [{k: v for k, v in p.items() if not k.startswith("_")} for p in self.push.pushers(user_id)]

    async def set_pusher(self, user_id: str, device_id: str, body: Mapping[str, Any]) -> None:
        for name, limit in (("app_id", 64), ("pushkey", 512)):
            value = body.get(name)
            if not isinstance(value, str) or not value:
                raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameters: {name}")
            if len(value.encode()) > limit:
                raise MatrixError(400, "M_INVALID_PARAM", f"{name} is longer than {limit} bytes")
        app_id, pushkey = str(body["app_id"]), str(body["pushkey"])
        if "kind" not in body:
            raise MatrixError(400, "M_MISSING_PARAM", "Missing parameters: kind")
        kind = body["kind"]
        batch = self.store.batch()
        with batch:
            if kind is None:
                self.push.delete_pusher(user_id, app_id, pushkey, batch)
                batch.on_commit.append(lambda: self.on_change(user_id))
                await batch.commit()
                return
            if not isinstance(kind, str):
                raise MatrixError(400, "M_INVALID_PARAM", "kind must be a string or null")
            missing = [n for n in ("app_display_name", "device_display_name", "lang", "data") if body.get(n) is None]
            if missing:
                raise MatrixError(400, "M_MISSING_PARAM", f"Missing parameters: {', '.join(missing)}")
            data = body["data"]
            if not isinstance(data, dict):
                raise MatrixError(400, "M_INVALID_PARAM", "data must be an object")
            for name in ("app_display_name", "device_display_name", "lang"):
                if not isinstance(body[name], str):
                    raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be a string")
            if kind == "http":
                problem = url_problem(data.get("url"), self.policy)
                if problem is not None:
                    raise MatrixError(400, "M_INVALID_PARAM", problem)
            elif kind != "email":
                raise MatrixError(400, "M_INVALID_PARAM", f"unknown pusher kind {kind!r}")
            pusher: dict[str, Any] = {
                "app_id": app_id,
                "pushkey": pushkey,
                "kind": kind,
                "app_display_name": body["app_display_name"],
                "device_display_name": body["device_display_name"],
                "lang": body["lang"],
                "data": data,
                "_device_id": device_id,
                "_ts": int(self.clock() * 1000),  # sent as the device's pushkey_ts
            }
            if isinstance(body.get("profile_tag"), str):
                pusher["profile_tag"] = body["profile_tag"]
            if not body.get("append", False):
                # spec: without `append`, other users' pushers with this app id and pushkey go
                for other in self.push.pusher_users(app_id, pushkey):
                    if other != user_id:
                        self.push.delete_pusher(other, app_id, pushkey, batch)
                        batch.on_commit.append(functools.partial(self.on_change, other))
            if kind == "http" and not any(
                p["app_id"] == app_id and p["pushkey"] == pushkey and p.get("kind") == "http"
                for p in self.push.pushers(user_id)
            ):
                # a new pusher is owed what is notified from now on, not what came before
                self.push.set_pusher_position(user_id, app_id, pushkey, self.store.counter.high, batch)
            self.push.put_pusher(user_id, pusher, batch)
            batch.on_commit.append(lambda: self.on_change(user_id))
            await batch.commit()

    def devices_deleted(self, user_id: str, device_ids: list[str], batch: Batch) -> None:
        """An accounts listener, in the batch that deletes devices (logout, deletion, deactivation):
        their pushers go too."""
        gone = set(device_ids)
        doomed = {(p["app_id"], p["pushkey"]) for p in self.push.pushers(user_id) if p.get("_device_id") in gone}
        if not doomed:
            return
        for app_id, pushkey in doomed:
            self.push.delete_pusher(user_id, app_id, pushkey, batch)
        batch.on_commit.append(lambda: self.on_change(user_id))
