"""The one-line messages a person reads when getting a certificate goes wrong: what happened, the
CA's own reason, and what to do. Kept apart from the ACME library so they are unit-testable."""

from __future__ import annotations

import errno
from typing import Any

PRIVILEGE_HINT = (
    "ports below 1024 need a privilege: run `sudo setcap 'cap_net_bind_service=+ep' "
    "$(readlink -f $(which python3))`, or with systemd add `AmbientCapabilities=CAP_NET_BIND_SERVICE` "
    "to the service"
)


class AcmeProblem(Exception):
    """Getting a certificate failed; str() is one line. `retry_after_s`: the CA asked us to wait."""

    def __init__(self, message: str, retry_after_s: float | None = None, *, challenge_failed: bool = False) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.challenge_failed = challenge_failed  # the CA checked our answer and it did not hold


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _ca_reason(error: Any) -> str:
    detail = getattr(error, "detail", None)
    if detail:
        return one_line(detail)
    return one_line(str(error)) or type(error).__name__


def challenge_failed(
    domain: str, error: Any, port: int = 80, challenge: str = "http-01", port_hint: str = ""
) -> AcmeProblem:
    """The CA could not check our answer (http-01 on `port`, or tls-alpn-01 on the TLS port): usually
    the domain does not point at this machine. `port_hint`: why the other challenge was not used."""
    reasons = []
    for authz in getattr(error, "failed_authzrs", []):
        for chall in authz.body.challenges:
            if chall.error is not None:
                reasons.append(_ca_reason(chall.error))
    reason = "; ".join(reasons) or "no reason given"
    return AcmeProblem(
        f"the CA could not verify {domain}: {reason} — check that {domain} points at this machine "
        f"(DNS A/AAAA records) and that port {port} reaches this server ({challenge}){port_hint}",
        challenge_failed=True,
    )


def http_port_hint(address: str, port: int, error: OSError | None) -> str:
    """The tail of a failed tls-alpn-01 message when the http-01 port could not be taken, so that
    both ports are named (with the privilege hint when that was the reason)."""
    if error is None:
        return ""
    if error.errno == errno.EACCES:
        return f"; nor port {port} (http-01): permission denied — {PRIVILEGE_HINT}"
    if error.errno == errno.EADDRINUSE:
        return f"; nor port {port} (http-01): another program listens on {address}:{port}"
    return f"; nor port {port} (http-01): {error.strerror or error}"


def no_public_ports(address: str, http_port: int, http_error: OSError, https_port: int, https_error: OSError) -> str:
    """One line when neither challenge can be answered: both ports refused."""
    if http_error.errno == https_error.errno == errno.EACCES:
        return (
            f"cannot listen on {address}:{https_port} (https, tls-alpn-01) nor on {address}:{http_port} "
            f"(http-01): permission denied — {PRIVILEGE_HINT}"
        )
    return port_problem("https, tls-alpn-01", address, https_port, https_error) + http_port_hint(
        address, http_port, http_error
    )


def refused(directory: str, error: Any, retry_after_s: float | None = None) -> AcmeProblem:
    wait = f"; it asks to retry in {int(retry_after_s)}s" if retry_after_s else ""
    return AcmeProblem(f"the CA at {directory} refused the request: {_ca_reason(error)}{wait}", retry_after_s)


def unreachable(directory: str, error: BaseException) -> AcmeProblem:
    return AcmeProblem(
        f"cannot reach the CA at {directory}: {one_line(str(error))[:300]} — check the network, "
        "public.acme_directory and public.acme_ca_files"
    )


def port_problem(what: str, address: str, port: int, error: OSError) -> str:
    """One line for a public port we cannot take."""
    if error.errno == errno.EACCES:
        return f"cannot listen on {address}:{port} ({what}): permission denied — {PRIVILEGE_HINT}"
    if error.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {address}:{port} ({what}): the port is in use by another program "
            f"(a web server? see `ss -ltnp 'sport = :{port}'`); stop it, or set public.http_port/public.https_port"
        )
    return f"cannot listen on {address}:{port} ({what}): {error.strerror or error}"
