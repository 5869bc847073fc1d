"""Outbound requests to other servers: discovery, the address policy, TLS, X-Matrix signing.

Every request is signed (spec: "Request Authentication") with the server names before delegation.
The connection goes to an address discovery found and the policy permits, with the Host header and
TLS name discovery chose (spec: "Resolving server names", "TLS": SNI unless the certificate is for
an IP address). Certificates are verified against the system's CAs plus `federation.ca_files`;
only an explicit setting turns verification off.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
import nacl.signing
import orjson
from yarl import URL

from federation.discovery import Destination, Dns, ServerResolver, WellKnown, parse_well_known
from federation.request_auth import authorization_header
from homeserver.protocol.addresses import AddressPolicy
from storage.cache import LruCache

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10.0
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
WELL_KNOWN_TIMEOUT_S = 10.0
WELL_KNOWN_MAX_BYTES = 64 * 1024
MAX_REDIRECTS = 5


class FederationError(Exception):
    """The remote server answered with an error (`status`, and the Matrix `errcode` when it gave one)."""

    def __init__(self, destination: str, status: int, errcode: str | None, message: str, body: Any = None) -> None:
        super().__init__(f"{destination}: {status} {errcode or ''} {message}".strip())
        self.destination = destination
        self.status = status
        self.errcode = errcode
        self.message = message
        self.body = body


class Unreachable(Exception):
    """No connection could be made (discovery, addresses refused by policy, TCP or TLS failures)."""


class Resolver(Dns, Protocol):
    async def addresses(self, host: str, port: int) -> list[str]: ...


def ssl_context(ca_files: Iterable[str] = (), *, verify: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for path in ca_files:
        ctx.load_verify_locations(cafile=path)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _url_host(address: str) -> str:
    return f"[{address}]" if ipaddress.ip_address(address).version == 6 else address


def path_of(*segments: str, query: Mapping[str, Any] | None = None) -> str:
    """A request path from segments (each percent-encoded) and a query (lists repeat the key)."""
    path = "/" + "/".join(quote(s, safe="") for s in segments)
    if query:
        path += "?" + urlencode([(k, v) for k, vs in query.items() for v in (vs if isinstance(vs, list) else [vs])])
    return path


class FederationClient:
    def __init__(
        self,
        server_name: str,
        key_id: str,
        signing_key: nacl.signing.SigningKey,
        dns: Resolver,
        well_known_cache: LruCache[str, Any],
        policy: AddressPolicy,
        tls: ssl.SSLContext,
    ) -> None:
        self.server_name = server_name
        self.key_id = key_id
        self.signing_key = signing_key
        self.resolver = ServerResolver(dns, _WellKnownOverHttps(self), well_known_cache)
        self.dns = dns
        self.policy = policy
        self.tls = tls
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.tls, limit=200, limit_per_host=8, ttl_dns_cache=None)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        destination: str,
        method: str,
        path: str,
        *,
        content: Any | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_bytes: int = MAX_RESPONSE_BYTES,
    ) -> Any:
        """A signed request; the JSON answer, `FederationError` for an error answer, `Unreachable` when
        no destination address could be reached. `path` starts with `/_matrix/` and holds the query."""
        if destination == self.server_name:
            raise Unreachable("a server does not send federation requests to itself")
        auth = authorization_header(self.server_name, destination, self.key_id, self.signing_key, method, path, content)
        body = orjson.dumps(content) if content is not None else None
        headers = {"Authorization": auth, "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            targets = await self.resolver.resolve(destination)
        except Exception as e:
            raise Unreachable(f"{destination}: cannot be resolved: {e}") from None
        failures: list[str] = []
        for target in targets:
            for address in await self._permitted(target):
                try:
                    return await self._send(
                        destination, target, address, method, path, headers, body, timeout, max_bytes
                    )
                except (aiohttp.ClientConnectionError, ssl.SSLError, TimeoutError, OSError) as e:
                    failures.append(f"{address}:{target.port}: {e!r}")
        if not failures:
            raise Unreachable(f"{destination}: no address it may be reached at")
        raise Unreachable(f"{destination}: " + "; ".join(failures[:3]))

    async def _permitted(self, target: Destination) -> list[str]:
        try:
            ipaddress.ip_address(target.target)
            addresses = [target.target]
        except ValueError:
            addresses = await self.dns.addresses(target.target, target.port)
        allowed = [a for a in addresses if self.policy.permits(a)]
        if addresses and not allowed:
            log.info("federation: refusing %s (%s): not a public address", target.target, ", ".join(addresses))
        return allowed

    async def _send(
        self,
        destination: str,
        target: Destination,
        address: str,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes | None,
        timeout: float,
        max_bytes: int,
    ) -> Any:
        # sent exactly as signed: yarl must not re-quote the path (the signature covers its bytes)
        url = URL(f"https://{_url_host(address)}:{target.port}{path}", encoded=True)
        t = aiohttp.ClientTimeout(total=timeout, connect=CONNECT_TIMEOUT_S)
        async with self._http().request(
            method,
            url,
            data=body,
            headers={**headers, "Host": target.host_header},
            server_hostname=target.tls_name,
            timeout=t,
            allow_redirects=False,
        ) as resp:
            raw = await _read_limited(resp, max_bytes)
            try:
                parsed = orjson.loads(raw) if raw else None
            except orjson.JSONDecodeError:
                parsed = None
            if resp.status >= 300:
                errcode = parsed.get("errcode") if isinstance(parsed, dict) else None
                error = parsed.get("error") if isinstance(parsed, dict) else None
                raise FederationError(
                    destination,
                    resp.status,
                    errcode if isinstance(errcode, str) else None,
                    error if isinstance(error, str) else resp.reason or "",
                    parsed,
                )
            if parsed is None and raw:
                raise FederationError(destination, resp.status, None, "the answer is not JSON")
            return parsed

    @contextlib.asynccontextmanager
    async def stream(
        self, destination: str, path: str, *, timeout: float = DEFAULT_TIMEOUT_S
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A signed GET whose answer is read by the caller as it arrives (media): the response, of
        any status, open for the `async with`; `Unreachable` when no address could be reached."""
        if destination == self.server_name:
            raise Unreachable("a server does not send federation requests to itself")
        auth = authorization_header(self.server_name, destination, self.key_id, self.signing_key, "GET", path, None)
        try:
            targets = await self.resolver.resolve(destination)
        except Exception as e:
            raise Unreachable(f"{destination}: cannot be resolved: {e}") from None
        t = aiohttp.ClientTimeout(total=timeout, connect=CONNECT_TIMEOUT_S)
        failures: list[str] = []
        for target in targets:
            for address in await self._permitted(target):
                url = URL(f"https://{_url_host(address)}:{target.port}{path}", encoded=True)
                try:
                    resp = await self._http().get(
                        url,
                        headers={"Authorization": auth, "Host": target.host_header},
                        server_hostname=target.tls_name,
                        timeout=t,
                        allow_redirects=False,
                    )
                except (aiohttp.ClientConnectionError, ssl.SSLError, TimeoutError, OSError) as e:
                    failures.append(f"{address}:{target.port}: {e!r}")
                    continue
                async with resp:
                    yield resp
                return
        raise Unreachable(f"{destination}: " + ("; ".join(failures[:3]) or "no address it may be reached at"))

    @contextlib.asynccontextmanager
    async def stream_url(
        self, url: str, *, timeout: float = DEFAULT_TIMEOUT_S
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """An unsigned GET of an `https://` URL another server pointed us to (a media `Location`),
        under the same address policy; no redirects."""
        parsed = URL(url)
        if parsed.scheme != "https" or not parsed.host:
            raise Unreachable(f"{url}: only https:// locations are followed")
        host, port = parsed.host, parsed.port or 443
        target = Destination(host, port, parsed.raw_authority, None if _is_ip(host) else host)
        addresses = await self._permitted(target)
        if not addresses:
            raise Unreachable(f"{host}: no address it may be reached at")
        t = aiohttp.ClientTimeout(total=timeout, connect=CONNECT_TIMEOUT_S)
        try:
            resp = await self._http().get(
                URL(f"https://{_url_host(addresses[0])}:{port}{parsed.raw_path_qs}", encoded=True),
                headers={"Host": target.host_header},
                server_hostname=target.tls_name,
                timeout=t,
                allow_redirects=False,
            )
        except (aiohttp.ClientConnectionError, ssl.SSLError, TimeoutError, OSError) as e:
            raise Unreachable(f"{host}: {e!r}") from None
        async with resp:
            yield resp

    async def fetch_well_known(self, hostname: str) -> WellKnown:
        """`https://<hostname>/.well-known/matrix/server`, following redirects (not in loops), with
        the address policy applied to every hop."""
        url = f"https://{hostname}/.well-known/matrix/server"
        seen: set[str] = set()
        for _ in range(MAX_REDIRECTS + 1):
            seen.add(url)
            parsed = URL(url)
            host, port = parsed.host or "", parsed.port or 443
            target = Destination(host, port, parsed.raw_authority, None if _is_ip(host) else host)
            addresses = await self._permitted(target)
            if not addresses:
                return WellKnown(None, 0)
            t = aiohttp.ClientTimeout(total=WELL_KNOWN_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
            path = parsed.raw_path_qs
            async with self._http().get(
                f"https://{_url_host(addresses[0])}:{port}{path}",
                headers={"Host": target.host_header},
                server_hostname=target.tls_name,
                timeout=t,
                allow_redirects=False,
            ) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = str(parsed.join(URL(resp.headers["Location"])))
                    if url in seen or not url.startswith("https://"):
                        return WellKnown(None, 0)
                    continue
                raw = await _read_limited(resp, WELL_KNOWN_MAX_BYTES)
                try:
                    body = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    body = None
                return parse_well_known(resp.status, body, resp.headers.get("Cache-Control"))
        return WellKnown(None, 0)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


async def _read_limited(resp: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise FederationError(str(resp.url.host), 502, None, f"answer larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(65536):
        size += len(chunk)
        if size > max_bytes:
            raise FederationError(str(resp.url.host), 502, None, f"answer larger than {max_bytes} bytes")
        chunks.append(chunk)
        if size > 1 << 20:
            await asyncio.sleep(0)  # a large answer: let other tasks run between chunks
    return b"".join(chunks)


class _WellKnownOverHttps:
    """The well-known fetcher discovery uses: the client's own HTTPS (policy, CAs, timeouts)."""

    def __init__(self, client: FederationClient) -> None:
        self.client = client

    async def fetch(self, hostname: str) -> WellKnown:
        return await self.client.fetch_well_known(hostname)
