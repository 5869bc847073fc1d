"""One ACME order, start to finish, with certbot's `acme` library (RFC 8555): the account (created
once, its key kept), a new order for the domain, its http-01 or tls-alpn-01 challenge answered
through `publish`, and the certificate chain. Synchronous (the library uses `requests`): the
manager runs it in a thread of its own, never on the event loop, and sets `abandoned` to stop it
at the CA's next answer when the server stops. Imported only when `public.domain` is set."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from josepy.jwk import JWKRSA

from homeserver.certificates.problems import AcmeProblem, challenge_failed, refused, unreachable


@challenges.ChallengeResponse.register
class TLSALPN01Response(challenges.KeyAuthorizationChallengeResponse):
    """The answer posted to the CA: an empty object, like http-01's (RFC 8555 §7.5.1)."""

    typ = "tls-alpn-01"


@challenges.Challenge.register
class TLSALPN01(challenges.KeyAuthorizationChallenge):
    """RFC 8737, which `acme` no longer declares (removed in 5.0); `validation` is the key
    authorization, from which homeserver/certificates/tls_alpn.py builds the certificate."""

    response_cls = TLSALPN01Response
    typ = response_cls.typ

    def validation(self, account_key: Any, **unused_kwargs: Any) -> str:
        return self.key_authorization(account_key)


CHALLENGE_TYPES: dict[str, type[challenges.KeyAuthorizationChallenge]] = {
    "http-01": challenges.HTTP01,
    "tls-alpn-01": TLSALPN01,
}

USER_AGENT = "homeserver (acme-python)"
ORDER_DEADLINE_S = 90


class Abandoned(Exception):
    """The server is stopping: the order is given up where it stands (raised in the order's thread)."""


@dataclass
class OrderResult:
    fullchain_pem: bytes
    key_pem: bytes
    retry_after_s: float | None = None


@dataclass
class RetryAfter:
    """The CA's Retry-After of its last error answer (rate limits), in seconds."""

    seconds: float | None = None
    hooks: list[Any] = field(default_factory=list)


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def new_account_key_pem() -> bytes:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


def new_domain_key_pem() -> bytes:
    return _pem(ec.generate_private_key(ec.SECP256R1()))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        from email.utils import parsedate_to_datetime

        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.datetime.now(datetime.UTC)).total_seconds())


def obtain(
    *,
    directory_url: str,
    email: str,
    domain: str,
    challenge: str,
    port: int,
    account_key_pem: bytes,
    domain_key_pem: bytes,
    verify: str | bool,
    publish: Callable[[str, str], object],
    withdraw: Callable[[str], object],
    port_hint: str = "",
    abandoned: threading.Event | None = None,
) -> OrderResult:
    """A certificate for `domain`, proven by `challenge` ("http-01", "tls-alpn-01"): `publish(token,
    key authorization)` before the CA is told to look, `withdraw(token)` after. `port`: where the
    CA looks, for the message when it fails. Raises AcmeProblem (one line, with the CA's reason),
    or Abandoned at the CA's next answer once `abandoned` is set."""
    kind = CHALLENGE_TYPES[challenge]
    retry = RetryAfter()
    stop = abandoned or threading.Event()

    def note_retry_after(response: Any, *args: Any, **kwargs: Any) -> None:
        # every answer of the CA passes here, polls included: the place to give up between two
        if stop.is_set():
            raise Abandoned
        if response.status_code >= 400:
            retry.seconds = _retry_after(response.headers.get("Retry-After"))

    account_key = serialization.load_pem_private_key(account_key_pem, password=None)
    jwk = JWKRSA(key=account_key)
    net = client.ClientNetwork(jwk, user_agent=USER_AGENT)
    net.verify_ssl = verify  # type: ignore[assignment]  # requests takes a CA bundle path here too
    net.session.hooks["response"].append(note_retry_after)
    try:
        try:
            directory = client.ClientV2.get_directory(directory_url, net)
        except (errors.Error, messages.Error) as e:
            raise refused(directory_url, e, retry.seconds) from None
        except OSError as e:  # requests' ConnectionError, SSLError... are OSErrors
            raise unreachable(directory_url, e) from None
        acme = client.ClientV2(directory, net=net)
        _account(acme, email)
        tokens: list[str] = []
        try:
            order = acme.new_order(crypto_util.make_csr(domain_key_pem, [domain]))
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # authorized recently (the CA reuses it)
                chall = next((c for c in authz.body.challenges if isinstance(c.chall, kind)), None)
                if chall is None:
                    raise AcmeProblem(f"the CA at {directory_url} offers no {challenge} challenge for {domain}")
                response, validation = chall.chall.response_and_validation(jwk)
                token = chall.chall.encode("token")
                if stop.is_set():
                    raise Abandoned
                publish(token, validation)
                tokens.append(token)
                acme.answer_challenge(chall, response)
            deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_DEADLINE_S)
            order = acme.poll_and_finalize(order, deadline)
        except errors.ValidationError as e:
            raise challenge_failed(domain, e, port, challenge, port_hint) from None
        except errors.TimeoutError:
            raise AcmeProblem(f"the CA did not finish the order for {domain} within {ORDER_DEADLINE_S}s") from None
        except (errors.Error, messages.Error) as e:
            raise refused(directory_url, e, retry.seconds) from None
        except OSError as e:
            raise unreachable(directory_url, e) from None
        finally:
            for token in tokens:
                withdraw(token)
        return OrderResult(order.fullchain_pem.encode(), domain_key_pem)
    finally:
        net.session.close()


def _account(acme: client.ClientV2, email: str) -> None:
    """Our account at the CA: created with the first order, found again by its key afterwards."""
    registration = messages.NewRegistration.from_data(email=email, terms_of_service_agreed=True)
    try:
        acme.new_account(registration)
    except errors.ConflictError as e:  # the key already has an account: use it
        acme.net.account = messages.RegistrationResource(uri=e.location, body=messages.Registration())


def ca_bundle(extra: list[Path]) -> bytes | None:
    """requests' CA bundle with `extra` appended; None (requests' own) when there is nothing to add."""
    if not extra:
        return None
    import certifi

    parts = [Path(certifi.where()).read_text()] + [p.read_text() for p in extra]
    return "\n".join(parts).encode()
