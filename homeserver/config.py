"""Configuration: defaults that run with no file at all, a TOML file, and `HOMESERVER_<KEY>`
environment variables (nested keys joined with `__`), validated once at start (pydantic models,
strict as TOML types them, through `homeserver.validation`'s wording).

Unknown keys and bad values are refused with a message naming the key.
"""

from __future__ import annotations

import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from homeserver.protocol.identifiers import is_valid_server_name
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS
from homeserver.validation import problems

ENV_PREFIX = "HOMESERVER_"
# variables with the prefix that are not settings: the config file's path, the admin CLI's token
NOT_SETTINGS = frozenset({ENV_PREFIX + "CONFIG", ENV_PREFIX + "ACCESS_TOKEN"})
# Config models refuse unknown keys (a typo must not be ignored) and cannot be changed once loaded.
CLOSED = ConfigDict(strict=True, extra="forbid", frozen=True, defer_build=True)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


def _server_name(v: str) -> str:
    if not is_valid_server_name(v):
        raise ValueError(f"{v!r} is not a valid server name (hostname[:port])")
    return v


def _listen(v: str) -> str:
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{v!r} is not host:port")
    return v


def _room_version(v: str) -> str:
    if v not in KNOWN_ROOM_VERSIONS:
        raise ValueError(f"unknown room version {v!r} (known: {', '.join(KNOWN_ROOM_VERSIONS)})")
    return v


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(v: str) -> str:
    # any case: people write `warning` as often as `WARNING`
    if v.upper() not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)} (any case)")
    return v.upper()


class RateLimit(BaseModel):
    model_config = CLOSED
    per_second: float = Field(gt=0, description="sustained requests per second")
    burst: int = Field(ge=1, description="requests allowed at once before limiting")


class RateLimits(BaseModel):
    model_config = CLOSED
    enabled: bool = True
    login: RateLimit = RateLimit(per_second=0.5, burst=5)
    registration: RateLimit = RateLimit(per_second=0.2, burst=5)
    send: RateLimit = RateLimit(per_second=10, burst=50)
    media: RateLimit = RateLimit(per_second=2, burst=20)
    # per origin server, over every authenticated federation request (transactions, fetches, joins)
    federation: RateLimit = RateLimit(per_second=50, burst=300)
    # per client address, over the OAuth 2.0 endpoints and pages (registration, token, device codes)
    oauth: RateLimit = RateLimit(per_second=2, burst=30)


class HttpLimits(BaseModel):
    """How long a connection may take over each part of a request, and how many quiet ones are kept
    (see `homeserver.api.connections`). Long-poll /sync and slow uploads are not cut: the body
    deadline counts from the last bytes received, not from the start."""

    model_config = CLOSED

    header_timeout_s: float = Field(
        default=20.0, gt=0, description="a request's headers must arrive within this many seconds of its first byte"
    )
    body_timeout_s: float = Field(
        default=60.0, gt=0, description="close a connection whose request body sends nothing for this many seconds"
    )
    idle_timeout_s: float = Field(
        default=180.0, gt=0, description="close a keep-alive connection that sends no new request for this long"
    )
    max_idle_connections: int = Field(
        default=512, ge=1, description="connections kept between requests (idle or half-sent); quietest closed first"
    )


