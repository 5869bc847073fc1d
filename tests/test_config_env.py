"""Environment values as a person types them (`homeserver.config.load_config`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from homeserver.config import Config, ConfigError, load_config


def env_config(**environ: str) -> Config:
    return load_config(environ={f"HOMESERVER_{k.upper()}": v for k, v in environ.items()})


def env_error(**environ: str) -> str:
    with pytest.raises(ConfigError) as info:
        env_config(**environ)
    return str(info.value)


def test_string_settings_take_the_text_as_typed() -> None:
    config = env_config(
        default_room_version="10",  # a number to TOML, a string to this key
        server_name="example.org",
        data_dir="/srv/home server",
        public_baseurl="https://example.org:8448/",
        registration="open",
        registration_shared_secret='a = "b" # c',  # TOML-looking text stays text
        turn_shared_secret="true",
        password_hash_cost="low",
    )
    assert config.default_room_version == "10"
    assert config.server_name == "example.org"
    assert config.data_dir == Path("/srv/home server")
    assert config.public_baseurl == "https://example.org:8448/"
    assert config.registration == "open"
    assert config.registration_shared_secret == 'a = "b" # c'
    assert config.turn_shared_secret == "true"


def test_quoted_strings_still_read_as_toml_strings() -> None:
    config = env_config(default_room_version='"10"', server_name="'example.org'", data_dir='"/srv/a"')
    assert (config.default_room_version, config.server_name, config.data_dir) == ("10", "example.org", Path("/srv/a"))


def test_other_settings_stay_strict() -> None:
    assert env_error(fsync="1").endswith("fsync: expected a boolean")  # as the README says: write true
    assert env_error(cache_mb='"32"').endswith("cache_mb: expected an integer")
    assert env_error(http__header_timeout_s="soon").endswith("http.header_timeout_s: expected a number")
    assert "default_room_version: unknown room version '99'" in env_error(default_room_version="99")
    config = env_config(fsync="true", max_upload_size="2048", turn_uris='["turn:a", "turn:b"]')
    assert config.fsync is True and config.max_upload_size == 2048 and config.turn_uris == ["turn:a", "turn:b"]
    assert env_config(http__header_timeout_s="2.5", http__max_idle_connections="7").http.header_timeout_s == 2.5


@pytest.mark.parametrize("typed", ["warning", "Warning", "WARNING", "wArNiNg"])
def test_log_level_in_any_case(typed: str) -> None:
    assert env_config(log_level=typed).log_level == "WARNING"


def test_log_level_in_any_case_in_a_file_too(tmp_path: Path) -> None:
    path = tmp_path / "homeserver.toml"
    path.write_text('log_level = "debug"\n')
    assert load_config(path, environ={}).log_level == "DEBUG"
    assert env_error(log_level="loud").endswith("log_level: must be one of DEBUG, INFO, WARNING, ERROR (any case)")


def test_nested_http_settings_keep_their_other_defaults() -> None:
    http = env_config(http__body_timeout_s="5").http
    assert http.body_timeout_s == 5.0
    assert http.header_timeout_s == Config().http.header_timeout_s
    assert env_error(http__idle_timeout_s="0").endswith("http.idle_timeout_s: must be greater than 0")
