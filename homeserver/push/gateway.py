"""Talking to push gateways (spec: push-gateway-api POST /_matrix/push/v1/notify).

What a notification says is built here from what the pusher worker hands over; the request goes out
through a connector that refuses private addresses (`homeserver/protocol/addresses.py`, allowed
ranges from `push.ip_range_allow`), checked on every connection so DNS cannot point a gateway name
at the server's own network after the URL was accepted. Each request has a deadline; connections to
one gateway are capped, so a slow gateway holds only its own share.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from homeserver.http_body import read_at_most
from homeserver.protocol.addresses import AddressPolicy

NOTIFY_PATH = "/_matrix/push/v1/notify"
MAX_ANSWER_BYTES = 64 * 1024


class GatewayError(Exception):
    """The gateway did not take the notification. `permanent`: retrying cannot help (a 4xx)."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def url_problem(url: Any, policy: AddressPolicy) -> str | None:
    """Why a pusher's `data.url` cannot be used, or None (spec: pushers/set "data.url": the full
    URI of the gateway's notify endpoint, http or https). A host given as an IP address must be one
    the policy permits; a name is checked when it is resolved, at each connection."""
    if not isinstance(url, str):
        return "'url' must be a string for an http pusher"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return "'url' is not a valid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "'url' must be an http or https URL"
    if parts.path != NOTIFY_PATH:
        return f"'url' must have the path {NOTIFY_PATH}"
    if parts.username is not None or parts.password is not None:
        return "'url' must not hold credentials"
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if host.rstrip(".").lower() == "localhost" or host.lower().endswith(".localhost"):
            return "'url' must not point at this server's network"
        return None
    if not policy.permits(host):
        return "'url' must not point at a private or loopback address"
    return None


class _PolicyResolver(AbstractResolver):
    """Resolves gateway names, keeping only the addresses the policy permits."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self.inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self.inner.resolve(host, port, family)
        allowed = [r for r in found if self.policy.permits(r["host"])]
        if not allowed:
            raise OSError(f"{host} resolves to no address a push gateway may have")
        return allowed

    async def close(self) -> None:
        await self.inner.close()


class _Slots:
    """Requests in flight to one gateway (host and port), and the semaphore that caps them."""

    __slots__ = ("semaphore", "users")

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0


class GatewayClient:
    def __init__(self, policy: AddressPolicy, *, timeout_s: float, max_connections: int, per_gateway: int) -> None:
        self.policy = policy
        # the deadline starts once a connection slot is ours: waiting for one is not the gateway's fault
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_connections = max_connections
        self.per_gateway = per_gateway
        self._all = asyncio.Semaphore(max_connections)
        self._gateways: dict[str, _Slots] = {}  # only gateways with requests in flight or waiting
        self._session: aiohttp.ClientSession | None = None
        self._checked: dict[str, str | None] = {}  # url -> problem: a check per pusher URL, not per request

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                resolver=_PolicyResolver(self.policy),
                limit=self.max_connections,
                limit_per_host=self.per_gateway,
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def notify(self, url: str, body: Mapping[str, Any]) -> list[str]:
        """POST a notification; the pushkeys the gateway rejected. `GatewayError` when it was not taken."""
        problem = self._checked.get(url, "")
        if problem == "":
            if len(self._checked) >= 10_000:
                self._checked.clear()
            problem = self._checked[url] = url_problem(url, self.policy)
        if problem is not None:  # the policy may have changed since the pusher was set
            raise GatewayError(problem, permanent=True)
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.netloc}"
        slots = self._gateways.get(where)
        if slots is None:
            slots = self._gateways[where] = _Slots(self.per_gateway)
        slots.users += 1
        try:
            async with slots.semaphore, self._all:
                return await self._post(url, body)
        finally:
            slots.users -= 1
            if not slots.users:
                del self._gateways[where]

    async def _post(self, url: str, body: Mapping[str, Any]) -> list[str]:
        try:
            async with self._http().post(
                url,
                data=orjson.dumps(body),
                headers={"Content-Type": "application/json"},
                allow_redirects=False,
            ) as resp:
                raw = await read_at_most(resp.content, MAX_ANSWER_BYTES)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise GatewayError(f"{url}: {e!r}") from None
        if status >= 300:
            # spec leaves failures to us: a 4xx (but 429) will not change on retry, the rest may
            raise GatewayError(f"{url}: HTTP {status}", permanent=400 <= status < 500 and status != 429)
        try:
            answer = orjson.loads(raw) if raw and len(raw) <= MAX_ANSWER_BYTES else {}
        except orjson.JSONDecodeError:
            answer = {}
        rejected = answer.get("rejected") if isinstance(answer, dict) else None
        return [k for k in rejected if isinstance(k, str)] if isinstance(rejected, list) else []


def tweaks_of(actions: list[Any]) -> dict[str, Any]:
    """The `set_tweak` actions as a dict (spec: push rules "Actions": a tweak without a value is true)."""
    tweaks: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, Mapping) and isinstance(action.get("set_tweak"), str):
            tweaks[action["set_tweak"]] = action.get("value", True)
    return tweaks


def device_of(pusher: Mapping[str, Any], tweaks: Mapping[str, Any]) -> dict[str, Any]:
    """A pusher as the gateway sees it (spec: Device): its data without `url`."""
    data = {k: v for k, v in (pusher.get("data") or {}).items() if k != "url"}
    return {
        "app_id": pusher["app_id"],
        "pushkey": pusher["pushkey"],
        "pushkey_ts": int(pusher.get("_ts", 0)) // 1000,
        "data": data,
        "tweaks": dict(tweaks),
    }


def counts_of(unread: int) -> dict[str, int]:
    """spec: Counts — counts whose value is zero should be omitted."""
    return {"unread": unread} if unread else {}
