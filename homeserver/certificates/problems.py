"""The one-line messages a person reads when getting a certificate goes wrong: what happened, the
CA's own reason, and what to do. Kept apart from the ACME library so they are unit-testable."""

from __future__ import annotations

import errno
from typing import Any


class AcmeProblem(Exception):
    """Getting a certificate failed; str() is one line. `retry_after_s`: the CA asked us to wait."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def _ca_reason(error: Any) -> str:
    detail = getattr(error, "detail", None)
    if detail:
        return one_line(detail)
    return one_line(str(error)) or type(error).__name__


def challenge_failed(domain: str, error: Any, http_port: int = 80) -> AcmeProblem:
    """The CA could not fetch our http-01 answer: usually the domain does not point at this machine."""
    reasons = []
    for authz in getattr(error, "failed_authzrs", []):
        for chall in authz.body.challenges:
            if chall.error is not None:
                reasons.append(_ca_reason(chall.error))
    reason = "; ".join(reasons) or "no reason given"
    return AcmeProblem(
        f"the CA could not verify {domain}: {reason} — check that {domain} points at this machine "
        f"(DNS A/AAAA records) and that port {http_port} reaches this server"
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
        return (
            f"cannot listen on {address}:{port} ({what}): permission denied — ports below 1024 need a "
            "privilege: run `sudo setcap 'cap_net_bind_service=+ep' $(readlink -f $(which python3))`, or "
            "with systemd add `AmbientCapabilities=CAP_NET_BIND_SERVICE` to the service"
        )
    if error.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {address}:{port} ({what}): the port is in use by another program "
            f"(a web server? see `ss -ltnp 'sport = :{port}'`); stop it, or set public.http_port/public.https_port"
        )
    return f"cannot listen on {address}:{port} ({what}): {error.strerror or error}"
