"""The server object: builds every service from the config, wires the HTTP app, runs it."""

from __future__ import annotations

import asyncio
import errno
import functools
import gc
import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from aiohttp import web

from federation import api as federation_api
from federation import directory as federation_directory
from federation import e2ee_api as federation_e2ee_api
from federation import media as federation_media
from federation.e2ee import DeviceListRelay, DeviceUpdates, LocalDeviceAnswers, RemoteDeviceKeys
from federation.edus import EduRelay, EphemeralServices, edu_handlers
from federation.keys import Notary, OldKey
from federation.local import RoomAcls, ServiceAnswers
from federation.presence import PresenceIntroductions
from federation.service import Federation, FederationSettings, Outbound
from homeserver import __version__
from homeserver.account_data.service import AccountData
from homeserver.api.auth import RequestAuth
from homeserver.api.connections import GuardedRunner
from homeserver.api.http import Router
from homeserver.auth.accounts import Accounts
from homeserver.auth.deactivation import Deactivation
from homeserver.auth.invites import Invites
from homeserver.auth.login import Login
from homeserver.auth.login_tokens import LoginTokens
from homeserver.auth.moderation import Moderation
from homeserver.auth.oauth.browser import BrowserAccounts
from homeserver.auth.oauth.clients import OAuthClients
from homeserver.auth.oauth.grants import OAuthServer
from homeserver.auth.openid import OpenIdTokens
from homeserver.auth.passwords import Passwords
from homeserver.auth.registration import Registration
from homeserver.auth.registration_tokens import RegistrationTokens
from homeserver.auth.sso import SingleSignOn
from homeserver.auth.tokens import Tokens
from homeserver.auth.uia import UserInteractiveAuth
from homeserver.auth.uia_sso import SsoReauth
from homeserver.certificates import CertificateManager, no_public_ports, port_problem
from homeserver.config import Config
from homeserver.e2ee.device_lists import DeviceLists
from homeserver.e2ee.service import E2EE
from homeserver.ephemeral.presence import Presence
from homeserver.ephemeral.receipts import Receipts
from homeserver.ephemeral.typing import Typing
from homeserver.keys import KeyFileError, load_old_keys, load_or_create_signing_key
from homeserver.notifier import Notifier
from homeserver.profile import Profiles
from homeserver.push.service import PushService
from homeserver.ratelimit import RateLimiter
from homeserver.rooms.federation_reads import FederationReads
from homeserver.rooms.pipeline import EventPipeline, PersistedEvent, ServerIdentity
from homeserver.rooms.queries import RoomQueries
from homeserver.rooms.service import Rooms
from homeserver.rooms.timeline import Timeline
from homeserver.rooms.visibility import Visibility
from homeserver.sliding_sync.extensions import ExtensionResults
from homeserver.sliding_sync.index import RoomActivity
from homeserver.sliding_sync.rooms import RoomResults
from homeserver.sliding_sync.service import SlidingSync
from homeserver.sync.filters import Filters
from homeserver.sync.handler import SyncHandler
from homeserver.sync.legacy import LegacySync
from homeserver.sync.rooms import RoomSync
from homeserver.user_directory import UserDirectory
from homeserver.web import Pages
from storage.database import Database

if TYPE_CHECKING:
    import nacl.signing

    from homeserver.media.preview import UrlPreviewer
    from homeserver.media.remote import RemoteMediaCache
    from homeserver.media.repository import MediaRepository

log = logging.getLogger("homeserver")


class StartupError(Exception):
    """The server cannot start: one line saying what is wrong, where, and what to do."""


