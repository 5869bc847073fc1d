"""The server in-process over HTTP: each test gets its own server, data directory and client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer

from homeserver.config import Config
from homeserver.server import HomeServer
from tests.accounts import User

from .openapi_check import check_response


class Harness:
    def __init__(self, hs: HomeServer, client: TestClient) -> None:
        self.hs = hs
        self.client = client

    async def user(self, localpart: str, *, password: str = "correct horse", admin: bool = False) -> User:
        """A registered, logged-in user, made through the services (not the HTTP API)."""
        user_id = await self.hs.accounts.create(localpart, password, admin=admin)
        session = await self.hs.accounts.new_session(user_id)
        return User(user_id, session.device_id, session.access_token)

    async def request(
        self, method: str, path: str, user: User | None = None, *, json: Any = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = dict(kw.pop("headers", {}) or {})
        if user is not None:
            headers.update(user.headers)
        if not path.startswith("/"):
            path = "/_matrix/client/v3/" + path
        resp = await self.client.request(method, path, json=json, headers=headers, **kw)
        body = await resp.json() if resp.content_type == "application/json" else await resp.read()
        # Every answer of a documented endpoint must match the spec's response schema (tests/openapi/).
        check_response(method, path, resp.status, resp.content_type, body)
        return resp.status, body


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "server_name": "hs.test",
        "data_dir": tmp_path / "data",
        "password_hash_cost": "low",
        "registration": "open",
        "registration_shared_secret": "test-shared-secret",
        "strict_indexes": True,  # an index bug fails the test instead of being logged and skipped
    }
    values.update(overrides)
    return Config.model_validate(values)


@asynccontextmanager
async def running(config: Config) -> AsyncIterator[Harness]:
    """A server built from `config`, serving in-process until the block ends."""
    hs = HomeServer(config)
    client = TestClient(TestServer(hs.build_app()))
    await client.start_server()
    try:
        yield Harness(hs, client)
    finally:
        await client.close()


@pytest_asyncio.fixture
async def harness(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    overrides = getattr(request, "param", None) or {}
    async with running(make_config(tmp_path, **overrides)) as h:
        yield h


__all__ = ["Harness", "User", "harness", "make_config", "pytest"]
