"""The renewal schedule, the retry backoff and the one-line messages of homeserver/certificates."""

from __future__ import annotations

import errno

from acme import errors, messages

from homeserver.certificates import port_problem, renewal_time, retry_delay
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
