"""Federation, assembled: the outbound client, keys, the sender, inbound PDUs and transactions,
membership both ways. Built once by the server (homeserver/server.py) with what it needs from the
services passed in; nothing here reaches into their tables. The outbound half (`Outbound`: client,
keys, our users' memberships through residents, queries) is built first, before the room and profile
services that use it through their own protocols; `Federation` (which answers from those services)
after them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import nacl.signing

from federation.backfill import Backfiller
from federation.client import FederationClient, FederationError, Unreachable, path_of, ssl_context
from federation.dns import DnsPython
from federation.inbound import Inbound
from federation.keys import KeyRing, Notary, OldKey, OurKeys
from federation.membership import RemoteMembership
from federation.resident import Resident
from federation.sender import FederationSender
from federation.transactions import AclCheck, EduHandler, Transactions
from homeserver.errors import MatrixError
from homeserver.protocol.addresses import AddressPolicy
from homeserver.rooms.federation_reads import FederationReads
from homeserver.rooms.pipeline import EventPipeline, PersistedEvent
from storage.cache import CacheRegistry
from storage.engine import Batch, Store
from storage.federation_queue import FederationQueueStore
from storage.server_keys import ServerKeyStore


@dataclass(frozen=True)
class FederationSettings:
    """The `federation` section of the config (homeserver/config.py maps it here)."""

    enabled: bool = True
    listen: str | None = None  # host:port of the TLS listener; None: federation on the client listener only
    tls_certificate: Path | None = None
    tls_private_key: Path | None = None
    ca_files: tuple[str, ...] = ()  # extra CAs to trust for outbound requests
    ip_range_allow: tuple[str, ...] = ()  # CIDRs outbound requests may reach although not public
    verify_certificates: bool = True
    trusted_key_servers: tuple[Notary, ...] = ()
    well_known_server: str | None = None  # `m.server` of /.well-known/matrix/server, when set
    old_keys: Mapping[str, OldKey] = field(default_factory=dict)


QUERY_TIMEOUT_S = 15.0  # a client waits on these answers


class LocalAnswers(Protocol):
    """What other servers may ask about this server's users and aliases (the services answer)."""

    def profile(self, user_id: str, field: str | None) -> dict[str, Any] | None:
        """The public profile of a local user (one field, or all), None for an unknown user."""
        ...

    def alias(self, alias: str) -> tuple[str, list[str]] | None:
        """The room id of a local alias and servers to join it through, None if it is not ours."""
        ...

    def openid_user(self, token: str) -> str | None:
        """The user an OpenID token was issued to, None if unknown or expired."""
        ...

    def check_invite(self, inviter: str, invitee: str, room_id: str) -> None:
        """Raise a MatrixError when `invitee` (local) may not be invited (unknown, blocking invites)."""
        ...


class _KeyFetcher:
    def __init__(self, client: FederationClient) -> None:
        self.client = client

    async def server_keys(self, server: str) -> Any:
        return await self.client.request(server, "GET", "/_matrix/key/v2/server")

    async def notary_query(self, notary: str, server: str) -> Any:
        return await self.client.request(notary, "POST", "/_matrix/key/v2/query", content={"server_keys": {server: {}}})


class _Transport:
    def __init__(self, client: FederationClient) -> None:
        self.client = client

    async def send_transaction(self, destination: str, txn_id: str, body: dict[str, Any]) -> Any:
        path = path_of("_matrix", "federation", "v1", "send", txn_id)
        return await self.client.request(destination, "PUT", path, content=body)


class _Pdus:
    def __init__(self, pipeline: EventPipeline) -> None:
        self.pipeline = pipeline

    def pdu(self, event: int) -> dict[str, Any] | None:
        return self.pipeline.stored_pdu(event)

    def room_of(self, event: int) -> int | None:
        return self.pipeline.room_of(event)


class RemoteQueries:
    """Questions the services ask other servers (spec: server-server-api "Querying for
    information"): an alias's room (`/query/directory`) and a user's profile (`/query/profile`).
    Answers are the peer's input: checked for shape, errors made Matrix errors for the client."""

    def __init__(self, client: FederationClient) -> None:
        self.client = client

    async def room_alias(self, alias: str) -> tuple[str, list[str]]:
        server = alias.split(":", 1)[1]
        path = path_of("_matrix", "federation", "v1", "query", "directory", query={"room_alias": alias})
        answer = await self._ask(server, path, f"Room alias {alias}")
        room_id, servers = answer.get("room_id"), answer.get("servers")
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered the alias query without a room id")
        found = [s for s in servers if isinstance(s, str) and s] if isinstance(servers, list) else []
        return room_id, list(dict.fromkeys([*found, server]))

    async def profile(self, user_id: str) -> dict[str, Any] | None:
        server = user_id.split(":", 1)[1]
        path = path_of("_matrix", "federation", "v1", "query", "profile", query={"user_id": user_id})
        try:
            answer = await self._ask(server, path, f"Profile of {user_id}")
        except MatrixError as e:
            if e.status == 404:
                return None
            raise
        return {k: v for k, v in answer.items() if isinstance(k, str)}

    async def _ask(self, server: str, path: str, what: str) -> dict[str, Any]:
        try:
            answer = await self.client.request(server, "GET", path, timeout=QUERY_TIMEOUT_S)
        except FederationError as e:
            if e.status == 404:
                raise MatrixError(404, "M_NOT_FOUND", f"{what} not found on {server}") from None
            raise MatrixError(
                502, "M_UNKNOWN", f"{server} answered {e.status} {e.errcode or ''}: {e.message}"
            ) from None
        except Unreachable as e:
            # the client API documents 404 for what cannot be found; the message says why
            raise MatrixError(404, "M_NOT_FOUND", f"{what} not found: {server} could not be reached ({e})") from None
        if not isinstance(answer, dict):
            raise MatrixError(502, "M_UNKNOWN", f"{server} answered the query without an object")
        return answer


