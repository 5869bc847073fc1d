"""Certificates from a real ACME CA: pebble (Let's Encrypt's test CA) on loopback, its challenge
ports pointed at the server's public ports. The server (in-process) obtains a certificate for
`localhost`, serves the client API and federation over TLS with it (checked by an HTTPS client
trusting only pebble's root), renews it when its clock says expiry is near, keeps it across a
restart without a new order, and reports a failed challenge in one line without stopping. Without
port 80 (taken by another program, or closed from outside) it proves the domain with tls-alpn-01 on
its TLS port instead."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from homeserver.config import Config
from homeserver.server import HomeServer, listen
from tests.acme.pebble import PEBBLE, Pebble, start_pebble
from tests.interop.server import REPO_ROOT, free_port

pytestmark = pytest.mark.skipif(shutil.which("pebble") is None and not Path(PEBBLE).exists(), reason="no pebble")

DEADLINE_S = 30.0
SHUTDOWN_DEADLINE_S = 10.0


class Ports:
    def __init__(self) -> None:
        self.http, self.https, self.federation = free_port(), free_port(), free_port()


@pytest.fixture
def ports() -> Ports:
    return Ports()


@pytest.fixture
def pebble(tmp_path: Path, ports: Ports) -> Iterator[Pebble]:
    p = start_pebble(tmp_path / "pebble", http_port=ports.http, https_port=ports.https)
    yield p
    p.stop()


def config(data_dir: Path, pebble: Pebble, ports: Ports, **public: Any) -> Config:
    return Config.model_validate(
        {
            "server_name": "localhost",
            "listen": f"127.0.0.1:{free_port()}",
            "data_dir": str(data_dir),
            "password_hash_cost": "low",
            "public": {
                "domain": "localhost",
                "email": "admin@example.org",
                "acme_directory": pebble.directory,
                "acme_ca_files": [str(pebble.ca_file)],
                "http_port": ports.http,
                "https_port": ports.https,
                "federation_port": ports.federation,
                "bind": "127.0.0.1",
                **public,
            },
        }
    )


class Running:
    def __init__(self, hs: HomeServer, runner: Any) -> None:
        self.hs, self.runner = hs, runner

    @property
    def certificates(self) -> Any:
        assert self.hs.certificates is not None
        return self.hs.certificates


async def start(cfg: Config) -> Running:
    hs = HomeServer(cfg)
    runner = await listen(hs)
    return Running(hs, runner)


@pytest.fixture
async def servers() -> AsyncIterator[list[Running]]:
    started: list[Running] = []
    yield started
    for r in started:
        await r.runner.cleanup()


async def until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def trusting(pebble: Pebble, tmp_path: Path) -> ssl.SSLContext:
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    return ssl.create_default_context(cafile=str(root))


def peer_certificate(port: int, context: ssl.SSLContext) -> x509.Certificate:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def get_json(url: str, context: ssl.SSLContext) -> Any:
    with urllib.request.urlopen(url, context=context, timeout=10) as r:
        return json.loads(r.read())


async def off_loop(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def test_obtains_serves_renews_and_keeps_across_restart(
    tmp_path: Path, pebble: Pebble, ports: Ports, servers: list[Running]
) -> None:
    data = tmp_path / "data"
    first = await start(config(data, pebble, ports))
    servers.append(first)
    await until(lambda: first.certificates.serial is not None, "the first certificate")
    assert first.certificates.orders == 1

    tls = trusting(pebble, tmp_path)
    cert = await off_loop(peer_certificate, ports.https, tls)
    assert format(cert.serial_number, "x") == first.certificates.serial
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    # the client API and federation over TLS, verified against pebble's root only
    versions = await off_loop(get_json, f"https://localhost:{ports.https}/_matrix/client/versions", tls)
    assert "versions" in versions
    fed = await off_loop(get_json, f"https://localhost:{ports.federation}/_matrix/federation/v1/version", tls)
    assert "server" in fed
    # discovery filled in from the domain
    server = await off_loop(get_json, f"https://localhost:{ports.https}/.well-known/matrix/server", tls)
    assert server == {"m.server": f"localhost:{ports.https}"}
    client = await off_loop(get_json, f"https://localhost:{ports.https}/.well-known/matrix/client", tls)
    assert client["m.homeserver"]["base_url"] == f"https://localhost:{ports.https}"
    # plain http redirects to https (same path)
    redirect = await off_loop(_no_follow, f"http://127.0.0.1:{ports.http}/_matrix/client/versions?x=1")
    assert redirect == (308, f"https://localhost:{ports.https}/_matrix/client/versions?x=1")
    # kept private
    for name in ("account.key", "localhost.key", "localhost.crt", "challenge"):
        assert stat.S_IMODE((data / "certificates" / name).stat().st_mode) == 0o600

    # told that expiry is near: it renews in the background, and new connections get the new one
    old_serial = first.certificates.serial
    assert first.certificates.not_after is not None
    near = first.certificates.not_after - 86400
    first.certificates.clock = lambda: near
    first.certificates.check_now()
    await until(lambda: first.certificates.serial != old_serial, "the renewed certificate")
    assert first.certificates.orders == 2
    renewed = await off_loop(peer_certificate, ports.https, tls)
    assert format(renewed.serial_number, "x") == first.certificates.serial
    status = first.certificates.status()
    assert status["state"] == "ok" and status["last_error"] is None
    assert status["challenge"] == "http-01"  # port 80 is ours

    # restart on the same data: the stored certificate is served, no new order
    serial = first.certificates.serial
    await first.runner.cleanup()
    servers.remove(first)
    second = await start(config(data, pebble, ports))
    servers.append(second)
    assert second.certificates.serial == serial
    again = await off_loop(peer_certificate, ports.https, tls)
    assert format(again.serial_number, "x") == serial
    await asyncio.sleep(0.3)  # the background loop has looked and found nothing due
    assert second.certificates.orders == 0
    # the challenge that worked is remembered: the admin status still names it
    assert second.certificates.status()["challenge"] == "http-01"


def _no_follow(url: str) -> tuple[int, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(url, timeout=10)
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Location"]
    raise AssertionError("no redirect")


async def test_failed_challenge_is_one_line_and_the_server_keeps_running(
    tmp_path: Path, ports: Ports, servers: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    # pebble checks the challenge on a port where nothing answers: as if the domain pointed elsewhere
    pebble = start_pebble(tmp_path / "pebble", http_port=free_port(), https_port=ports.https)
    try:
        caplog.set_level(logging.ERROR, logger="homeserver.certificates")
        running = await start(config(tmp_path / "data", pebble, ports))
        servers.append(running)
        await until(lambda: running.certificates.last_error is not None, "the failure")
        error = running.certificates.last_error
        assert "\n" not in error
        assert error.startswith("the CA could not verify localhost: ")
        assert "connection refused" in error.lower()  # the CA's reason
        assert "points at this machine" in error
        records = [r for r in caplog.records if r.name == "homeserver.certificates"]
        assert records and records[0].exc_info is None and "\n" not in records[0].getMessage()
        status = running.certificates.status()
        assert status["state"] == "failing" and status["next_attempt"] is not None
        # still serving the client API on its plain listener
        port = running.hs.config.listen_port
        versions = await off_loop(get_json, f"http://127.0.0.1:{port}/_matrix/client/versions", None)
        assert "versions" in versions
        # port 80 closed from outside (a firewall): the next attempt tries tls-alpn-01 on the TLS port
        assert status["challenge"] == "http-01"
        running.certificates.check_now()
        await until(lambda: running.certificates.serial is not None, "the certificate through tls-alpn-01")
        status = running.certificates.status()
        assert status["challenge"] == "tls-alpn-01" and status["state"] == "ok"
    finally:
        pebble.stop()


def taken(port: int) -> socket.socket:
    """A port some other program listens on."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