def _cidr(v: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise ValueError(f"{v!r} is not an IP range (CIDR, e.g. 10.0.0.0/8)") from None
    return v


class TrustedKeyServer(BaseModel):
    """A notary asked for other servers' keys when they cannot be reached (spec: key/v2/query)."""

    model_config = CLOSED
    server_name: Annotated[str, AfterValidator(_server_name)]
    verify_keys: dict[str, str] = Field(description="its key ids and public keys (unpadded base64)")


class FederationConfig(BaseModel):
    """Talking to other Matrix servers (federation/). Served on the client listener (behind a TLS
    reverse proxy) and, with `listen`, on a TLS listener of its own."""

    model_config = CLOSED
    enabled: bool = Field(default=True, description="federate with other servers")
    listen: Annotated[str, AfterValidator(_listen)] | None = Field(
        default=None, description="host:port of a TLS listener for federation (and the client API), e.g. 0.0.0.0:8448"
    )
    tls_certificate: Path | None = Field(default=None, strict=False, description="PEM certificate chain for `listen`")
    tls_private_key: Path | None = Field(default=None, strict=False, description="PEM private key for `listen`")
    ca_files: list[Annotated[Path, Field(strict=False)]] = Field(
        default_factory=list, description="extra CA certificates trusted for outbound requests"
    )
    ip_range_allow: list[Annotated[str, AfterValidator(_cidr)]] = Field(
        default_factory=list,
        description="IP ranges outbound requests may reach although private or loopback (tests, a private federation)",
    )
    verify_certificates: bool = Field(
        default=True, description="check other servers' TLS certificates (turn off only for tests)"
    )
    trusted_key_servers: list[TrustedKeyServer] = Field(
        default_factory=list, description="notaries asked for keys of servers that cannot be reached"
    )
    well_known_server: Annotated[str, AfterValidator(_server_name)] | None = Field(
        default=None, description="what /.well-known/matrix/server delegates to (host[:port]), if anything"
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> FederationConfig:
        if self.listen is not None and (self.tls_certificate is None or self.tls_private_key is None):
            raise ValueError("listen needs tls_certificate and tls_private_key")
        return self


class InvitesConfig(BaseModel):
    """Invite links (homeserver/auth/invites.py, the page at /invite/<token>): who may make them and
    their limits. Admins make invites from the CLI and the admin API whatever these say."""

    model_config = CLOSED
    users_may_invite: bool = Field(default=False, description="ordinary users may create invites for their friends")
    user_quota: int = Field(default=5, ge=0, description="valid (unused, unexpired) invites a user may hold at once")
    user_max_uses: int = Field(default=5, ge=1, description="most uses a user's invite may have")
    default_expiry_days: float = Field(
        default=7, gt=0, description="days an invite works when its maker gives no expiry (users can give no longer)"
    )


def _provider_id(v: str) -> str:
    # spec: identity provider ids: 1-255 characters of [A-Za-z0-9_.~-] (they appear in URLs)
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.~-]{1,255}", v):
        raise ValueError(f"{v!r} is not a provider id (letters, digits, _ . ~ -)")
    return v


class OidcProviderConfig(BaseModel):
    """An upstream OpenID Connect provider for single sign-on (homeserver/auth/oidc.py)."""

    model_config = CLOSED
    id: Annotated[str, AfterValidator(_provider_id)] = Field(description="in URLs and the login button's id")
    name: str = Field(description="shown on the login button")
    issuer: str = Field(description="the issuer URL; its /.well-known/openid-configuration is read")
    client_id: str
    client_secret: str | None = Field(default=None, description="none: a public client (PKCE only)")
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile"])
    icon: str | None = Field(default=None, description="an mxc:// URI for the login button")
    localpart_claim: str = Field(default="preferred_username", description="the claim new users' localpart comes from")
    display_name_claim: str = Field(default="name", description="the claim new users' display name comes from")
    picture_claim: str | None = Field(
        default="picture", description="the claim whose image URL becomes new users' avatar (none: no avatar)"
    )
    registration: Literal["open", "invite", "closed"] = Field(
        default="open", description="who may get a new account through this provider"
    )
    allow_existing_users: bool = Field(
        default=False, description="link an upstream account to an existing user with the same localpart"
    )


def _mastodon_url(v: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(v.strip())
    loopback = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if parts.scheme not in ("https", "http") or not parts.hostname or (parts.scheme == "http" and not loopback):
        raise ValueError(f"{v!r} is not an https:// URL of a Mastodon server")
    if parts.query or parts.fragment or parts.path.strip("/"):
        raise ValueError(f"{v!r}: give the server's address alone, e.g. https://mastodon.example")
    return f"{parts.scheme}://{parts.netloc}"


class MastodonProviderConfig(BaseModel):
    """A Mastodon server whose users may sign in (homeserver/auth/mastodon.py): its URL is enough; the
    homeserver registers itself there as an app on first use. The rules apply at every login."""

    model_config = CLOSED
    url: Annotated[str, AfterValidator(_mastodon_url)] = Field(
        description="the Mastodon server, e.g. https://my.social"
    )
    id: Annotated[str, AfterValidator(_provider_id)] = Field(
        default="", description="in URLs and the login button's id (default: the server's host name)"
    )
    name: str = Field(default="", description="shown on the login button (default: the server's host name)")
    icon: str | None = Field(default=None, description="an mxc:// URI for the login button")
    registration: Literal["open", "invite", "closed"] = Field(
        default="open", description="who may get a new account through this server: open, invite or closed"
    )
    allow_existing_users: bool = Field(
        default=False, description="link a Mastodon account to an existing user with the same localpart"
    )
    allow_bots: bool = Field(default=False, description="accounts marked as bots may sign in")
    allow_limited: bool = Field(default=False, description="accounts the server's moderators limited may sign in")
    min_account_age_days: float = Field(
        default=0, ge=0, description="a Mastodon account must be at least this many days old to sign in"
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_url(cls, data: Any) -> Any:
        # the id and name default to the server's host name (a port becomes `_port` in the id)
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            from urllib.parse import urlsplit

            netloc = urlsplit(data["url"].strip()).netloc
            if netloc:
                data = {"id": netloc.replace(":", "_"), "name": netloc, **data}
        return data


class SsoConfig(BaseModel):
    """Single sign-on (`m.login.sso`): upstream providers and where logins may be handed back."""

    model_config = CLOSED
    oidc: list[OidcProviderConfig] = Field(default_factory=list, description="OpenID Connect providers")
    mastodon: list[MastodonProviderConfig] = Field(
        default_factory=list, description="Mastodon servers whose users may sign in"
    )
    client_hosts: list[str] = Field(
        default_factory=list,
        description="hosts a login is handed back to without a confirmation page (e.g. app.element.io)",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> SsoConfig:
        ids = [p.id for p in self.oidc] + [p.id for p in self.mastodon]
        if len(ids) != len(set(ids)):
            raise ValueError("provider ids must be unique")
        return self


class OAuthConfig(BaseModel):
    """The OAuth 2.0 API (homeserver/auth/oauth/): how Element X and other OAuth clients log in and
    sign up. The pages live under /_homeserver/oauth/ and /_homeserver/account."""

    model_config = CLOSED
    enabled: bool = Field(default=True, description="serve the OAuth 2.0 API (auth_metadata and its endpoints)")
    access_token_lifetime_s: int = Field(
        default=300, ge=30, description="seconds an OAuth access token works before the client refreshes it"
    )
    refresh_grace_s: int = Field(
        default=60,
        ge=0,
        description="seconds a used refresh token may be used again (a client that lost the answer); later "
        "reuse ends the session",
    )
    code_lifetime_s: int = Field(default=300, ge=10, description="seconds an authorization code can be exchanged")
    device_code_lifetime_s: int = Field(
        default=900, ge=60, description="seconds a device code (device authorization grant) stays valid"
    )
    device_poll_interval_s: int = Field(
        default=5, ge=1, description="seconds a device must wait between polls of the token endpoint"
    )
    web_session_lifetime_s: int = Field(
        default=3600, ge=60, description="seconds the browser stays signed in to the login and account pages"
    )


class PushConfig(BaseModel):
    """Delivering notifications to push gateways (homeserver/push/delivery.py). Email pushers are
    not supported."""

    model_config = CLOSED
    ip_range_allow: list[Annotated[str, AfterValidator(_cidr)]] = Field(
        default_factory=list,
        description="IP ranges push gateways may be at although private or loopback (a gateway on the LAN, tests)",
    )
    include_content: bool = Field(
        default=True, description="send the event's content to gateways (off: ids, sender and room name only)"
    )
    timeout_s: float = Field(default=10.0, gt=0, description="a gateway must answer a notification within this time")
    max_connections: int = Field(default=100, ge=1, description="connections to push gateways at once, in all")
    max_connections_per_gateway: int = Field(
        default=10, ge=1, description="connections to one push gateway at once (a slow one holds no more)"
    )


LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


def _domain(v: str) -> str:
    v = v.strip().lower().rstrip(".")
    if ":" in v or not is_valid_server_name(v):
        raise ValueError(f"{v!r} is not a domain name (no port, no scheme: e.g. example.org)")
    return v


def _email(v: str) -> str:
    if "@" not in v.strip("@") or any(c.isspace() for c in v):
        raise ValueError(f"{v!r} is not an email address")
    return v


class PublicConfig(BaseModel):
    """The server as its own public endpoint (homeserver/certificates/): with `domain` set it gets a
    TLS certificate from an ACME CA (Let's Encrypt by default), answers the http-01 challenge on
    `http_port` (which otherwise redirects to https) or tls-alpn-01 on `https_port`, and serves the
    client API and federation over TLS on `https_port` and `federation_port`."""

    model_config = CLOSED
    domain: Annotated[str, AfterValidator(_domain)] | None = Field(
        default=None, description="the domain pointing at this machine; set it to get certificates automatically"
    )
    email: Annotated[str, AfterValidator(_email)] | None = Field(
        default=None, description="the admin's email, given to the CA (expiry warnings, account recovery)"
    )
    acme_directory: str = Field(
        default=LETS_ENCRYPT,
        description="the ACME directory URL (Let's Encrypt; staging: "
        "https://acme-staging-v02.api.letsencrypt.org/directory)",
    )
    acme_ca_files: list[Annotated[Path, Field(strict=False)]] = Field(
        default_factory=list, description="extra CA certificates trusted when talking to the ACME server (test CAs)"
    )
    http_port: int = Field(default=80, ge=1, le=65535, description="port of the http-01 challenge and the redirect")
    challenge: Literal["auto", "http-01", "tls-alpn-01"] = Field(
        default="auto",
        description="how the CA checks the domain: auto (http-01 while http_port is ours, else tls-alpn-01 on "
        "https_port; a failed check tries the other next), http-01 only, or tls-alpn-01 only",
    )
    https_port: int = Field(default=443, ge=1, le=65535, description="TLS port of the client API and federation")
    federation_port: int = Field(
        default=8448, ge=0, le=65535, description="TLS port for servers that skip discovery (0: none)"
    )
    bind: str = Field(default="0.0.0.0", description="the address the public ports listen on")

    @model_validator(mode="after")
    def _needs_email(self) -> PublicConfig:
        if self.domain is not None and self.email is None:
            raise ValueError("domain needs email (the CA's contact for this server)")
        return self


class SupportContact(BaseModel):
    model_config = CLOSED
    role: str = Field(default="m.role.admin", description="m.role.admin or m.role.security")
    matrix_id: str | None = None
    email_address: str | None = None


class Config(BaseModel):
    model_config = CLOSED
    server_name: Annotated[str, AfterValidator(_server_name)] = Field(
        default="localhost",
        description="the name in user ids (@alice:SERVER_NAME); never change it",
    )
    listen: Annotated[str, AfterValidator(_listen)] = Field(
        default="127.0.0.1:8008", description="host:port of the client-server API"
    )
    public_baseurl: str | None = Field(
        default=None, description="the URL clients reach this server at (for .well-known)"
    )
    data_dir: Path = Field(
        default=Path("./data"), strict=False, description="where the store, media and signing key live"
    )
    registration: Literal["token", "open", "closed"] = Field(
        default="token", description="token: a registration token is needed; open: anyone; closed: nobody"
    )
    registration_shared_secret: str | None = Field(
        default=None, description="secret for /_synapse/admin/v1/register (admin tools, test suites)"
    )
    default_room_version: Annotated[str, AfterValidator(_room_version)] = Field(
        default="11", description="room version of new rooms when clients do not ask"
    )
    max_upload_size: int = Field(default=50 * 1024 * 1024, ge=1024, description="largest media upload, in bytes")
    remote_media_cache_size: int = Field(
        default=1024 * 1024 * 1024, ge=0, description="bytes of other servers' media kept; the oldest go first"
    )
    fsync: bool = Field(default=False, description="sync every commit to disk (survives power loss; slower)")
    log_level: Annotated[str, AfterValidator(_log_level)] = Field(
        default="INFO", description="DEBUG, INFO, WARNING or ERROR (any case)"
    )
    password_hash_cost: Literal["low", "default"] = Field(
        default="default", description="argon2id cost; 'low' only for tests and benchmarks"
    )
    strict_indexes: bool = Field(
        default=False,
        description="tests and development: a failure in the room indexes (relations, search, transaction "
        "ids...) fails the write; by default the event is written, the failure logged and kept for `inspect check`",
    )
    cache_mb: int = Field(
        default=64,
        ge=1,
        description="memory for caches in MiB, shared by LevelDB and the server's own caches (RSS: about 50 + this)",
    )
    rate_limits: RateLimits = RateLimits()
    http: HttpLimits = HttpLimits()
    turn_uris: list[str] = Field(default_factory=list, description="TURN server URIs handed to clients")
    turn_shared_secret: str | None = None
    turn_user_lifetime_s: int = 86400
    url_previews: bool = Field(default=False, description="URL previews (off by default: they fetch arbitrary URLs)")
    support_page: str | None = Field(default=None, description="a web page with help for this server's users")
    support_contacts: list[SupportContact] = Field(
        default_factory=list, description="who to contact about this server (/.well-known/matrix/support)"
    )
    presence: bool = Field(default=True, description="share online/offline presence with users in the same rooms")
    federation: FederationConfig = FederationConfig()
    invites: InvitesConfig = InvitesConfig()
    sso: SsoConfig = SsoConfig()
    push: PushConfig = PushConfig()
    oauth: OAuthConfig = OAuthConfig()
    public: PublicConfig = PublicConfig()

    @model_validator(mode="before")
    @classmethod
    def _public_defaults(cls, data: Any) -> Any:
        # with public.domain, the server name and discovery default to it (unless set by hand)
        public = data.get("public") if isinstance(data, dict) else None
        domain = public.get("domain") if isinstance(public, dict) else None
        if not isinstance(public, dict) or not isinstance(domain, str) or not domain.strip():
            return data
        domain = domain.strip().lower().rstrip(".")
        port = public.get("https_port", 443)
        suffix = "" if port == 443 else f":{port}"
        data = {"server_name": domain, "public_baseurl": f"https://{domain}{suffix}", **data}
        federation = data.get("federation", {})
        if isinstance(federation, dict) and "well_known_server" not in federation:
            data["federation"] = {**federation, "well_known_server": f"{domain}:{port}"}
        return data

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _set_path(target: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        nxt = target.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"{'.'.join(path)}: {part} is not a table")
        target = nxt
    target[path[-1]] = value


def _takes_text(model: type[BaseModel], path: list[str]) -> bool:
    """Whether the key at `path` holds a string (str, a path, a choice of strings, optional or not)."""
    for i, part in enumerate(path):
        if part not in model.model_fields:
            return False  # unknown: validation names it
        tp = typing.get_type_hints(model)[part]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = members[0] if len(members) == 1 else tp
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            model = tp
            continue
        if i != len(path) - 1:
            return False
        if typing.get_origin(tp) is Literal:
            return all(isinstance(v, str) for v in typing.get_args(tp))
        return tp is str or tp is Path
    return False


def _env_value(raw: str, text: bool) -> Any:
    """An environment value as a person types it. A string setting takes the text as it is
    (`HOMESERVER_DEFAULT_ROOM_VERSION=10`), or a quoted TOML string; any other setting takes a TOML
    value (`true`, `1024`, `["a", "b"]`) and stays strict (`HOMESERVER_FSYNC=1` is refused)."""
    quoted = raw[:1] in ('"', "'") and raw[-1:] == raw[:1] and len(raw) > 1
    if text and not quoted:
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def load_config(path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    env = os.environ if environ is None else environ
    for name, raw in env.items():
        if name.startswith(ENV_PREFIX) and name not in NOT_SETTINGS:
            keys = name[len(ENV_PREFIX) :].lower().split("__")
            _set_path(data, keys, _env_value(raw, _takes_text(Config, keys)))
    try:
        return Config.model_validate(data)
    except ValidationError as e:  # every problem, each naming its key ("unknown key" for extras)
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems(e))) from None


def example_config() -> str:
    """A documented example config: every key with its default and what it does."""
    lines = [
        "# homeserver configuration (TOML). Every key is optional; shown with its default.",
        "# Each key can also be set by an environment variable HOMESERVER_<KEY>,",
        "# nested keys joined with __ (e.g. HOMESERVER_RATE_LIMITS__ENABLED=false).",
        "",
    ]
    nested: list[tuple[str, BaseModel]] = []
    for name, spec in Config.model_fields.items():
        default = spec.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            nested.append((name, default))
            continue
        if spec.description:
            lines.append(f"# {spec.description}")
        lines.append(_toml_line(name, default))
        lines.append("")
    for name, default in nested:
        lines.append(f"[{name}]")
        for sub, sub_spec in type(default).model_fields.items():
            value = getattr(default, sub)
            if sub_spec.description:
                lines.append(f"# {sub_spec.description}")
            if isinstance(value, BaseModel):
                inner = ", ".join(f"{k} = {_toml_value(getattr(value, k))}" for k in type(value).model_fields)
                lines.append(f"{sub} = {{ {inner} }}")
            else:
                lines.append(_toml_line(sub, value))
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _toml_line(name: str, value: Any) -> str:
    if value is None:
        return f"# {name} =   (not set)"
    return f"{name} = {_toml_value(value)}"
