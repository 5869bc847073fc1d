"""The renewal schedule, the retry backoff and the one-line messages of homeserver/certificates."""

from __future__ import annotations

import errno
import logging
import stat
import time
from pathlib import Path

import pytest
from acme import errors, messages

from homeserver.certificates import CertificateManager, port_problem, renewal_time, retry_delay
from homeserver.certificates.acme_order import _retry_after
from homeserver.certificates.problems import challenge_failed, refused, unreachable

DAY = 86400.0


def test_a_90_day_certificate_renews_at_60_days() -> None:
    assert renewal_time(0, 90 * DAY) == 60 * DAY


def test_a_long_certificate_renews_by_30_days_before_expiry() -> None:
    assert renewal_time(0, 365 * DAY) == 365 * DAY * 2 / 3  # 2/3 comes before the last month
    assert renewal_time(0, 80 * DAY) == 50 * DAY  # the last month comes before 2/3
    # five years (pebble's): 2/3 in, long before the last 30 days
    assert renewal_time(0, 5 * 365 * DAY) == 5 * 365 * DAY * 2 / 3


def test_a_short_certificate_renews_at_two_thirds() -> None:
    # Let's Encrypt's 6-day certificates: 30 days before would be before issuance
    assert renewal_time(1000, 1000 + 6 * DAY) == 1000 + 4 * DAY
    # 30 days before a 40-day certificate expires is in its first half: too early, 2/3 it is
    assert renewal_time(0, 40 * DAY) == 40 * DAY * 2 / 3


def test_retries_double_up_to_six_hours_and_honour_retry_after() -> None:
    assert [retry_delay(n) for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert retry_delay(30) == 6 * 3600
    assert retry_delay(1, retry_after_s=3600) == 3600  # the CA's rate limit wins
    assert retry_delay(5, retry_after_s=10) == 960  # never sooner than our own backoff


def test_retry_after_header_forms() -> None:
    assert _retry_after("120") == 120
    assert _retry_after(None) is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert _retry_after("soon") is None


def _failed_authz(detail: str) -> errors.ValidationError:
    chall = messages.ChallengeBody.from_json(
        {
            "type": "http-01",
            "url": "https://ca/chall/1",
            "status": "invalid",
            "token": "a" * 43,
            "error": {"type": "urn:ietf:params:acme:error:connection", "detail": detail},
        }
    )
    authz = messages.Authorization(
        identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="example.org"),
        challenges=[chall],
        status=messages.STATUS_INVALID,
    )
    return errors.ValidationError([messages.AuthorizationResource(body=authz, uri="https://ca/authz/1")])


def test_a_failed_challenge_names_the_domain_the_ca_reason_and_the_fix() -> None:
    message = str(challenge_failed("example.org", _failed_authz("Timeout during connect\n(likely firewall)"), 80))
    assert message == (
        "the CA could not verify example.org: Timeout during connect (likely firewall) — check that example.org "
        "points at this machine (DNS A/AAAA records) and that port 80 reaches this server (http-01)"
    )


def test_a_refusal_carries_the_ca_reason_and_its_wait() -> None:
    error = messages.Error.with_code("rateLimited", detail="too many certificates already issued for example.org")
    problem = refused("https://acme.example/dir", error, 7200.0)
    assert str(problem) == (
        "the CA at https://acme.example/dir refused the request: too many certificates already issued for "
        "example.org; it asks to retry in 7200s"
    )
    assert problem.retry_after_s == 7200.0


def test_an_unreachable_ca_is_one_line() -> None:
    message = str(unreachable("https://acme.example/dir", ConnectionError("Max retries exceeded\nrefused")))
    assert "\n" not in message and message.startswith("cannot reach the CA at https://acme.example/dir: ")
    assert "public.acme_directory" in message


def test_a_privileged_port_gives_the_setcap_and_systemd_hints() -> None:
    message = port_problem("https", "0.0.0.0", 443, PermissionError(errno.EACCES, "Permission denied"))
    assert message.startswith("cannot listen on 0.0.0.0:443 (https): permission denied")
    assert "setcap 'cap_net_bind_service=+ep'" in message
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in message
    assert "\n" not in message


def test_a_port_in_use_says_so() -> None:
    message = port_problem("http-01 challenges and redirect", "0.0.0.0", 80, OSError(errno.EADDRINUSE, "in use"))
    assert "in use by another program" in message and "public.http_port" in message