async def start_refused(tmp_path: Path, ports: Ports, **public: Any) -> str:
    """The StartupError of a server whose public ports are (partly) taken."""
    from homeserver.server import StartupError

    public = {"domain": "localhost", "email": "a@example.org", "http_port": ports.http, **public}
    public.update(https_port=ports.https, federation_port=0, bind="127.0.0.1")
    cfg = {"listen": f"127.0.0.1:{free_port()}", "data_dir": str(tmp_path / "data"), "public": public}
    hs = HomeServer(Config.model_validate(cfg))
    with pytest.raises(StartupError) as e:
        await listen(hs)
    hs.close()
    return str(e.value)


async def test_port_in_use_is_one_line(tmp_path: Path, ports: Ports) -> None:
    with taken(ports.http):
        message = await start_refused(tmp_path, ports, challenge="http-01")
    assert message.startswith(f"cannot listen on 127.0.0.1:{ports.http} (http-01 challenges and redirect)")
    assert "in use" in message and "\n" not in message


async def test_neither_port_is_one_line_naming_both(tmp_path: Path, ports: Ports) -> None:
    with taken(ports.http), taken(ports.https):
        message = await start_refused(tmp_path, ports)  # auto: port 80 alone would not stop it
    assert message.startswith(f"cannot listen on 127.0.0.1:{ports.https} (https, tls-alpn-01): the port is in use")
    assert f"; nor port {ports.http} (http-01): another program listens on 127.0.0.1:{ports.http}" in message
    assert "\n" not in message


