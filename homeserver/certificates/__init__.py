"""Certificates from an ACME CA (Let's Encrypt) for `public.domain`: obtained at start, kept in
the data directory, renewed in the background, swapped into the live TLS context."""

from homeserver.certificates.manager import CertificateManager, renewal_time, retry_delay
from homeserver.certificates.problems import AcmeProblem, no_public_ports, port_problem

__all__ = ["AcmeProblem", "CertificateManager", "no_public_ports", "port_problem", "renewal_time", "retry_delay"]
