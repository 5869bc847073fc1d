"""`python -m homeserver` as the person running it sees it: start-up failures as one line on stderr
with a non-zero exit status and no traceback, the first-admin banner only once the server listens,
and every command reading the same configuration as the server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.database import Database
from storage.engine import Store
from tests.interop.server import REPO_ROOT, free_port

BANNER = "one-time registration token"


def clean_env(**settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMESERVER_")}
    env.update({"HOMESERVER_PASSWORD_HASH_COST": "low", "HOMESERVER_LOG_LEVEL": "warning"})
    env.update({f"HOMESERVER_{k.upper()}": str(v) for k, v in settings.items()})
    return env


def unprivileged() -> list[str]:
    """A prefix that makes permissions count: root ignores them unless it drops those capabilities."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    # util-linux (essential on Debian) has it; without it these tests would test nothing, so fail
    assert setpriv is not None, "running as root needs setpriv (util-linux) to test file permissions"
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", "--"]


def homeserver(
    *args: str, cwd: Path, prefix: list[str] | None = None, timeout: float = 60, **settings: Any
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "homeserver", *args],
        cwd=cwd,
        env={**clean_env(**settings), "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_failure(result: subprocess.CompletedProcess[str], *fragments: str, status: int = 1) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.returncode == status
    assert BANNER not in result.stdout  # nothing handed out by a server that did not start
    return lines[0]


@pytest.fixture
def where(tmp_path: Path) -> Iterator[Path]:
    """The folder a test runs the command in; what a test made read-only is made writable again after."""
    yield tmp_path
    for p in tmp_path.rglob("*"):
        if p.is_dir():
            p.chmod(0o755)


def empty_store(data_dir: Path) -> None:
    Database(data_dir / "db").close()


# -- start-up failures -----------------------------------------------------------------------------


def test_port_in_use(where: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = homeserver(cwd=where, listen=f"127.0.0.1:{port}", data_dir=where / "data")
    assert_one_line_failure(result, f"127.0.0.1:{port}", "already in use", "listen")


def test_data_dir_that_is_a_file(where: Path) -> None:
    (where / "data").write_text("not a folder")
    line = assert_one_line_failure(homeserver(cwd=where, data_dir=where / "data"), str(where / "data"), "a file")
    assert "data_dir" in line


def test_unwritable_data_dir(where: Path) -> None:
    locked = where / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    result = homeserver(cwd=where, prefix=unprivileged(), data_dir=locked / "data")
    assert_one_line_failure(result, f"cannot create the data directory {locked / 'data'}", "Permission denied")
    result = homeserver(cwd=where, prefix=unprivileged(), data_dir=locked)
    assert_one_line_failure(result, f"the data directory {locked} is not writable", "data_dir")


def test_read_only_store_is_named_as_such(where: Path) -> None:
    data = where / "data"
    empty_store(data)
    for p in (data / "db", *(data / "db").iterdir()):
        p.chmod(0o555 if p.is_dir() else 0o444)
    result = homeserver(cwd=where, prefix=unprivileged(), data_dir=data, listen=f"127.0.0.1:{free_port()}")
    line = assert_one_line_failure(result, f"the store in {data / 'db'} is read-only", "inspect")
    assert "in use" not in line


def test_store_locked_by_another_process(where: Path) -> None:
    data = where / "data"
    with Store(data / "db"):  # this process holds LevelDB's lock
        result = homeserver(cwd=where, data_dir=data, listen=f"127.0.0.1:{free_port()}")
    assert_one_line_failure(result, f"the store in {data / 'db'} is in use by another process", "inspect")


def test_corrupt_store_points_to_repair(where: Path) -> None:
    data = where / "data"
    empty_store(data)
    (data / "db" / "CURRENT").write_text("MANIFEST-999999\n")
    result = homeserver(cwd=where, data_dir=data, listen=f"127.0.0.1:{free_port()}")
    assert_one_line_failure(result, "corrupted", f"python -m homeserver repair --data-dir {data}")


@pytest.mark.parametrize("content", [b"garbage\n", b"\xff\xfe\x00", b"ed25519 a1 !!notbase64!!\n"])
def test_bad_signing_key_file(where: Path, content: bytes) -> None:
    data = where / "data"
    data.mkdir()
    (data / "signing.key").write_bytes(content)
    result = homeserver(cwd=where, data_dir=data, listen=f"127.0.0.1:{free_port()}")
    assert_one_line_failure(result, str(data / "signing.key"), "restore it from a backup")


def test_the_banner_is_printed_once_the_server_listens(where: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "homeserver"],
        cwd=where,
        env={**clean_env(data_dir=where / "data", listen=f"127.0.0.1:{port}"), "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = []
        while BANNER not in "".join(seen):
            line = proc.stdout.readline()
            assert line and time.monotonic() < deadline, "the server printed no banner"
            seen.append(line)
        # the moment the token is shown, the address it names is answering
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0


# -- every command reads the server's configuration ---------------------------------------------------


def test_inspect_honours_HOMESERVER_DATA_DIR(where: Path) -> None:
    empty_store(where / "srv")
    result = homeserver("inspect", "tables", cwd=where, data_dir=where / "srv")  # no ./data here
    assert result.returncode == 0, result.stderr
    assert "meta" in result.stdout


def test_inspect_honours_a_config_file_before_or_after_the_command(where: Path) -> None:
    empty_store(where / "srv")
    config = where / "homeserver.toml"
    config.write_text(f'data_dir = "{where / "srv"}"\n')
    for args in (["--config", str(config), "inspect", "verify"], ["inspect", "--config", str(config), "verify"]):
        result = homeserver(*args, cwd=where)
        assert result.returncode == 0 and result.stdout.startswith("ok:"), result.stderr
    result = homeserver("inspect", "verify", cwd=where, config=config)  # HOMESERVER_CONFIG
    assert result.returncode == 0, result.stderr


def test_an_explicit_data_dir_wins(where: Path) -> None:
    empty_store(where / "mine")
    result = homeserver("inspect", "--data-dir", str(where / "mine"), "verify", cwd=where, data_dir=where / "other")
    assert result.returncode == 0, result.stderr


def test_inspect_without_a_store_says_where_it_looked(where: Path) -> None:
    result = homeserver("inspect", "tables", cwd=where, data_dir=where / "none")
    assert_one_line_failure(result, f"no store in {where / 'none' / 'db'}")
    result = homeserver("inspect", "--data-dir", str(where / "none2"), "tables", cwd=where)
    assert_one_line_failure(result, f"no store in {where / 'none2' / 'db'}")


def test_inspect_with_a_bad_key_argument_says_so(where: Path) -> None:
    empty_store(where / "srv")
    result = homeserver("inspect", "key", "--hex", "zz", cwd=where, data_dir=where / "srv")
    assert_one_line_failure(result, "cannot read the key 'zz'")


def test_inspect_with_a_bad_configuration_names_the_key(where: Path) -> None:
    result = homeserver("inspect", "tables", cwd=where, fsync="1")
    assert "Traceback" not in result.stderr and result.returncode == 2
    assert result.stderr.splitlines() == ["error: invalid configuration:", "  fsync: expected a boolean"]


def test_repair_honours_the_configuration_and_fails_in_one_line(where: Path) -> None:
    empty_store(where / "srv")
    result = homeserver("repair", cwd=where, data_dir=where / "srv")
    assert result.returncode == 0 and result.stdout.startswith("repaired:"), result.stderr
    assert_one_line_failure(homeserver("repair", cwd=where, data_dir=where / "none"), f"no store in {where / 'none'}")
    with Store(where / "srv" / "db"):
        result = homeserver("repair", cwd=where, data_dir=where / "srv")
    assert_one_line_failure(result, "in use by another process")