async def test_without_port_80_the_certificate_comes_through_tls_alpn_01(
    tmp_path: Path, pebble: Pebble, ports: Ports, servers: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="homeserver.certificates")
    with taken(ports.http):
        running = await start(config(tmp_path / "data", pebble, ports))
        servers.append(running)
        certificates = running.certificates
        await until(lambda: certificates.serial is not None or certificates.last_error, "the first certificate")
        assert certificates.last_error is None
    status = certificates.status()
    assert status["challenge"] == "tls-alpn-01" and status["state"] == "ok"
    assert not certificates.tls_alpn.pending and certificates.context.sni_callback is None  # cleaned up
    # one line said why, before the order
    lines = [r.getMessage() for r in caplog.records if r.name == "homeserver.certificates"]
    assert lines[0] == (
        f"port {ports.http} is not ours (Address already in use): no redirect to https there; "
        f"certificates through tls-alpn-01 on port {ports.https}"
    )
    assert any("obtained through tls-alpn-01" in line for line in lines)
    tls = trusting(pebble, tmp_path)
    cert = await off_loop(peer_certificate, ports.https, tls)
    assert format(cert.serial_number, "x") == certificates.serial
    versions = await off_loop(get_json, f"https://localhost:{ports.https}/_matrix/client/versions", tls)
    assert "versions" in versions


async def test_a_failed_tls_alpn_01_challenge_is_one_line_naming_both_ports(
    tmp_path: Path, ports: Ports, servers: list[Running]
) -> None:
    # pebble checks tls-alpn-01 on a port where nothing answers, and port 80 is not ours
    pebble = start_pebble(tmp_path / "pebble", http_port=ports.http, https_port=free_port())
    try:
        with taken(ports.http):
            running = await start(config(tmp_path / "data", pebble, ports))
            servers.append(running)
            await until(lambda: running.certificates.last_error is not None, "the failure")
        error = running.certificates.last_error
        assert error.startswith("the CA could not verify localhost: ") and "\n" not in error
        assert "failed to connect" in error.lower() and "tls-alpn-01" in error  # the CA's reason
        assert f"port {ports.https} reaches this server (tls-alpn-01); nor port {ports.http} (http-01)" in error
        status = running.certificates.status()
        assert status["state"] == "failing" and status["challenge"] == "tls-alpn-01"
        assert not running.certificates.tls_alpn.pending
        port = running.hs.config.listen_port
        versions = await off_loop(get_json, f"http://127.0.0.1:{port}/_matrix/client/versions", None)
        assert "versions" in versions
    finally:
        pebble.stop()