# Route modules: each has `register(router, hs)`.
ROUTE_MODULES: tuple[str, ...] = (
    "homeserver.api.client.discovery",
    "homeserver.api.client.media",
    "homeserver.api.client.profile",
    "homeserver.api.client.user_directory",
    "homeserver.api.client.voip",
    "homeserver.api.client.thirdparty",
    "homeserver.api.client.capabilities",
    "homeserver.api.client.login",
    "homeserver.api.client.register",
    "homeserver.api.client.account",
    "homeserver.api.client.devices",
    "homeserver.api.admin.registration",
    "homeserver.api.admin.caches",
    "homeserver.api.admin.certificates",
    "homeserver.api.admin.media",
    "homeserver.api.client.keys",
    "homeserver.api.client.rooms",
    "homeserver.api.client.rooms_read",
    "homeserver.api.client.rooms_relations",
    "homeserver.api.client.rooms_spaces",
    "homeserver.api.client.directory",
    "homeserver.api.client.search",
    "homeserver.api.client.sync",
    "homeserver.api.client.sliding_sync",
    "homeserver.api.client.filters",
    "homeserver.api.client.account_data",
    "homeserver.api.client.receipts",
    "homeserver.api.client.typing",
    "homeserver.api.client.presence",
    "homeserver.api.client.push_rules",
    "homeserver.api.client.pushers",
    "homeserver.api.client.notifications",
    "homeserver.api.client.admin_users",
    "homeserver.api.client.openid",
    "homeserver.api.pages",
    "homeserver.api.uia_fallback",
    "homeserver.api.oauth",
    "homeserver.api.oauth_pages",
)


