"""An upstream account's picture (an OpenID Connect `picture` claim, a Mastodon avatar), fetched so
that an account made through single sign-on starts with it as its avatar.

The URL comes from the provider, so the fetch is careful: https only (loopback aside, for tests on
one machine), no redirects followed, a deadline on the whole exchange, a cap on the bytes and an
image type we serve. A picture that cannot be had never stops a sign-up: the answer is None.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import aiohttp

from homeserver.http_body import read_at_most

log = logging.getLogger(__name__)

MAX_PICTURE_BYTES = 2 * 1024 * 1024
PICTURE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
PICTURE_TIMEOUT_S = 15


def loopback_url(url: str) -> bool:
    return (urlsplit(url).hostname or "") in ("localhost", "127.0.0.1", "::1")


async def fetch_picture(provider_id: str, url: str) -> tuple[bytes, str] | None:
    """(bytes, content type) of the picture at `url`, or None (logged) when it cannot be had."""
    if urlsplit(url).scheme != "https" and not loopback_url(url):
        log.info("%s: no avatar: refusing a non-https URL %s", provider_id, url)
        return None
    timeout = aiohttp.ClientTimeout(total=PICTURE_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(url, headers={"Accept": ", ".join(PICTURE_TYPES)}, allow_redirects=False) as resp,
        ):
            body = await read_at_most(resp.content, MAX_PICTURE_BYTES)
            status, content_type = resp.status, resp.content_type
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        log.info("%s: no avatar: %s could not be reached (%s)", provider_id, url, type(e).__name__)
        return None
    if len(body) > MAX_PICTURE_BYTES:
        log.info("%s: no avatar: %s is larger than %d bytes", provider_id, url, MAX_PICTURE_BYTES)
        return None
    if status != 200 or content_type not in PICTURE_TYPES or not body:
        log.info("%s: no avatar (%s, %s)", provider_id, status, content_type)
        return None
    return body, content_type