def test_the_domain_fills_in_the_server_name_and_discovery() -> None:
    from homeserver.config import ConfigError, load_config

    env = {"HOMESERVER_PUBLIC__DOMAIN": "Example.org", "HOMESERVER_PUBLIC__EMAIL": "admin@example.org"}
    config = load_config(environ=env)
    assert (config.server_name, config.public.domain) == ("example.org", "example.org")
    assert config.public_baseurl == "https://example.org"
    assert config.federation.well_known_server == "example.org:443"
    kept = load_config(environ={**env, "HOMESERVER_SERVER_NAME": "other.org", "HOMESERVER_PUBLIC__HTTPS_PORT": "8443"})
    assert kept.server_name == "other.org" and kept.public_baseurl == "https://example.org:8443"
    try:
        load_config(environ={"HOMESERVER_PUBLIC__DOMAIN": "example.org"})
    except ConfigError as e:
        assert "public: domain needs email" in str(e)
    else:
        raise AssertionError("a domain without an email was accepted")


def test_the_challenge_follows_port_80_and_the_setting() -> None:
    from homeserver.certificates.manager import choose_challenge

    assert choose_challenge("auto", http_port_ours=True) == "http-01"
    assert choose_challenge("auto", http_port_ours=False) == "tls-alpn-01"
    # a firewall can close port 80 that we could bind: a failed http-01 check tries tls-alpn-01 next
    assert choose_challenge("auto", True, last="http-01", last_failed=True) == "tls-alpn-01"
    assert choose_challenge("auto", True, last="tls-alpn-01", last_failed=True) == "http-01"
    assert choose_challenge("auto", True, last="tls-alpn-01", last_failed=False) == "tls-alpn-01"  # it worked
    assert choose_challenge("auto", True, last="http-01", last_failed=False) == "http-01"
    assert choose_challenge("auto", False, last="tls-alpn-01", last_failed=True) == "tls-alpn-01"
    # the operator's word wins
    assert choose_challenge("tls-alpn-01", http_port_ours=True) == "tls-alpn-01"
    assert choose_challenge("http-01", True, last="http-01", last_failed=True) == "http-01"


def test_neither_port_names_both_with_the_privilege_hint() -> None:
    from homeserver.certificates.problems import http_port_hint, no_public_ports

    denied = PermissionError(errno.EACCES, "Permission denied")
    message = no_public_ports("0.0.0.0", 80, denied, 443, denied)
    assert message.startswith("cannot listen on 0.0.0.0:443 (https, tls-alpn-01) nor on 0.0.0.0:80 (http-01): ")
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in message and "\n" not in message
    hint = http_port_hint("0.0.0.0", 80, denied)
    assert hint.startswith("; nor port 80 (http-01): permission denied") and "setcap" in hint
    assert http_port_hint("0.0.0.0", 80, None) == ""


def test_the_tls_alpn_01_certificate_carries_the_critical_acme_identifier() -> None:
    import hashlib

    from cryptography import x509

    from homeserver.certificates.tls_alpn import ACME_IDENTIFIER_OID, challenge_certificate

    key_authorization = "token-abc.thumbprint-xyz"
    cert_pem, key_pem = challenge_certificate("example.org", key_authorization)
    cert = x509.load_pem_x509_certificate(cert_pem)
    # spec: RFC 8737 §3: exactly one dNSName, the domain; the critical extension holds the DER
    # OCTET STRING of SHA-256(key authorization)
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    ) == ["example.org"]
    extension = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(ACME_IDENTIFIER_OID))
    assert extension.critical
    assert extension.value.value == b"\x04\x20" + hashlib.sha256(key_authorization.encode()).digest()
    assert b"PRIVATE KEY" in key_pem


def test_the_alpn_offer_is_read_from_a_client_hello() -> None:
    from homeserver.certificates.tls_alpn import offered_alpn

    def hello(extensions: bytes) -> bytes:
        body = b"\x03\x03" + b"\x00" * 32 + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
        body += len(extensions).to_bytes(2, "big") + extensions
        return b"\x01" + len(body).to_bytes(3, "big") + body

    names = b"\x0aacme-tls/1\x02h2"
    alpn = b"\x00\x10" + (len(names) + 2).to_bytes(2, "big") + len(names).to_bytes(2, "big") + names
    sni = b"\x00\x00\x00\x05\x00\x03abc"
    assert offered_alpn(hello(sni + alpn)) == [b"acme-tls/1", b"h2"]
    assert offered_alpn(hello(sni)) == []
    assert offered_alpn(hello(sni + alpn)[:-5]) == []  # cut short: no offer rather than an error
    assert offered_alpn(b"") == []