class HomeServer:
    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        # public.domain: certificates from the ACME CA, the TLS listeners of listen() serve them
        self.certificates = (
            CertificateManager(config.public, config.data_dir) if config.public.domain is not None else None
        )
        self._public_runner: web.AppRunner | None = None
        self.server_name = config.server_name
        data_dir = config.data_dir
        _prepare_data_dir(data_dir)
        key_id, key = _signing_key(data_dir / "signing.key")
        try:
            self.old_keys = load_old_keys(data_dir)
        except KeyFileError as e:
            raise StartupError(f"{e}: fix or move the file (other servers may need those keys)") from None
        self.identity = ServerIdentity(config.server_name, key_id, key)
        self.db = Database(data_dir / "db", fsync=config.fsync, cache_mb=config.cache_mb)
        self.caches = self.db.caches  # every cache, sized from config.cache_mb (storage/cache.py)
        db = self.db
        self.queries = RoomQueries(config.server_name, db.ids, db.rooms, db.events, db.snapshots)
        self.timeline = Timeline(db.rooms, db.events, db.ids)
        self._persisted_listeners: list[Callable[[PersistedEvent], None]] = []
        self.pipeline = EventPipeline(self.db, self.identity, clock=clock, on_persisted=self._on_persisted)
        self.passwords = Passwords(config.password_hash_cost)
        self.tokens = Tokens(
            self.db,
            clock,
            oauth_lifetime_ms=config.oauth.access_token_lifetime_s * 1000,
            oauth_grace_ms=config.oauth.refresh_grace_s * 1000,
        )
        self.accounts = Accounts(self.db, config.server_name, self.passwords, self.tokens, clock)
        self.ratelimiter = RateLimiter(config.rate_limits)
        # the half of federation that asks other servers, which rooms and profiles use; None when off
        self.outbound = self._outbound() if config.federation.enabled else None
        outbound = self.outbound
        self.profiles = Profiles(
            db.store,
            db.profiles,
            self.queries,
            self.accounts.exists,
            self.pipeline,
            remote=outbound.queries if outbound is not None else None,
            remote_cache=self.caches.lru("profile.remote", "federation", part=0.2),
            clock=clock,
        )
        # rooms: createRoom, membership, sending, reading, relations, redactions, directory, search
        # what a /sync reports waits on the notifier, which every writing service is handed
        self.notifier = Notifier(db.store)
        self.account_data = AccountData(db.account_data, db.store, self.notifier)
        self.rooms = Rooms(
            self.db,
            self.pipeline,
            self.queries,
            default_room_version=config.default_room_version,
            profile_lookup=self.profiles.member_fields,
            account_lookup=self.accounts.account,
            account_data=self.account_data.get,
            clock=clock,
            strict_indexes=config.strict_indexes,
            remote_rooms=outbound.membership if outbound is not None else None,
            remote_aliases=outbound.queries if outbound is not None else None,
            remote_profile_lookup=self.profiles.remote_member_fields if outbound is not None else None,
        )
        self.add_persisted_listener(self.rooms.on_persisted)
        self.accounts.add_account_created_listener(self.profiles.on_account_created)
        self.user_directory = UserDirectory(self.queries, self.profiles)
        self.add_persisted_listener(self.user_directory.on_persisted)
        self.uia = UserInteractiveAuth(clock)
        self.auth = RequestAuth(self.tokens, self.uia)  # who is calling, read from the request
        self.registration_tokens = RegistrationTokens(self.db, clock)
        self.login_tokens = LoginTokens(clock)
        self.login = Login(self.accounts, self.ratelimiter, self.uia, self.login_tokens)
        self.openid = OpenIdTokens(db.openid, config.server_name, clock)
        self.moderation = Moderation(self.db, self.queries, self.tokens, config.server_name, clock)
        self.pipeline.add_local_event_check(self.moderation.check_local_event)
        self.registration = Registration(
            config, self.accounts, self.passwords, self.tokens, self.registration_tokens, self.uia, clock
        )
        # invites: registration tokens with a purpose, and the pages that welcome their holders
        self.pages = Pages(config.server_name)
        self.invites = Invites(
            config,
            self.registration_tokens,
            self.queries,
            self.rooms.membership,
            self.profiles.get_profile,
            self.registration.invite_usable,
            clock,
            password_usable=self.registration.password_invite_usable,
        )
        self.registration.add_token_signup_listener(self.invites.joined_on_signup)
        self.sso = SingleSignOn(config, self.accounts, self.registration, self.login_tokens, db.external_ids, clock)
        self.sso_reauth = SsoReauth(self.uia, self.sso, db.external_ids)  # m.login.sso in UIA
        self.sso.store_avatar = self._store_avatar  # Mastodon pictures go into the media repository
        # the OAuth 2.0 API: clients, grants and tokens, and the pages' signed-in browsers
        self.oauth_clients = OAuthClients(db.oauth_clients, clock)
        self.oauth = OAuthServer(config.oauth, self.oauth_clients, self.accounts, self.tokens, clock)
        self.browser_accounts = BrowserAccounts(
            config, self.accounts, self.login, self.registration, self.ratelimiter, clock
        )
        self.auth.oauth_reset_allowed = self.browser_accounts.cross_signing_reset_allowed
        self.auth.account_url = f"{self.invites.base_url()}/_homeserver/account"
        self.deactivation = Deactivation(self.queries, self.accounts, self.pipeline)
        self.e2ee = E2EE(
            db.store,
            db.device_keys,
            db.one_time_keys,
            db.cross_signing,
            db.device_lists,
            db.to_device,
            db.key_backup,
            self.queries,
            self.accounts,
            DeviceLists(db.device_lists, self.queries, self.timeline),
        )
        self.accounts.add_devices_deleted_listener(self.e2ee.devices_deleted)
        self.accounts.add_device_renamed_listener(self.e2ee.keys.device_renamed)
        # what a /sync reports: each service wakes the notifier when its part changes
        self.e2ee.add_listener(self.notifier.notify_users)
        self.filters = Filters(db.filters, db.caches)
        self.receipts = Receipts(db.store, db.receipts, self.queries, self.notifier, self.account_data, clock)
        self.push = PushService(
            db.store,
            db.push,
            db.caches,
            self.queries,
            self.receipts,
            self.notifier,
            clock,
            ignored=self.account_data.ignored,
            settings=config.push,
        )
        self.account_data.add_ignore_listener(self.push.ignores_changed)
        # room upgrades: a user joining a replacement room keeps their tags, direct chats, push rules
        self.rooms.upgrades.add_room_settings(self.account_data)
        self.rooms.upgrades.add_room_settings(self.push.rules)
        self.receipts.add_read_listener(self.push.notifications.forget_counts)
        # push gateways: pushers go with their devices; a moved read receipt sends a badge update
        self.accounts.add_devices_deleted_listener(self.push.pushers.devices_deleted)
        self.receipts.add_read_listener(self.push.delivery.read_moved)
        # notifications are written in the event's own batch; wake-ups once it has landed
        self.pipeline.add_write_hook(self.push.write_hook)
        self.typing = Typing(db.store, self.notifier)
        self.presence = Presence(
            db.store, db.presence, self.queries, self.notifier, enabled=config.presence, clock=clock
        )
        visibility = functools.partial(Visibility, db)
        self.room_sync = RoomSync(
            self.queries,
            self.timeline,
            visibility,
            self.rooms.serializer,
            self.push,
            self.receipts,
            self.typing,
            self.account_data,
            self.caches,
        )
        self.legacy_sync = LegacySync(self.queries, self.timeline, visibility, self.notifier, self.rooms.serializer)
        self.sync = SyncHandler(
            self.queries,
            self.notifier,
            self.room_sync,
            self.account_data,
            self.push,
            self.presence,
            self.e2ee.sync_extensions,
        )
        self.add_persisted_listener(self._wake_syncs)
        # simplified sliding sync (Element X): rooms by activity, indexed in the events' own batches
        self.room_activity = RoomActivity(db.room_activity, self.queries, self.caches)
        db.rooms.membership_hooks.append(self.room_activity.membership_written)
        self.pipeline.add_write_hook(self.room_activity.write_hook)
        self.sliding_sync = SlidingSync(
            db.store,
            db.sliding_sync,
            self.queries,
            self.room_activity,
            self.notifier,
            RoomResults(
                self.queries, self.timeline, visibility, self.rooms.serializer, self.push, self.room_sync, self.caches
            ),
            ExtensionResults(self.queries, self.e2ee, self.account_data, self.receipts, self.typing, self.push),
            self.account_data,
            self.presence,
            self.caches,
            db.room_extras.is_forgotten,
        )
        self.accounts.add_devices_deleted_listener(self.sliding_sync.devices_deleted)
        # federation: other servers, both ways (federation/); None when the config turns it off
        self.presence_introductions: PresenceIntroductions | None = None  # made with it, presence on
        self.federation = self._federation() if config.federation.enabled else None
        self.remote_media: RemoteMediaCache | None = None  # made with `media`, when federation is on

    @functools.cached_property
    def media(self) -> MediaRepository:
        # made on first use, like its modules (Pillow among them): a server may never see media
        from homeserver.media.files import MediaFiles
        from homeserver.media.repository import MediaRepository

        files = MediaFiles(self.config.data_dir / "media")
        repository = MediaRepository(
            self.db, files, self.server_name, max_upload_size=self.config.max_upload_size, clock=self.clock
        )
        if self.outbound is not None:  # other servers' media, fetched over federation and cached
            from federation.media import FederationMediaSource
            from homeserver.media.remote import RemoteMediaCache

            self.remote_media = RemoteMediaCache(
                self.db,
                files,
                self.server_name,
                FederationMediaSource(self.outbound.client),
                max_bytes=self.config.max_upload_size,
                cache_bytes=self.config.remote_media_cache_size,
                clock=self.clock,
            )
            repository.fetch_remote = self.remote_media.get
        return repository

    async def _store_avatar(self, user_id: str, data: bytes, content_type: str) -> str:
        async def chunks() -> AsyncIterator[bytes]:
            yield data

        return await self.media.upload(
            user_id, chunks(), content_type=content_type, filename=None, content_length=len(data)
        )

    @functools.cached_property
    def url_previews(self) -> UrlPreviewer:
        # made on first use: its HTML parser and resolver are start-up cost most servers never need
        from homeserver.media.preview import UrlPreviewer

        return UrlPreviewer(self.media, enabled=self.config.url_previews, clock=self.clock)

    def add_persisted_listener(self, listener: Callable[[PersistedEvent], None]) -> None:
        self._persisted_listeners.append(listener)

    def _on_persisted(self, event: PersistedEvent) -> None:
        for listener in self._persisted_listeners:
            listener(event)

    def _wake_syncs(self, persisted: PersistedEvent) -> None:
        """Wake the syncs an event concerns: its room's, and the subject of a membership change; a
        local sender is active (presence)."""
        event = persisted.event
        room = self.queries.room(persisted.room_id)
        state_key = event.get("state_key")
        users = (state_key,) if event.get("type") == "m.room.member" and isinstance(state_key, str) else ()
        self.notifier.notify(users=users, rooms=(room,) if room is not None else ())
        sender = event.get("sender")
        if persisted.stream and isinstance(sender, str) and self.queries.is_local(sender):
            self.presence.active(sender)

    def _federation_settings(self) -> FederationSettings:
        fed_config = self.config.federation
        return FederationSettings(
            enabled=True,
            listen=fed_config.listen,
            tls_certificate=fed_config.tls_certificate,
            tls_private_key=fed_config.tls_private_key,
            ca_files=tuple(str(p) for p in fed_config.ca_files),
            ip_range_allow=tuple(fed_config.ip_range_allow),
            verify_certificates=fed_config.verify_certificates,
            trusted_key_servers=tuple(Notary(k.server_name, k.verify_keys) for k in fed_config.trusted_key_servers),
            well_known_server=fed_config.well_known_server,
            old_keys={k: OldKey(key, ts) for k, (key, ts) in self.old_keys.items() if k != self.identity.key_id},
        )

    def _outbound(self) -> Outbound:
        return Outbound(
            self._federation_settings(),
            self.server_name,
            self.identity.key_id,
            self.identity.signing_key,
            self.db.store,
            self.caches,
            self.pipeline,
            clock=self.clock,
        )

    def _federation(self) -> Federation:
        config = self.config
        settings = self._federation_settings()
        queries = self.queries
        acls = RoomAcls(queries)

        def servers_in_room(room_id: str) -> list[str]:
            room = queries.room(room_id)
            return queries.servers_in_room(room) if room is not None else []

        def is_joined(user_id: str, room_id: str) -> bool:
            room = queries.room(room_id)
            return room is not None and queries.is_joined(user_id, room)

        ephemeral = EphemeralServices(self.typing, self.receipts, self.presence, queries)
        # end-to-end encryption across servers: device lists, keys, to-device (federation/e2ee.py)
        assert self.outbound is not None
        remote_keys = RemoteDeviceKeys(self.outbound.client, self.db.store, self.db.device_lists, queries)
        self.device_updates = device_updates = DeviceUpdates(
            self.db.store, self.db.device_lists, remote_keys, self.e2ee.to_device, self.notifier.notify_users
        )
        self.device_answers = LocalDeviceAnswers(
            config.server_name, self.e2ee.keys, self.accounts, self.db.device_lists
        )
        fed = Federation(
            settings,
            config.server_name,
            self.identity.key_id,
            self.identity.signing_key,
            self.db.store,
            self.caches,
            self.pipeline,
            FederationReads(self.db, config.server_name),
            servers_in_room=servers_in_room,
            acl_allows=acls.allows,
            local=ServiceAnswers(
                self.profiles, self.accounts, self.rooms.directory, self.rooms.membership, self.openid
            ),
            edu_handlers={
                **edu_handlers(ephemeral, acls.allows, is_joined, presence=config.presence),
                **device_updates.handlers(),
            },
            outbound=self.outbound,
            rate_limit=lambda origin: self.ratelimiter.check("federation", origin),
            clock=self.clock,
        )
        self.rooms.reader.add_history_source(fed.backfiller)  # /messages reaches back over federation
        # other servers' room directories and spaces, asked for our clients
        remote_directory = federation_directory.RemoteDirectory(fed.client)
        self.rooms.directory.remote_rooms = remote_directory
        self.rooms.spaces.remote = remote_directory
        # our local events are owed to the other servers of their room, in the event's own batch
        self.pipeline.add_write_hook(fed.write_hook)
        relay = EduRelay(queries, fed.send_edu)
        self.add_persisted_listener(device_updates.on_persisted)
        self.device_relay = devices = DeviceListRelay(
            config.server_name, self.e2ee.keys, self.accounts, self.db.device_lists, queries, fed.send_edu
        )
        self.e2ee.keys.add_device_change_listener(devices.devices_changed)
        self.e2ee.keys.add_signing_key_listener(devices.signing_keys_changed)
        self.e2ee.keys.remote = remote_keys
        self.e2ee.to_device.remote = devices.to_device
        self.typing.add_change_listener(relay.typing_changed)
        self.receipts.add_receipt_listener(relay.receipt_written)
        self.presence.add_change_listener(
            lambda user_id: relay.presence_changed(user_id, self.presence.content(user_id))
        )
        if config.presence:  # a server newly sharing a room with our users hears their presence
            self.presence_introductions = PresenceIntroductions(queries, self.presence, fed.send_edu)
            self.db.rooms.membership_hooks.append(self.presence_introductions.membership_written)
        return fed

    def routes(self) -> Router:
        """Every route this server serves: the client-server API, admin, and federation when on."""
        import importlib

        router = Router()
        for name in ROUTE_MODULES:
            importlib.import_module(name).register(router, self)
        if self.federation is not None:
            federation_api.register(router, self.federation, __version__)
            federation_e2ee_api.register(router, self.federation, self.device_answers)
            federation_media.register_for(router, self.federation, lambda: self.media)
            federation_directory.register(router, self.federation, self.rooms.directory, self.rooms.spaces)
        return router

    def build_app(self) -> web.Application:
        # no middlewares: `Router` wraps each handler once with the error and CORS rules
        app = web.Application(client_max_size=self.config.max_upload_size + 64 * 1024)
        self.routes().install(app)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, app: web.Application) -> None:
        self.push.delivery.start()  # resume sending what push gateways are owed
        asyncio.get_running_loop().call_later(0.5, self.sliding_sync.warm)  # off the start's path

    async def _cleanup(self, app: web.Application) -> None:
        if self.certificates is not None:
            await self.certificates.close()
        if self._public_runner is not None:
            await self._public_runner.cleanup()
        await self.push.delivery.close()
        if self.presence_introductions is not None:
            await self.presence_introductions.close()
        if self.federation is not None:
            await self.federation.close()
        self.typing.close()
        self.notifier.close()
        await self.presence.close()
        self.close()

    def close(self) -> None:
        self.db.close()


