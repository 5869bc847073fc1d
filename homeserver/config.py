"""Configuration: defaults that run with no file at all, a TOML file, and `HOMESERVER_<KEY>`
environment variables (nested keys joined with `__`), validated once at start.

Unknown keys and bad values are refused with a message naming the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from homeserver.protocol.identifiers import is_valid_server_name
from homeserver.protocol.room_versions import KNOWN_ROOM_VERSIONS

ENV_PREFIX = "HOMESERVER_"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Strict):
    per_second: float = Field(gt=0, description="sustained requests per second")
    burst: int = Field(ge=1, description="requests allowed at once before limiting")


class RateLimits(_Strict):
    enabled: bool = True
    login: RateLimit = RateLimit(per_second=0.5, burst=5)
    registration: RateLimit = RateLimit(per_second=0.2, burst=5)
    send: RateLimit = RateLimit(per_second=10, burst=50)
    media: RateLimit = RateLimit(per_second=2, burst=20)


class SupportContact(_Strict):
    role: str = Field("m.role.admin", description="m.role.admin or m.role.security")
    matrix_id: str | None = None
    email_address: str | None = None


class Config(_Strict):
    server_name: str = Field("localhost", description="the name in user ids (@alice:SERVER_NAME); never change it")
    listen: str = Field("127.0.0.1:8008", description="host:port of the client-server API")
    public_baseurl: str | None = Field(None, description="the URL clients reach this server at (for .well-known)")
    data_dir: Path = Field(Path("./data"), description="where the store, media and signing key live")
    registration: Literal["token", "open", "closed"] = Field(
        "token", description="token: a registration token is needed; open: anyone; closed: nobody"
    )
    registration_shared_secret: str | None = Field(
        None, description="secret for /_synapse/admin/v1/register (admin tools, test suites)"
    )
    default_room_version: str = Field("11", description="room version of new rooms when clients do not ask")
    max_upload_size: int = Field(50 * 1024 * 1024, ge=1024, description="largest media upload, in bytes")
    fsync: bool = Field(False, description="sync every commit to disk (survives power loss; slower)")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    password_hash_cost: Literal["low", "default"] = Field(
        "default", description="argon2id cost; 'low' only for tests and benchmarks"
    )
    cache_mb: int = Field(32, ge=1, description="LevelDB block cache size in MiB")
    rate_limits: RateLimits = RateLimits()
    turn_uris: list[str] = Field(default_factory=list, description="TURN server URIs handed to clients")
    turn_shared_secret: str | None = None
    turn_user_lifetime_s: int = 86400
    url_previews: bool = Field(False, description="URL previews (off by default: they fetch arbitrary URLs)")
    support_page: str | None = Field(None, description="a web page with help for this server's users")
    support_contacts: list[SupportContact] = Field(
        default_factory=list, description="who to contact about this server (/.well-known/matrix/support)"
    )
    presence: bool = Field(True, description="share online/offline presence with users in the same rooms")

    @field_validator("server_name")
    @classmethod
    def _server_name(cls, v: str) -> str:
        if not is_valid_server_name(v):
            raise ValueError(f"{v!r} is not a valid server name (hostname[:port])")
        return v

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{v!r} is not host:port")
        return v

    @field_validator("default_room_version")
    @classmethod
    def _room_version(cls, v: str) -> str:
        if v not in KNOWN_ROOM_VERSIONS:
            raise ValueError(f"unknown room version {v!r} (known: {', '.join(KNOWN_ROOM_VERSIONS)})")
        return v

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


def _env_value(raw: str) -> Any:
    """Environment values are TOML values when they parse as one (numbers, booleans, lists), else strings."""
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
        if name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "CONFIG":
            keys = name[len(ENV_PREFIX) :].lower().split("__")
            _set_path(data, keys, _env_value(raw))
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{key}: {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


def example_config() -> str:
    """A documented example config: every key with its default and what it does."""
    lines = [
        "# homeserver configuration (TOML). Every key is optional; shown with its default.",
        "# Each key can also be set by an environment variable HOMESERVER_<KEY>,",
        "# nested keys joined with __ (e.g. HOMESERVER_RATE_LIMITS__ENABLED=false).",
        "",
    ]
    nested: list[tuple[str, type[BaseModel], Any]] = []
    for name, field in Config.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            nested.append((name, type(default), default))
            continue
        if field.description:
            lines.append(f"# {field.description}")
        lines.append(_toml_line(name, default))
        lines.append("")
    for name, _model, default in nested:
        lines.append(f"[{name}]")
        for sub, value in default:
            if isinstance(value, BaseModel):
                inner = ", ".join(f"{k} = {_toml_value(v)}" for k, v in value)
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