def _manager(data_dir: Path, challenge: str = "auto") -> CertificateManager:
    from homeserver.config import PublicConfig

    config = PublicConfig.model_validate({"domain": "example.org", "email": "a@example.org", "challenge": challenge})
    return CertificateManager(config, data_dir)


def test_the_challenge_that_worked_is_kept_across_a_restart(tmp_path: Path) -> None:
    first = _manager(tmp_path)
    first.load_challenge()
    assert first.next_challenge() == "http-01" and first.status()["challenge"] is None  # nothing kept yet
    first.remember_challenge("tls-alpn-01")  # port 80 was closed from outside; tls-alpn-01 worked
    kept = tmp_path / "certificates" / "challenge"
    assert kept.read_text() == "tls-alpn-01\n" and stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert sorted(p.name for p in kept.parent.iterdir()) == ["challenge"]  # no temporary file left
    # after a restart the first renewal goes straight to tls-alpn-01, and the admin status says so
    second = _manager(tmp_path)
    second.load_challenge()
    assert second.next_challenge() == "tls-alpn-01" and second.status()["challenge"] == "tls-alpn-01"
    # the operator's setting still wins over what was kept
    forced = _manager(tmp_path, challenge="http-01")
    forced.load_challenge()
    assert forced.next_challenge() == "http-01"
    second.remember_challenge("http-01")
    assert kept.read_text() == "http-01\n"


@pytest.mark.parametrize("content", [b"dns-01\n", b"\xff\x00garbage", b""])
def test_a_kept_challenge_that_is_not_one_is_ignored_with_a_log_line(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    kept = tmp_path / "certificates" / "challenge"
    kept.parent.mkdir()
    kept.write_bytes(content)
    manager = _manager(tmp_path)
    with caplog.at_level(logging.WARNING, logger="homeserver.certificates"):
        manager.load_challenge()
    assert manager.last_challenge is None and manager.next_challenge() == "http-01"
    (record,) = caplog.records
    assert record.getMessage().startswith(f"{kept} holds ") and "not a challenge" in record.getMessage()
    manager.remember_challenge("tls-alpn-01")  # the next order that works replaces it
    assert kept.read_text() == "tls-alpn-01\n"


def test_an_order_thread_that_outlives_the_event_loop_ends_quietly(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import threading

    from homeserver.certificates.acme_order import Abandoned
    from homeserver.certificates.manager import _in_thread, _on_loop

    uncaught: list[object] = []
    monkeypatch.setattr(threading, "excepthook", uncaught.append)
    loop = asyncio.new_event_loop()
    release, reached = threading.Event(), []

    def order() -> None:
        release.wait(10)
        try:
            _on_loop(loop, print, "never")  # e.g. publishing an answer once the server has stopped
        except Abandoned:
            reached.append("abandoned")
            raise

    outcome = _in_thread(loop, order, "acme-order-test")
    loop.close()  # the server stopped while the order waited on the CA
    release.set()
    (thread,) = [t for t in threading.enumerate() if t.name == "acme-order-test"]
    thread.join(10)
    assert not thread.is_alive() and thread.daemon
    assert reached == ["abandoned"] and uncaught == []  # no "Event loop is closed" traceback
    assert not outcome.done()


async def test_an_unexpected_error_in_an_order_is_a_failure_retried_not_the_end_of_renewals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    manager = _manager(tmp_path)
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("handing the answer to the loop timed out")

    monkeypatch.setattr(manager, "renew", broken)
    with caplog.at_level(logging.ERROR, logger="homeserver.certificates.manager"):
        assert await manager.attempt() is False
        assert await manager.attempt() is False
    assert calls == 2 and manager.failures == 2
    assert manager.last_error is not None and "RuntimeError" in manager.last_error and "\n" not in manager.last_error
    assert manager.next_attempt is not None and manager.next_attempt > time.time()
    assert "Traceback" in caplog.text  # logged whole, for the bug report