def _prepare_data_dir(path: Path) -> None:
    """The data directory exists and this user may write in it (the store, media and key live there)."""
    where = "set data_dir (HOMESERVER_DATA_DIR) to another folder"
    if path.exists() and not path.is_dir():
        raise StartupError(f"the data directory {path} is a file, not a folder: move it away, or {where}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StartupError(f"cannot create the data directory {path}: {e.strerror}; create it, or {where}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
        why = "is on a read-only file system" if read_only else f"is not writable by this user (uid {os.getuid()})"
        raise StartupError(f"the data directory {path} {why}: make it writable, or {where}")


def _signing_key(path: Path) -> tuple[str, nacl.signing.SigningKey]:
    restore = (
        "restore it from a backup (other servers know this key); if it is lost, move the file away and "
        "a new key is made at the next start"
    )
    try:
        return load_or_create_signing_key(path)
    except KeyFileError as e:
        raise StartupError(f"{e}: {restore}") from None
    except UnicodeDecodeError:
        raise StartupError(f"{path} is not a signing key file (not text): {restore}") from None
    except OSError as e:
        problem = f"cannot read or write the signing key {path}: {e.strerror}; check its permissions"
        raise StartupError(problem) from None


def _bind_problem(listen: str, e: OSError) -> str:
    """One line for an address the listener cannot take."""
    fix = "set listen (HOMESERVER_LISTEN) to another host:port"
    if isinstance(e, socket.gaierror):
        return f"cannot listen on {listen}: the host name cannot be resolved ({e.strerror}); {fix}"
    if e.errno == errno.EADDRINUSE:
        return f"cannot listen on {listen}: the address is already in use (another server running?); stop it, or {fix}"
    if e.errno == errno.EACCES:
        return f"cannot listen on {listen}: permission denied (ports below 1024 need privileges); {fix}"
    if e.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {listen}: the address is not one of this machine's; {fix}"
    return f"cannot listen on {listen}: {e.strerror or e}; {fix}"


async def listen(hs: HomeServer) -> web.AppRunner:
    """Serve `hs` on its configured address, with the connection deadlines of `http` in the config.
    Raises StartupError when the address cannot be taken (after closing what was set up)."""
    config = hs.config
    # handler_cancellation: a request whose client went away stops (a long-poll /sync would otherwise
    # run to its timeout); shutdown waits at most a couple of seconds for requests in flight.
    runner = GuardedRunner(
        hs.build_app(),
        limits=config.http,
        access_log=None,
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=2.0,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.listen_host, config.listen_port, reuse_address=True)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        raise StartupError(_bind_problem(config.listen, e)) from None
    fed = config.federation
    if fed.enabled and fed.listen is not None:
        # the TLS listener other servers reach (and clients too: the same app)
        try:
            tls = _tls_context(fed.tls_certificate, fed.tls_private_key)
            host, _, port = fed.listen.rpartition(":")
            await web.TCPSite(runner, host.strip("[]"), int(port), ssl_context=tls, reuse_address=True).start()
        except StartupError:
            await runner.cleanup()
            raise
        except OSError as e:
            await runner.cleanup()
            raise StartupError(
                _bind_problem(fed.listen, e).replace("listen (HOMESERVER_LISTEN)", "federation.listen")
            ) from None
    if hs.certificates is not None:
        try:
            await _serve_public(hs, runner, hs.certificates)
        except StartupError:
            await runner.cleanup()
            raise
    return runner


async def _serve_public(hs: HomeServer, runner: web.AppRunner, certificates: CertificateManager) -> None:
    """public.domain: plain HTTP on http_port (ACME http-01 challenges, else a redirect to https), TLS
    on https_port and federation_port with the certificate the manager keeps (ordered in the
    background: until the first one arrives, TLS handshakes fail, except the CA's tls-alpn-01 check).
    An http_port we cannot take is not fatal unless public.challenge is http-01: the certificate then
    comes through tls-alpn-01 on https_port."""
    from homeserver.api.acme_challenge import challenge_app

    public = hs.config.public
    plain = web.AppRunner(
        challenge_app(certificates.challenges, certificates.domain, public.https_port), access_log=None
    )
    await plain.setup()
    hs._public_runner = plain

    async def fail(problem: str) -> NoReturn:
        await plain.cleanup()
        hs._public_runner = None
        raise StartupError(problem)

    http_error: OSError | None = None
    try:
        await web.TCPSite(plain, public.bind, public.http_port, reuse_address=True).start()
    except OSError as e:
        if public.challenge == "http-01":
            await fail(port_problem("http-01 challenges and redirect", public.bind, public.http_port, e))
        http_error = e
    ports = [("https", public.https_port)]
    if hs.config.federation.enabled and public.federation_port not in (0, public.https_port):
        ports.append(("federation", public.federation_port))
    for what, port in ports:
        try:
            site = web.TCPSite(runner, public.bind, port, ssl_context=certificates.context, reuse_address=True)
            await site.start()
        except OSError as e:
            if port == public.https_port and http_error is not None:
                await fail(no_public_ports(public.bind, public.http_port, http_error, port, e))
            await fail(port_problem(what, public.bind, port, e))
    if http_error is not None:
        certificates.http_port_error = http_error
        logging.getLogger("homeserver.certificates").log(
            logging.WARNING if public.challenge == "auto" else logging.INFO,
            "port %d is not ours (%s): no redirect to https there; certificates through tls-alpn-01 on port %d",
            public.http_port,
            os.strerror(http_error.errno) if http_error.errno else http_error,
            public.https_port,
        )
    certificates.start()


def _tls_context(certificate: Path | None, key: Path | None) -> ssl.SSLContext:
    """The server side of TLS for the federation listener, from PEM files; one line when unusable."""
    if certificate is None or key is None:
        raise StartupError("federation.listen needs federation.tls_certificate and federation.tls_private_key")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(certificate), str(key))
    except (OSError, ssl.SSLError) as e:
        raise StartupError(
            f"cannot use the TLS certificate {certificate} with key {key}: {e}; "
            "check federation.tls_certificate and federation.tls_private_key"
        ) from None
    return ctx


GC_THRESHOLDS = (700, 10, 10)  # Python's defaults (`__main__` raises them for the start-up)


def _settle_heap() -> None:
    """Everything built at start lives as long as the server: freeze it out of later collections
    (which then walk only what serving makes) and collect at the usual pace from here on. No full
    collection first: it would stall the first requests for tens of milliseconds."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


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
    runner = await listen(hs)
    try:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        log.info("serving %s on http://%s", config.server_name, config.listen)
        if hs.federation is not None:
            hs.federation.start()  # resume sending what other servers are owed
        # printed once the address is ours: a start that fails must not hand out a token first
        notice = await hs.registration.first_account_notice(config.public_baseurl or f"http://{config.listen}")
        if notice is not None:
            print(notice, flush=True)  # the admin's way in: shown at every start until the first account exists
        _settle_heap()
        await stop.wait()
        log.info("shutting down")
    finally:
        await runner.cleanup()
    return 0
