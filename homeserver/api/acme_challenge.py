"""Plain HTTP on `public.http_port`: the ACME http-01 challenge answers (RFC 8555 §8.3) and, for
everything else, a permanent redirect to the same path over https."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"


def challenge_app(challenges: Mapping[str, str], domain: str, https_port: int) -> web.Application:
    base = f"https://{domain}" + ("" if https_port == 443 else f":{https_port}")

    async def answer(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith(CHALLENGE_PREFIX):
            validation = challenges.get(path[len(CHALLENGE_PREFIX) :])
            if validation is None:
                raise web.HTTPNotFound(text="no such challenge\n")
            return web.Response(text=validation, content_type="application/octet-stream")
        raise web.HTTPPermanentRedirect(base + request.path_qs)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app
