"""The certificate of `public.domain`, kept valid while the server runs.

- At start: a stored certificate for the domain that is not yet due is used as it is (no new
  order); otherwise one is ordered (homeserver/certificates/acme_order.py, in an executor).
- Renewal at 2/3 of the certificate's lifetime, or 30 days before expiry if that is sooner and
  past half the lifetime (Let's Encrypt's advice for 90-day certificates: renew at 60 days; its
  6-day certificates renew at 4 days).
- A failed order is retried with doubling delays (1 min up to 6 h), never sooner than the CA's
  Retry-After; meanwhile the old certificate keeps being served, the log says so at ERROR and
  `status()` (the admin endpoint) shows the error and the next attempt.
- The new certificate is loaded into the same `ssl.SSLContext`: new connections get it, no restart.
- The challenge (`choose_challenge`): http-01 on `http_port` while that port is ours, else
  tls-alpn-01 answered on the TLS listeners themselves (homeserver/certificates/tls_alpn.py);
  `public.challenge` can force one. The challenge that worked last is kept in the data directory:
  after a restart, renewals under auto start with it (port 80 firewalled from outside: tls-alpn-01
  at once, not after a failed http-01 check).

Files in `<data_dir>/certificates/` (0600): account.key, <domain>.key, <domain>.crt, challenge.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from homeserver.certificates.problems import AcmeProblem, http_port_hint, one_line
from homeserver.certificates.tls_alpn import TlsAlpnResponder
from homeserver.config import PublicConfig

log = logging.getLogger("homeserver.certificates")

RENEW_BEFORE_S = 30 * 86400
FIRST_RETRY_S = 60.0
MAX_RETRY_S = 6 * 3600.0
ABANDON_WAIT_S = 5.0  # how long a stopping server waits for an order's thread to give up

T = TypeVar("T")


def renewal_time(not_before: float, not_after: float) -> float:
    """When to renew: at 2/3 of the lifetime, or 30 days before expiry if that comes first and is
    still in the second half of the lifetime (short certificates: 2/3 alone)."""
    lifetime = not_after - not_before
    two_thirds = not_before + lifetime * 2 / 3
    month_before = not_after - RENEW_BEFORE_S
    return min(two_thirds, month_before) if month_before >= not_before + lifetime / 2 else two_thirds


def retry_delay(failures: int, retry_after_s: float | None = None) -> float:
    """Seconds before the next attempt after `failures` failures in a row (at least 1)."""
    delay = min(FIRST_RETRY_S * 2.0 ** max(0, failures - 1), MAX_RETRY_S)
    return max(delay, retry_after_s or 0.0)


def choose_challenge(setting: str, http_port_ours: bool, last: str | None = None, last_failed: bool = False) -> str:
    """The challenge of the next order. `setting` is public.challenge; `last`/`last_failed`: the
    previous attempt's challenge and whether the CA's check of it failed. Under auto a failed check
    tries the other one next (a firewall may close port 80 even though we could bind it), and one
    that worked is kept."""
    if setting != "auto":
        return setting
    if not http_port_ours:
        return "tls-alpn-01"
    if last is None:
        return "http-01"
    if last_failed:
        return "tls-alpn-01" if last == "http-01" else "http-01"
    return last


CHALLENGES = ("http-01", "tls-alpn-01")


def read_challenge(path: Path) -> str | None:
    """The challenge kept in `path` by `CertificateManager.remember_challenge`; None when there is
    none, or when what is there is not a challenge (logged; the next order that works replaces it)."""
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("cannot read %s (%s): ignoring it", path, e.strerror or e)
        return None
    value = text.strip().decode("ascii", "replace")
    if value not in CHALLENGES:
        log.warning("%s holds %r, not a challenge (%s): ignoring it", path, value[:40], " or ".join(CHALLENGES))
        return None
    return value


def _on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: Any) -> None:
    """Run `fn(*args)` on the event loop from another thread and wait until it has run. Raises
    Abandoned when the loop has closed (the server stopped)."""
    from homeserver.certificates.acme_order import Abandoned

    done: concurrent.futures.Future[object] = concurrent.futures.Future()

    def run() -> None:
        try:
            done.set_result(fn(*args))
        except Exception as e:
            done.set_exception(e)

    if not _to_loop(loop, run):
        raise Abandoned
    done.result(timeout=30)


def _to_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: Any) -> bool:
    """Schedule `fn(*args)` on the event loop from another thread; False when the loop has closed."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # "Event loop is closed": the server stopped, nothing left to tell
        return False
    return True