class Outbound:
    """The half of federation that asks other servers: the signing client, the key ring, our
    users' memberships through residents, and the queries. Built before the room and profile
    services, which use it (through their own protocols); `Federation` is built after them with it."""

    def __init__(
        self,
        settings: FederationSettings,
        server_name: str,
        key_id: str,
        signing_key: nacl.signing.SigningKey,
        store: Store,
        caches: CacheRegistry,
        pipeline: EventPipeline,
        clock: Callable[[], float] = time.time,
    ) -> None:
        tls = ssl_context(settings.ca_files, verify=settings.verify_certificates)
        self.client = FederationClient(
            server_name,
            key_id,
            signing_key,
            DnsPython(),
            caches.lru("federation.well_known", "federation", part=0.2),
            AddressPolicy(settings.ip_range_allow),
            tls,
        )
        self.our_keys = OurKeys(server_name, key_id, signing_key, settings.old_keys, clock=clock)
        self.keyring = KeyRing(
            self.our_keys,
            store,
            ServerKeyStore(store),
            _KeyFetcher(self.client),
            settings.trusted_key_servers,
            attempts=caches.lru("federation.key_fetches", "federation", part=0.1),
            clock=clock,
        )
        self.membership = RemoteMembership(server_name, pipeline, self.client, self.keyring.verify_keys)
        self.queries = RemoteQueries(self.client)


class Federation:
    def __init__(
        self,
        settings: FederationSettings,
        server_name: str,
        key_id: str,
        signing_key: nacl.signing.SigningKey,
        store: Store,
        caches: CacheRegistry,
        pipeline: EventPipeline,
        reads: FederationReads,
        *,
        servers_in_room: Callable[[str], list[str]],
        acl_allows: AclCheck,
        local: LocalAnswers,
        edu_handlers: Mapping[str, EduHandler],
        outbound: Outbound | None = None,
        rate_limit: Callable[[str], None] = lambda origin: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.server_name = server_name
        self.pipeline = pipeline
        self.reads = reads
        self.clock = clock
        self.servers_in_room = servers_in_room
        self.acl_allows = acl_allows
        self.local = local
        self.rate_limit = rate_limit  # raises 429 M_LIMIT_EXCEEDED for an origin past its budget
        if outbound is None:
            outbound = Outbound(settings, server_name, key_id, signing_key, store, caches, pipeline, clock)
        self.outbound = outbound
        self.client = outbound.client
        self.our_keys = outbound.our_keys
        self.keyring = outbound.keyring
        self.remote_membership = outbound.membership
        self.sender = FederationSender(
            server_name, store, FederationQueueStore(store), _Pdus(pipeline), _Transport(self.client), clock=clock
        )
        self.inbound = Inbound(pipeline, self.client, self.keyring.verify_keys)
        fruitless = caches.lru("federation.backfill", "federation", part=0.05)
        self.backfiller = Backfiller(server_name, pipeline, self.inbound, self.client, servers_in_room, fruitless)
        self.transactions = Transactions(
            self.inbound, acl_allows, edu_handlers, caches.lru("federation.transactions", "federation", part=0.1)
        )
        self.resident = Resident(server_name, pipeline, reads, self.keyring.verify_keys, self.forward)

    # -- outbound PDUs -----------------------------------------------------------------------------

    def write_hook(self, batch: Batch, ctx: Any, persisted: PersistedEvent) -> None:
        """In the batch of every event written: a local event in the timeline is owed to every
        other server in the room, and to the server of a user whose membership it changes."""
        if persisted.stream == 0 or persisted.rejected is not None or persisted.soft_failed:
            return
        sender = persisted.event.get("sender")
        if not isinstance(sender, str) or not sender.endswith(":" + self.server_name):
            return
        destinations = set(self.servers_in_room(persisted.room_id))
        state_key = persisted.event.get("state_key")
        if persisted.event.get("type") == "m.room.member" and isinstance(state_key, str) and ":" in state_key:
            destinations.add(state_key.split(":", 1)[1])
        self.sender.enqueue(batch, persisted.stream, persisted.short, destinations)

    def forward(self, persisted: PersistedEvent, exclude: Iterable[str]) -> None:
        """Pass on an event another server gave only to us (a join through us): to every other server
        in the room, in a batch of its own (the event is written already)."""
        skip = set(exclude)
        destinations = [s for s in self.servers_in_room(persisted.room_id) if s not in skip]
        if not destinations or persisted.stream == 0:
            return
        store = self.sender.store
        batch = store.batch()
        with batch:
            self.sender.enqueue(batch, persisted.stream, persisted.short, destinations)
            store.commit_now(batch)

    def send_edu(self, destinations: Iterable[str], edu_type: str, content: dict[str, Any]) -> None:
        for d in destinations:
            self.sender.send_edu(d, edu_type, content)

    def start(self) -> None:
        self.sender.start()

    async def close(self) -> None:
        await self.sender.close()
        await self.client.close()
