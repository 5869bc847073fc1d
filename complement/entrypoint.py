"""Start the homeserver the way Complement runs a homeserver image.

Complement (https://github.com/matrix-org/complement) starts the image with `SERVER_NAME` set (the
server's name, which its other containers reach it by), mounts its CA certificate and key at
`/complement/ca/ca.crt` and `/complement/ca/ca.key`, expects the client-server API on port 8008 and
federation over TLS on port 8448 with a certificate for `SERVER_NAME` signed by that CA, open
registration, and shared-secret registration with the secret `complement`.

This script makes that certificate, writes the settings into the environment and execs
`python -m homeserver`. The ports and the CA folder can be moved with `COMPLEMENT_CLIENT_PORT`,
`COMPLEMENT_FEDERATION_PORT` and `COMPLEMENT_CA_DIR` (the tests run it outside a container).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def issue_certificate(server_name: str, ca_dir: Path, out_dir: Path) -> tuple[Path, Path]:
    """A certificate for the host part of `server_name`, signed by Complement's CA."""
    ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    host = server_name.rsplit(":", 1)[0] if not server_name.startswith("[") else server_name[1 : server_name.index("]")]
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / "server.crt", out_dir / "server.key"
    cert_path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def complement_environment(environ: dict[str, str]) -> dict[str, str]:
    """The environment `python -m homeserver` runs with under Complement."""
    server_name = environ["SERVER_NAME"]
    ca_dir = Path(environ.get("COMPLEMENT_CA_DIR", "/complement/ca"))
    data_dir = Path(environ.get("HOMESERVER_DATA_DIR", "/data"))
    client_port = environ.get("COMPLEMENT_CLIENT_PORT", "8008")
    federation_port = environ.get("COMPLEMENT_FEDERATION_PORT", "8448")
    cert, key = issue_certificate(server_name, ca_dir, data_dir / "tls")
    env = {k: v for k, v in environ.items() if not k.startswith("HOMESERVER_")}
    env.update(
        {
            "HOMESERVER_SERVER_NAME": server_name,
            "HOMESERVER_DATA_DIR": str(data_dir),
            "HOMESERVER_LISTEN": f"0.0.0.0:{client_port}",
            "HOMESERVER_REGISTRATION": "open",
            "HOMESERVER_REGISTRATION_SHARED_SECRET": "complement",
            "HOMESERVER_PASSWORD_HASH_COST": "low",
            "HOMESERVER_RATE_LIMITS__ENABLED": "false",
            "HOMESERVER_FEDERATION__LISTEN": f"0.0.0.0:{federation_port}",
            "HOMESERVER_FEDERATION__TLS_CERTIFICATE": str(cert),
            "HOMESERVER_FEDERATION__TLS_PRIVATE_KEY": str(key),
            "HOMESERVER_FEDERATION__CA_FILES": f'["{ca_dir / "ca.crt"}"]',
            # Complement's containers talk over a private Docker network
            "HOMESERVER_FEDERATION__IP_RANGE_ALLOW": '["0.0.0.0/0", "::/0"]',
            "HOMESERVER_LOG_LEVEL": environ.get("HOMESERVER_LOG_LEVEL", "INFO"),
        }
    )
    return env


def main() -> None:
    env = complement_environment(dict(os.environ))
    os.execve(sys.executable, [sys.executable, "-m", "homeserver"], env)


if __name__ == "__main__":
    main()