async def test_a_failed_renewal_keeps_serving_the_old_certificate(
    tmp_path: Path, pebble: Pebble, ports: Ports, servers: list[Running], caplog: pytest.LogCaptureFixture
) -> None:
    running = await start(config(tmp_path / "data", pebble, ports))
    servers.append(running)
    certificates = running.certificates
    await until(lambda: certificates.serial is not None, "the first certificate")
    tls = trusting(pebble, tmp_path)
    serial = certificates.serial
    pebble.stop()  # the CA is gone when renewal comes
    caplog.set_level(logging.ERROR, logger="homeserver.certificates")
    near = certificates.not_after - 86400
    certificates.clock = lambda: near
    certificates.check_now()
    await until(lambda: certificates.last_error is not None, "the failed renewal")
    assert certificates.last_error.startswith("cannot reach the CA at ")
    status = certificates.status()
    assert status["state"] == "failing" and status["serial"] == serial and status["failures"] == 1
    assert status["next_attempt"] is not None
    (record,) = [r for r in caplog.records if r.name == "homeserver.certificates"]
    assert record.levelno == logging.ERROR and "still serving the certificate valid until" in record.getMessage()
    served = await off_loop(peer_certificate, ports.https, tls)
    assert format(served.serial_number, "x") == serial


@contextlib.contextmanager
def ca_check_hangs() -> Iterator[tuple[socket.socket, int]]:
    """A port where pebble's http-01 check connects and then waits for an answer that never comes:
    the order stays pending at the CA."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock, sock.getsockname()[1]


def wait_for_the_ca_check(sock: socket.socket) -> socket.socket:
    sock.settimeout(DEADLINE_S)
    connection, _ = sock.accept()
    return connection


def test_stopping_the_server_while_an_order_waits_on_the_ca_is_clean_and_quick(tmp_path: Path, ports: Ports) -> None:
    with ca_check_hangs() as (hanging, hanging_port):
        pebble = start_pebble(tmp_path / "pebble", http_port=hanging_port, https_port=ports.https)
        data = tmp_path / "data"
        cfg = tmp_path / "homeserver.toml"
        cfg.write_text(
            f'listen = "127.0.0.1:{free_port()}"\ndata_dir = "{data}"\npassword_hash_cost = "low"\n'
            f'[public]\ndomain = "localhost"\nemail = "admin@example.org"\nacme_directory = "{pebble.directory}"\n'
            f'acme_ca_files = ["{pebble.ca_file}"]\nbind = "127.0.0.1"\nhttp_port = {ports.http}\n'
            f"https_port = {ports.https}\nfederation_port = {ports.federation}\n"
        )
        log = tmp_path / "server.log"
        try:
            with log.open("wb") as out:
                server = subprocess.Popen(
                    [sys.executable, "-m", "homeserver", "--config", str(cfg)],
                    cwd=REPO_ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                with wait_for_the_ca_check(hanging):  # the order now waits on the CA
                    server.send_signal(signal.SIGTERM)
                    stopped_at = time.monotonic()
                    server.wait(SHUTDOWN_DEADLINE_S)
                    took = time.monotonic() - stopped_at
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
        finally:
            pebble.stop()
    text = log.read_text()
    assert server.returncode == 0, text
    assert took < SHUTDOWN_DEADLINE_S
    assert "Traceback" not in text and " ERROR " not in text, text
    # the order was abandoned: no certificate, no key, nothing half-written
    assert sorted(p.name for p in (data / "certificates").iterdir()) == ["account.key", "acme-ca-bundle.pem"]


async def test_an_order_abandoned_at_shutdown_withdraws_its_answer_and_its_thread_ends(
    tmp_path: Path, ports: Ports, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="homeserver.certificates")
    with ca_check_hangs() as (hanging, hanging_port):
        pebble = start_pebble(tmp_path / "pebble", http_port=hanging_port, https_port=ports.https)
        try:
            running = await start(config(tmp_path / "data", pebble, ports))
            certificates = running.certificates
            with await off_loop(wait_for_the_ca_check, hanging):
                assert len(certificates.challenges) == 1  # the http-01 answer is up while the CA looks
                stopped_at = time.monotonic()
                await running.runner.cleanup()
                took = time.monotonic() - stopped_at
        finally:
            pebble.stop()
    assert took < SHUTDOWN_DEADLINE_S
    assert not [t for t in threading.enumerate() if t.name.startswith("acme-order-")]  # not left behind
    assert certificates.challenges == {} and not certificates.tls_alpn.pending
    assert certificates.serial is None and certificates.orders == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert "abandoned (Abandoned)" in caplog.text
    assert not (tmp_path / "data" / "certificates" / "localhost.crt").exists()
