"""homeserver.config: pydantic models, strict as TOML types them; every problem named by its key."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import homeserver
from homeserver.config import Config, ConfigError, RateLimit, RateLimits, example_config, load_config


def test_constructor_validates_and_takes_instances() -> None:
    assert RateLimits(login=RateLimit(per_second=2, burst=3)).login.per_second == 2.0
    assert RateLimits(login={"per_second": 2, "burst": 3}).login == RateLimit(per_second=2.0, burst=3)
    with pytest.raises(ValidationError):
        RateLimit(per_second=1, burst="3")
    with pytest.raises(ValidationError):
        RateLimit(per_second=1)


def config_error(**environ: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(environ={f"HOMESERVER_{k.upper()}": v for k, v in environ.items()})
    return str(info.value)


def test_config_refuses_unknown_keys_naming_them() -> None:
    message = config_error(
        sever_name='"x"',
        rate_limits__login__per_second="1",
        rate_limits__login__burst="2",
        rate_limits__login__burts="3",
    )
    assert message == "invalid configuration:\n  rate_limits.login.burts: unknown key\n  sever_name: unknown key"
    # a table given replaces the default one: what it leaves out is missing
    assert config_error(rate_limits__login__burst="2").endswith("rate_limits.login.per_second: required")


def test_config_names_bad_values() -> None:
    message = config_error(cache_mb="0", fsync='"yes"', registration='"invite"', listen='"nowhere"')
    assert message.splitlines() == [
        "invalid configuration:",
        "  listen: 'nowhere' is not host:port",
        "  registration: must be one of 'token', 'open', 'closed'",
        "  fsync: expected a boolean",
        "  cache_mb: must be at least 1",
    ]
    assert "server_name: 'bad name' is not a valid server name" in config_error(server_name='"bad name"')
    assert "default_room_version: unknown room version '99'" in config_error(default_room_version='"99"')
    message = config_error(rate_limits__send__per_second="0", rate_limits__send__burst="1")
    assert message.endswith("\n  rate_limits.send.per_second: must be greater than 0")


def test_config_values(tmp_path: Path) -> None:
    path = tmp_path / "homeserver.toml"
    path.write_text(
        'data_dir = "/srv/hs"\nturn_uris = ["turn:a"]\n[rate_limits]\nlogin = { per_second = 1, burst = 2 }\n'
    )
    config = load_config(path, environ={"HOMESERVER_RATE_LIMITS__ENABLED": "false", "HOMESERVER_LISTEN": "[::1]:8448"})
    assert config.data_dir == Path("/srv/hs") and config.turn_uris == ["turn:a"]
    assert config.rate_limits.login == RateLimit(per_second=1.0, burst=2) and not config.rate_limits.enabled
    assert config.rate_limits.send == RateLimits().send  # the rest keep their defaults
    assert (config.listen_host, config.listen_port) == ("::1", 8448)
    with pytest.raises(ValidationError):  # frozen
        config.server_name = "other"  # type: ignore[misc]
    assert Config.model_validate({"data_dir": tmp_path}).data_dir == tmp_path
    assert Config().support_contacts is not Config().support_contacts


def test_example_config_lists_every_key() -> None:
    text = example_config()
    for name in Config.model_fields:
        assert f"{name} =" in text or f"[{name}]" in text
    assert "send = { per_second = 10.0, burst = 50 }" in text


def test_every_pydantic_model_of_the_server_builds() -> None:
    """Models are built lazily (defer_build): build each now, so an annotation that cannot be resolved
    at run time (a name imported only for type checking) fails here rather than on a first request."""
    for info in pkgutil.walk_packages(homeserver.__path__, "homeserver."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    seen = []
    todo = list(BaseModel.__subclasses__())
    while todo:
        model = todo.pop()
        todo.extend(model.__subclasses__())
        if model.__module__.startswith("homeserver."):
            model.model_rebuild(force=True)
            assert model.__pydantic_complete__, model
            seen.append(model.__name__)
    assert {"Config", "CreateRoomBody", "SearchRequest", "SharedSecretBody", "TargetBody"} <= set(seen)
