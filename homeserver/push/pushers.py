"""Pushers (spec: modules/push.md "Client behaviour": GET /pushers, POST /pushers/set). They are
stored; delivering notifications to push gateways is separate work."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from homeserver.errors import MatrixError
from storage.engine import Store
from storage.push import PushStore


class Pushers:
    def __init__(self, store: Store, push: PushStore) -> None:
        self.store = store
        self.push = push

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
                url = data.get("url")
                if not isinstance(url, str) or not url.startswith(("https://", "http://")):
                    raise MatrixError(400, "M_INVALID_PARAM", "'url' must be an http(s) URL for an http pusher")
                if not url.split("?", 1)[0].endswith("/_matrix/push/v1/notify"):
                    raise MatrixError(400, "M_INVALID_PARAM", "'url' must have the path /_matrix/push/v1/notify")
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
            }
            if isinstance(body.get("profile_tag"), str):
                pusher["profile_tag"] = body["profile_tag"]
            if not body.get("append", False):
                # spec: without `append`, other users' pushers with this app id and pushkey go
                for other in self.push.pusher_users(app_id, pushkey):
                    if other != user_id:
                        self.push.delete_pusher(other, app_id, pushkey, batch)
            self.push.put_pusher(user_id, pusher, batch)
            await batch.commit()