def _in_thread(loop: asyncio.AbstractEventLoop, fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """`fn()` in a thread of its own, its outcome in the returned future. A daemon thread, unlike
    the default executor's: a stopping server waits for it (bounded, `close`), the interpreter
    does not (an order stuck on the CA's Retry-After or a 45 s request must not hold the exit)."""
    outcome: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if outcome.done():
            return
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(result)  # type: ignore[arg-type]  # None only with an error

    def run() -> None:
        try:
            result = fn()
        except BaseException as e:
            _to_loop(loop, settle, None, e)
        else:
            _to_loop(loop, settle, result, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return outcome


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _validity(cert_pem: bytes) -> tuple[float, float, str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(cert_pem)
    return cert.not_valid_before_utc.timestamp(), cert.not_valid_after_utc.timestamp(), format(cert.serial_number, "x")


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


class CertificateManager:
    def __init__(self, config: PublicConfig, data_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        assert config.domain is not None and config.email is not None
        self.config = config
        self.domain: str = config.domain
        self.email: str = config.email
        self.clock = clock
        self.dir = data_dir / "certificates"
        self.challenges: dict[str, str] = {}  # http-01 token -> key authorization
        # the TLS listeners hold this context from the start; certificates are loaded into it
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.tls_alpn = TlsAlpnResponder(self.context)
        self.http_port_error: OSError | None = None  # why http_port is not ours (set by the listener)
        self.last_challenge: str | None = None  # the challenge of the last order (before a restart: that worked)
        self._last_challenge_failed = False
        self.orders = 0  # orders this process completed
        self.failures = 0
        self.last_error: str | None = None
        self.next_attempt: float | None = None
        self.not_before: float | None = None
        self.not_after: float | None = None
        self.serial: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._order: asyncio.Future[Any] | None = None  # the order's thread, while one runs
        self._stopping = threading.Event()  # read by the order's thread
        self._wake = asyncio.Event()

    @property
    def cert_path(self) -> Path:
        return self.dir / f"{self.domain}.crt"

    @property
    def key_path(self) -> Path:
        return self.dir / f"{self.domain}.key"

    def _make_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    @property
    def challenge_path(self) -> Path:
        return self.dir / "challenge"

    def next_challenge(self) -> str:
        return choose_challenge(
            self.config.challenge, self.http_port_error is None, self.last_challenge, self._last_challenge_failed
        )

    def load_challenge(self) -> None:
        """The challenge that worked before the restart, as if this run's last order had used it."""
        self.last_challenge = read_challenge(self.challenge_path)
        self._last_challenge_failed = False

    def remember_challenge(self, challenge: str) -> None:
        """Keep the challenge that just worked for the renewals after a restart."""
        if read_challenge(self.challenge_path) != challenge:
            self._make_dir()
            _write_private(self.challenge_path, challenge.encode() + b"\n")

    def load_stored(self) -> bool:
        """Use the certificate kept from an earlier run, if there is one for the domain."""
        try:
            cert_pem = self.cert_path.read_bytes()
            self.key_path.stat()
            self._install(cert_pem)
        except (OSError, ValueError, ssl.SSLError) as e:
            if self.cert_path.exists():
                log.warning("the stored certificate %s cannot be used (%s): ordering a new one", self.cert_path, e)
            return False
        return True

    def _install(self, cert_pem: bytes) -> None:
        not_before, not_after, serial = _validity(cert_pem)
        # in place: connections from now on get the new certificate, open ones keep theirs
        self.context.load_cert_chain(str(self.cert_path), str(self.key_path))
        self.not_before, self.not_after, self.serial = not_before, not_after, serial

    def due(self) -> bool:
        if self.not_before is None or self.not_after is None:
            return True
        return self.clock() >= renewal_time(self.not_before, self.not_after)

    async def renew(self) -> None:
        """Order a certificate now and install it. Raises AcmeProblem; the old one stays in use."""
        from homeserver.certificates import acme_order

        loop = asyncio.get_running_loop()
        challenge = self.next_challenge()
        self.last_challenge = challenge
        https = challenge == "tls-alpn-01"
        hint = http_port_hint(self.config.bind, self.config.http_port, self.http_port_error) if https else ""

        def publish(token: str, key_authorization: str) -> None:
            # (in the order's thread) the answer is live on the loop before the CA is told to look
            if not https:
                return _on_loop(loop, self.challenges.__setitem__, token, key_authorization)
            from homeserver.certificates import tls_alpn

            cert_pem, key_pem = tls_alpn.challenge_certificate(self.domain, key_authorization)
            _on_loop(loop, self.tls_alpn.publish, self.domain, tls_alpn.challenge_context(cert_pem, key_pem, self.dir))

        def withdraw(token: str) -> None:
            if self._stopping.is_set():
                return  # `close` withdraws everything on the loop itself
            if https:
                _to_loop(loop, self.tls_alpn.withdraw, self.domain)
            else:
                _to_loop(loop, self.challenges.pop, token, None)

        def order() -> acme_order.OrderResult:
            self._make_dir()
            account = self.dir / "account.key"
            if not account.exists():
                _write_private(account, acme_order.new_account_key_pem())
            domain_key = self.key_path.read_bytes() if self.key_path.exists() else acme_order.new_domain_key_pem()
            bundle = acme_order.ca_bundle(list(self.config.acme_ca_files))
            verify: str | bool = True
            if bundle is not None:
                verify = str(self.dir / "acme-ca-bundle.pem")
                _write_private(Path(verify), bundle)
            return acme_order.obtain(
                directory_url=self.config.acme_directory,
                email=self.email,
                domain=self.domain,
                challenge=challenge,
                port=self.config.https_port if https else self.config.http_port,
                port_hint=hint,
                account_key_pem=account.read_bytes(),
                domain_key_pem=domain_key,
                verify=verify,
                publish=publish,
                withdraw=withdraw,
                abandoned=self._stopping,
            )

        self._order = _in_thread(loop, order, f"acme-order-{self.domain}")
        try:
            # shielded: a stopping server cancels this task, and `close` then waits for the thread
            result = await asyncio.shield(self._order)
        except OSError as e:  # the data directory
            raise AcmeProblem(f"cannot keep certificates in {self.dir}: {e.strerror or e}") from None
        finally:
            if self._order.done():
                self._order = None
        # no await from here on: a stop cannot come between the two files. The key first: it changes
        # only on the first order, and a key without its certificate is simply ordered for again.
        if not self.key_path.exists() or self.key_path.read_bytes() != result.key_pem:
            _write_private(self.key_path, result.key_pem)
        _write_private(self.cert_path, result.fullchain_pem)
        self._install(result.fullchain_pem)
        self.orders += 1
        try:
            self.remember_challenge(challenge)
        except OSError as e:  # the certificate is installed: only the next restart's first guess suffers
            log.warning("cannot keep the challenge in %s: %s", self.challenge_path, e.strerror or e)
        what = f"{self.domain} obtained through {challenge} (serial {self.serial})"
        log.info("certificate for %s, valid until %s", what, _iso(self.not_after))

    async def attempt(self) -> bool:
        """One renewal attempt: True when a certificate was installed; a failure is recorded."""
        try:
            try:
                await self.renew()
            except AcmeProblem:
                raise
            except Exception as e:
                # not one of the CA's answers (a bug, a timeout handing the answer to the loop): logged
                # whole, then retried like a refusal; renewals never end on it
                log.exception("certificate for %s: the order failed unexpectedly", self.domain)
                raise AcmeProblem(f"the order failed unexpectedly: {type(e).__name__}: {e}") from None
        except AcmeProblem as e:
            self._last_challenge_failed = e.challenge_failed
            self.failures += 1
            self.last_error = one_line(str(e))
            delay = retry_delay(self.failures, e.retry_after_s)
            self.next_attempt = self.clock() + delay
            keeping = f"; still serving the certificate valid until {_iso(self.not_after)}" if self.not_after else ""
            log.error("certificate for %s: %s (retrying in %ds%s)", self.domain, self.last_error, delay, keeping)
            return False
        self._last_challenge_failed = False
        self.failures = 0
        self.last_error = None
        self.next_attempt = None
        return True

    def start(self) -> None:
        """Use the stored certificate or order one, then keep it renewed, in the background."""
        self.load_challenge()
        if self.load_stored():
            log.info("certificate for %s from %s, valid until %s", self.domain, self.cert_path, _iso(self.not_after))
        self._task = asyncio.get_running_loop().create_task(self._run())

    def check_now(self) -> None:
        """Wake the background loop to look at the certificate now (tests, an admin)."""
        self.next_attempt = None
        self._wake.set()

    async def _run(self) -> None:
        while True:
            if self.due() and (self.next_attempt is None or self.clock() >= self.next_attempt):
                await self.attempt()
            self._wake.clear()
            wait = self._seconds_to_next()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    def _seconds_to_next(self) -> float:
        now = self.clock()
        if self.next_attempt is not None:
            return max(1.0, self.next_attempt - now)
        assert self.not_before is not None and self.not_after is not None
        # wake at least hourly: a clock that jumped (suspend) is noticed
        return min(3600.0, max(1.0, renewal_time(self.not_before, self.not_after) - now))

    async def close(self) -> None:
        """Stop renewing. An order under way is abandoned: its thread gives up at the CA's next
        answer (waited for at most ABANDON_WAIT_S), its challenge answers are withdrawn, and
        nothing of it is written."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        order, self._order = self._order, None
        if order is not None:
            try:
                await asyncio.wait_for(asyncio.shield(order), ABANDON_WAIT_S)
            except TimeoutError:
                log.warning(
                    "the certificate order for %s did not stop within %ds: left behind", self.domain, ABANDON_WAIT_S
                )
            except Exception as e:  # Abandoned, or however the order ended meanwhile: dropped all the same
                log.debug("the certificate order for %s was abandoned (%s)", self.domain, type(e).__name__)
        self.challenges.clear()
        self.tls_alpn.withdraw(self.domain)

    def status(self) -> dict[str, Any]:
        """What an admin sees: the certificate in use, when it renews, and the last failure."""
        renews = None
        if self.not_before is not None and self.not_after is not None:
            renews = renewal_time(self.not_before, self.not_after)
        return {
            "domain": self.domain,
            "acme_directory": self.config.acme_directory,
            "state": "failing" if self.last_error is not None else "ok" if self.serial is not None else "pending",
            "serial": self.serial,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "renews_at": _iso(renews),
            "last_error": self.last_error,
            "failures": self.failures,
            "next_attempt": _iso(self.next_attempt),
            "orders_this_run": self.orders,
            "challenge": self.last_challenge,
        }
