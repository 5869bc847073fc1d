"""Password hashing with argon2id, off the event loop (hashing costs tens of milliseconds by design)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# "default" follows RFC 9106's second recommended option (64 MiB, 3 passes); "low" is for tests
# and benchmarks only, where hashing cost is not what is measured.
_COSTS = {  # (time cost, memory cost in KiB)
    "default": (3, 64 * 1024),
    "low": (1, 1024),
}


class Passwords:
    def __init__(self, cost: str = "default") -> None:
        time_cost, memory_cost = _COSTS[cost]
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=1)

    async def hash(self, password: str) -> str:
        return await asyncio.get_running_loop().run_in_executor(None, self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await asyncio.get_running_loop().run_in_executor(None, check)
