from __future__ import annotations

import pytest

from homeserver.config import RateLimit, RateLimits
from homeserver.errors import MatrixError
from homeserver.ratelimit import RateLimiter


def test_bucket_refills_and_reports_retry_after() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimits(login=RateLimit(per_second=2, burst=3)), clock=lambda: now[0])
    for _ in range(3):
        limiter.check("login", "1.2.3.4")
    with pytest.raises(MatrixError) as e:
        limiter.check("login", "1.2.3.4")
    assert e.value.status == 429 and e.value.errcode == "M_LIMIT_EXCEEDED"
    assert 0 < e.value.extra["retry_after_ms"] <= 501  # half a second at 2/s, rounded up
    limiter.check("login", "5.6.7.8")  # other keys have their own bucket
    now[0] += 0.5
    limiter.check("login", "1.2.3.4")


def test_disabled_limits_never_refuse() -> None:
    limiter = RateLimiter(RateLimits(enabled=False, login=RateLimit(per_second=0.001, burst=1)))
    for _ in range(100):
        limiter.check("login", "k")
