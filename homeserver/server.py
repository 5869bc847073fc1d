"""The server object: builds every service from the config, wires the HTTP app, runs it."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

from aiohttp import web

from homeserver.api.http import Router, cors_middleware, error_middleware
from homeserver.auth.accounts import Accounts
from homeserver.auth.passwords import Passwords
from homeserver.auth.tokens import Tokens
from homeserver.config import Config
from homeserver.keys import load_or_create_signing_key
from homeserver.ratelimit import RateLimiter
from homeserver.rooms.pipeline import EventPipeline, PersistedEvent, ServerIdentity
from storage.database import Database

log = logging.getLogger("homeserver")

# Route modules: each has `register(router, hs)`.
ROUTE_MODULES: tuple[str, ...] = ("homeserver.api.client.discovery",)


class HomeServer:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.server_name = config.server_name
        data_dir = config.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        key_id, key = load_or_create_signing_key(data_dir / "signing.key")
        self.identity = ServerIdentity(config.server_name, key_id, key)
        self.db = Database(data_dir / "db", fsync=config.fsync, cache_mb=config.cache_mb)
        self._persisted_listeners: list[Callable[[PersistedEvent], None]] = []
        self.pipeline = EventPipeline(self.db, self.identity, clock=clock, on_persisted=self._on_persisted)
        self.passwords = Passwords(config.password_hash_cost)
        self.tokens = Tokens(self.db, clock)
        self.accounts = Accounts(self.db, config.server_name, self.passwords, self.tokens, clock)
        self.ratelimiter = RateLimiter(config.rate_limits)

    def add_persisted_listener(self, listener: Callable[[PersistedEvent], None]) -> None:
        self._persisted_listeners.append(listener)

    def _on_persisted(self, event: PersistedEvent) -> None:
        for listener in self._persisted_listeners:
            listener(event)

    def build_app(self) -> web.Application:
        import importlib

        app = web.Application(
            middlewares=[cors_middleware, error_middleware],
            client_max_size=self.config.max_upload_size + 64 * 1024,
        )
        router = Router()
        for name in ROUTE_MODULES:
            importlib.import_module(name).register(router, self)
        router.install(app)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _cleanup(self, app: web.Application) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()


def run(config: Config) -> int:
    """Serve until SIGTERM or SIGINT."""
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        pass
    return asyncio.run(_serve(config))


async def _serve(config: Config) -> int:
    hs = HomeServer(config)
    app = hs.build_app()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True)
    await site.start()
    log.info("serving %s on http://%s", config.server_name, config.listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    return 0
