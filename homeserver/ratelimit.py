"""Rate limits: a token bucket per (action, key), answered with `M_LIMIT_EXCEEDED` and `retry_after_ms`.

spec: client-server-api "Rate limiting". Buckets live in memory; a restart resets them, as in Synapse.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from homeserver.config import RateLimit, RateLimits
from homeserver.errors import MatrixError

_MAX_BUCKETS = 100_000


class RateLimiter:
    def __init__(self, config: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()  # tokens, last time

    def _limit(self, action: str) -> RateLimit:
        limit = getattr(self.config, action, None)
        if not isinstance(limit, RateLimit):
            raise KeyError(f"no rate limit named {action!r}")
        return limit

    def check(self, action: str, key: str) -> None:
        """Take one token from the (action, key) bucket or raise 429 `M_LIMIT_EXCEEDED`."""
        if not self.config.enabled:
            return
        limit = self._limit(action)
        now = self.clock()
        tokens, last = self._buckets.pop((action, key), (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - last) * limit.per_second)
        if tokens < 1.0:
            self._buckets[(action, key)] = (tokens, now)
            retry_ms = int((1.0 - tokens) / limit.per_second * 1000) + 1
            raise MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests", retry_after_ms=retry_ms)
        self._buckets[(action, key)] = (tokens - 1.0, now)
        if len(self._buckets) > _MAX_BUCKETS:
            self._buckets.popitem(last=False)
