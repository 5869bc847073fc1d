"""What the server's caches hold: GET /_homeserver/admin/v1/caches (server admins only).

`python -m homeserver inspect` reads the store, not a running process; this endpoint shows the live
caches: for each its name, entries, capacity, estimated bytes, hits, misses and hit rate, with the
memory budget they share (`cache_mb`, storage/cache.py) and the process's resident memory.

`?allocations=N` adds the N biggest allocation sites when the server runs under tracemalloc
(`PYTHONTRACEMALLOC=1`, as `bench/soak.py --tracemalloc` starts it): a tool for finding what grows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from homeserver.api.http import Router, json_response, query_int
from homeserver.errors import MatrixError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

PATH = "/_homeserver/admin/v1/caches"
MAX_ALLOCATION_SITES = 200


def resident_bytes() -> int | None:
    """This process's resident set size (Linux /proc), or None elsewhere."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def allocation_sites(limit: int) -> list[dict[str, Any]] | None:
    """The biggest allocation sites by line, if tracemalloc is tracing (else None)."""
    import tracemalloc

    if not tracemalloc.is_tracing():
        return None
    stats = tracemalloc.take_snapshot().statistics("lineno")[:limit]
    return [{"site": str(s.traceback), "bytes": s.size, "blocks": s.count} for s in stats]


def register(router: Router, hs: HomeServer) -> None:
    async def caches(request: web.Request) -> web.Response:
        requester = hs.auth.requester(request)
        if not requester.is_admin:
            raise MatrixError(403, "M_FORBIDDEN", "You are not a server admin")
        report = hs.caches.report()
        out: dict[str, Any] = {
            "budget_mb": hs.caches.budget_mb,
            "rss_bytes": resident_bytes(),
            "estimated_bytes": sum(c["estimated_bytes"] for c in report),
            "caches": report,
        }
        limit = query_int(request, "allocations", 0) or 0
        if limit:
            out["allocations"] = allocation_sites(min(limit, MAX_ALLOCATION_SITES))
        return json_response(out)

    router.add("GET", PATH, caches)
